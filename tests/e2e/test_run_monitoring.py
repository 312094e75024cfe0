"""A run whose worker died never holds its source: killed with -9 mid-step, it is ended,
its pool slot freed, and its retry publishes within the bound dagster.yaml documents.

Dagster runs as in production: `dagster-webserver` and `dagster-daemon`, two processes
started as deploy/systemd starts them, on the shipped dagster.yaml (SQLite storage) and,
when DAGSTER_TEST_PG_URL names a database, on deploy/dagster-postgres.yaml. Only the
run-monitoring times are shorter, so that the test ends in a minute; the mechanism is the
production one. Calpendo answers slowly (the simulator's latency) while the sync to be
killed runs, so the kill lands inside its step.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session

from mwl_service.engine import make_engine
from mwl_service.schema import SourceSyncState, WorklistItem
from tests.fixtures.dagster_ui import (
    DAGSTER_PG_URL,
    ROOT,
    DagsterServices,
    DagsterUI,
    start_dagster_on_postgres,
)
from tests.fixtures.dicom import free_port
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER, config_without_automation, make_simulator

pytestmark = pytest.mark.external

# Production: dagster.yaml. Here: the same settings with shorter times.
MONITORING = {"max_runtime_seconds": 40, "poll_interval_seconds": 2,
              "free_slots_after_run_end_seconds": 2}
# Launching the retry (a new run worker process) and its sync on a loaded machine.
ONE_SYNC = 45.0
LATENCY = 5.0  # seconds per Calpendo request while the doomed sync runs


def bound(monitoring: dict) -> float:
    """dagster.yaml's promise: a sync publishes again at most this long after the crash."""
    return (monitoring["max_runtime_seconds"] + 2 * monitoring["poll_interval_seconds"]
            + monitoring["free_slots_after_run_end_seconds"] + ONE_SYNC)


def instance_file(directory: Path, shipped: str) -> Path:
    """The shipped instance file with MONITORING's shorter times for the settings it has
    (none added: without them nothing frees a dead run, and the test fails)."""
    config = yaml.safe_load((ROOT / shipped).read_text())
    monitoring = config["run_monitoring"]
    monitoring.update({k: v for k, v in MONITORING.items() if k in monitoring})
    path = directory / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Site:
    def __init__(self, sim, services: DagsterServices, db_url: str, source: str):
        self.sim, self.services, self.source = sim, services, source
        self.ui = DagsterUI(services.port)
        self.engine = make_engine(db_url)

    def retitle(self, patient: str) -> str:
        booking = next(b for b in self.sim.bookings()
                       if b["properties"]["status"] == "APPROVED")
        self.sim.update_booking(booking["id"], title=f"{patient} - Crash Test")
        return str(booking["id"])

    def published(self, booking_id: str) -> tuple[str, str] | None:
        """(patient ID of the booking, run that published last), once published."""
        with Session(self.engine) as s:
            state = s.get(SourceSyncState, self.source)
            row = s.query(WorklistItem).filter_by(source=self.source,
                                                  booking_id=booking_id).one_or_none()
            return (row.patient_id, state.last_run_id) if row and state else None

    def messages(self, run_id: str) -> str:
        return "\n".join(e.get("message") or "" for e in self.ui.events(run_id))

    def run_info(self, run_id: str) -> dict:
        query = """query R($id: ID!) { runOrError(runId: $id) {
            ... on Run { status parentRunId rootRunId } } }"""
        return self.ui.graphql(query, id=run_id)["runOrError"]


@pytest.fixture(scope="module", params=["sqlite"] + (["postgresql"] if DAGSTER_PG_URL else []))
def site(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run_monitoring")
    sim = make_simulator()
    # Schedule and sensor off: every run here is launched by the test or retries one.
    config_path, names = config_without_automation(sim.url, tmp)
    db_url = f"sqlite:///{tmp / 'worklist.db'}"
    env = {**os.environ, "CALPENDO_MWL_CONFIG": str(config_path), "WORKLIST_DB_URL": db_url,
           "CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}
    home, port = tmp / "dagster_home", free_port()
    if request.param == "postgresql":
        services = start_dagster_on_postgres(
            home, port, env, tmp, instance=instance_file(tmp, "deploy/dagster-postgres.yaml"))
    else:
        home.mkdir()
        instance_file(home, "dagster.yaml")
        services = DagsterServices(home, port, env, tmp)
    try:
        site = Site(sim, services, db_url, names[0])
        site.ui.wait_until_up(services.webserver, services.log(services.WEBSERVER))
        first = site.ui.launch(job=f"{site.source}_sync")  # the code location is warm
        assert site.ui.wait(first) == "SUCCESS", site.ui.failure_message(first)
        yield site
    finally:
        services.stop()
        sim.stop()
        site.engine.dispose()


def start_doomed_sync(site: Site) -> tuple[str, int]:
    """A sync whose step is waiting for slow Calpendo answers: (run id, worker pid)."""
    site.sim.latency = LATENCY
    run_id = site.ui.launch(job=f"{site.source}_sync")
    deadline = time.monotonic() + 120
    while (pid := site.ui.worker_pid(run_id)) is None:
        assert time.monotonic() < deadline, f"step never started: {site.ui.status(run_id)}"
        time.sleep(0.2)
    assert site.ui.status(run_id) == "STARTED"
    return run_id, pid


def wait_for_publish(site: Site, booking_id: str, patient: str, killed: str) -> tuple[float, str]:
    start, limit = time.monotonic(), bound(MONITORING)
    while time.monotonic() - start < limit + 60:  # past the bound: measure, then fail
        published = site.published(booking_id)
        if published and published[0] == patient:
            return time.monotonic() - start, published[1]
        time.sleep(0.5)
    raise AssertionError(f"nothing published; killed run {killed}: {site.run_info(killed)}")


def assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, f"worker {pid} survived"
        time.sleep(0.1)


def assert_retry_of(site: Site, publisher: str, killed: str) -> None:
    """The publisher is run_retries' re-execution of the killed run. On a loaded machine the
    first retry can itself outlive the test's runtime limit (waiting for the freed slot,
    then syncing) and be retried once more: the second retry's parent is the first."""
    info = site.run_info(publisher)
    assert info["rootRunId"] == killed, info
    if info["parentRunId"] != killed:
        first = site.run_info(info["parentRunId"])
        assert (first["parentRunId"], first["status"]) == (killed, "FAILURE"), first


def test_a_killed_worker_is_failed_and_retried_within_the_bound(site):
    booking = site.retitle("SUB9001")
    killed, pid = start_doomed_sync(site)
    os.kill(pid, signal.SIGKILL)
    site.sim.latency = 0.0
    elapsed, publisher = wait_for_publish(site, booking, "SUB9001", killed)

    assert site.run_info(killed)["status"] == "FAILURE"
    # Its code server saw the worker die: no need to wait for the runtime limit.
    assert "was terminated by signal 9 (SIGKILL)" in site.messages(killed)
    assert_retry_of(site, publisher, killed)
    assert elapsed <= bound(MONITORING), elapsed
    print(f"worker killed -> retry published in {elapsed:.1f} s (bound {bound(MONITORING):g} s)")


def test_a_run_whose_daemon_and_code_server_died_is_ended_by_run_monitoring(site):
    """A host crash or the OOM killer: the daemon's whole process group (its code server and
    the run's worker) gets SIGKILL; systemd starts the daemon again."""
    booking = site.retitle("SUB9002")
    killed, pid = start_doomed_sync(site)
    site.services.kill_daemon()
    assert_gone(pid)
    site.sim.latency = 0.0
    site.services.restart_daemon()
    elapsed, publisher = wait_for_publish(site, booking, "SUB9002", killed)

    assert site.run_info(killed)["status"] == "FAILURE"
    assert f"maximum runtime of {MONITORING['max_runtime_seconds']} seconds" in (
        site.messages(killed))
    assert_retry_of(site, publisher, killed)
    assert elapsed <= bound(MONITORING), elapsed
    print(f"daemon group killed -> retry published in {elapsed:.1f} s "
          f"(bound {bound(MONITORING):g} s)")
