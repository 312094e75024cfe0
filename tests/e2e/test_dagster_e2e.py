"""Every action the Dagster UI offers, through a real Dagster on loopback.

The module runs against `dagster dev` (the project's dagster.yaml and workspace.yaml)
and, when DAGSTER_TEST_PG_URL names a PostgreSQL database, once more against the
production set-up: deploy/dagster-postgres.yaml, `dagster-webserver` and
`dagster-daemon` as two processes started as deploy/systemd starts them. One Dagster
and one simulator serve each round. Runs are launched with the GraphQL calls the UI makes
(`launchPipelineExecution` with an asset / asset-check selection on __ASSET_JOB,
the launchpad's job launch, `launchPipelineReexecution`), and the published rows
are read back from the worklist database and over DICOM. The schedule and sensor
are kept out of the way (the operation interval excludes the test's hours), so
every run here is one the test launched.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mwl_service.engine import make_engine
from mwl_service.schema import (
    DISCONTINUED,
    SCHEDULED,
    SourceSyncState,
    WorklistHistory,
    WorklistItem,
)
from tests.fixtures.dagster_ui import (
    DAGSTER_PG_URL,
    DagsterUI,
    dagster_pg_text,
    start_dagster_dev,
    start_dagster_on_postgres,
    stop_process_group,
)
from tests.fixtures.dicom import free_port, run_findscu
from tests.fixtures.sim import SIM_PASSWORD, SIM_USER, config_without_automation, make_simulator

pytestmark = pytest.mark.external

ASSETS = ["raw_bookings", "booking_details", "worklist_rows", "cancellation_reconciliation",
          "worklist"]
CHECKS = {
    "required_fields_present": "worklist_rows",
    "dicom_values_valid": "worklist_rows",
    "identifiers_unique": "worklist_rows",
    "mass_cancellation_guard": "cancellation_reconciliation",
}
_titles = itertools.count(7001)
STEP_ENDS = ("ExecutionStepSuccessEvent", "ExecutionStepFailureEvent")
DEV, SERVICES = "dagster dev", "webserver and daemon on PostgreSQL"
INSTANCES = [DEV] + ([SERVICES] if DAGSTER_PG_URL else [])


class Env:
    def __init__(self, sim, ui: DagsterUI, db_url: str, home, source: str, tz: str):
        self.sim, self.ui, self.db_url, self.home = sim, ui, db_url, home
        self.stop_dagster = lambda: None
        self.dagster_pg_url = ""  # Dagster's storage, when on PostgreSQL
        self.source, self.tz = source, ZoneInfo(tz)
        self.engine = make_engine(db_url)

    def key(self, name: str) -> list[str]:
        return [self.source, name]

    def check(self, name: str) -> tuple[list[str], str]:
        return self.key(CHECKS[name]), name

    def everything(self) -> dict:
        """What the UI's "Materialize all" sends: every asset of the group and its checks."""
        return {"assets": [self.key(a) for a in ASSETS],
                "checks": [self.check(c) for c in CHECKS]}

    def rows(self) -> dict[str, WorklistItem]:
        with Session(self.engine) as s:
            return {r.booking_id: r for r in s.scalars(select(WorklistItem))}

    def snapshot(self) -> tuple:
        with Session(self.engine) as s:
            items = [(r.booking_id, r.patient_id, r.step_status, r.updated_at)
                     for r in s.scalars(select(WorklistItem).order_by(WorklistItem.id))]
            history = s.query(WorklistHistory).count()
        return items, history

    def edit(self) -> tuple[str, str, str]:
        """Retitle and move an approved booking today: (booking id, patient id, HHMMSS)."""
        today = dt.datetime.now(self.tz).date()
        booking = next(
            b for b in self.sim.bookings()
            if b["properties"]["status"] == "APPROVED" and b["properties"]["resource"]["name"] == "3T MRI"
        )
        n = next(_titles)
        patient = f"SUB{n}"
        minute = n % 60
        self.sim.update_booking(booking["id"], title=f"{patient} - Edit Person{n}")
        self.sim.move_booking(booking["id"], dt.datetime.combine(today, dt.time(6, minute)))
        return str(booking["id"]), patient, f"06{minute:02d}00"

    def run(self, **launch) -> str:
        run_id = self.ui.launch(**launch)
        status = self.ui.wait(run_id)
        assert status == "SUCCESS", self.ui.failure_message(run_id)
        return run_id


@pytest.fixture(scope="module", params=INSTANCES)
def env(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dagster_ui")
    sim = make_simulator()
    config_path, names = config_without_automation(sim.url, tmp)
    tz = json.loads(config_path.read_text())["data_sources"][0]["config"]["timezone"]
    db_url = f"sqlite:///{tmp / 'worklist.db'}"
    environment = {**os.environ, "CALPENDO_MWL_CONFIG": str(config_path),
                   "WORKLIST_DB_URL": db_url, "CALPENDO_USERNAME": SIM_USER,
                   "CALPENDO_PASSWORD": SIM_PASSWORD}
    port, home = free_port(), tmp / "dagster_home"
    ui = DagsterUI(port)
    if request.param == DEV:
        log = tmp / "dagster-dev.log"
        proc = start_dagster_dev(home, port, environment, log)
        stop = lambda: stop_process_group(proc)  # noqa: E731
    else:
        services = start_dagster_on_postgres(home, port, environment, tmp)
        proc, log, stop = services.webserver, services.log(services.WEBSERVER), services.stop
    try:
        ui.wait_until_up(proc, log)
        environment = Env(sim, ui, db_url, home, names[0], tz)
        environment.stop_dagster = stop
        if request.param == SERVICES:
            environment.dagster_pg_url = DAGSTER_PG_URL
        yield environment
    finally:
        stop()
        sim.stop()


def test_every_ui_action_succeeds_and_publishes_the_latest_state(env, mwl_service_process):
    # Actions that publish: each edit in Calpendo must be in the worklist after it.
    publishing = {
        "worklist alone": {"assets": [env.key("worklist")]},
        "a subset": {"assets": [env.key("worklist_rows"), env.key("worklist")]},
        "Materialize all": env.everything(),
        "launchpad": {"job": f"{env.source}_sync"},
    }
    for label, launch in publishing.items():
        bid, patient, start = env.edit()
        run_id = env.run(**launch)
        row = env.rows()[bid]
        assert (row.patient_id, row.scheduled_start_time, row.step_status) == (
            patient, start, SCHEDULED), label
        assert f"{env.source}/worklist" in env.ui.materialized(run_id), label

    # A cancellation in Calpendo reaches the worklist through the UI too.
    cancelled = env.edit()[0]
    env.sim.cancel_booking(int(cancelled), reason="participant ill")
    env.run(**env.everything())
    assert env.rows()[cancelled].step_status == DISCONTINUED

    # Actions that do not publish: launched at once (the pool runs them one by one),
    # each succeeds and reports exactly what was selected.
    before = env.snapshot()
    alone = {f"asset {a}": ({"assets": [env.key(a)]}, {f"{env.source}/{a}"}, {})
             for a in ASSETS if a != "worklist"}
    alone |= {f"check {c}": ({"assets": [], "checks": [env.check(c)]}, set(), {c: True})
              for c in CHECKS}
    launched = {label: env.ui.launch(**launch) for label, (launch, _, _) in alone.items()}
    for label, run_id in launched.items():
        _, assets, checks = alone[label]
        assert env.ui.wait(run_id) == "SUCCESS", (label, env.ui.failure_message(run_id))
        assert env.ui.materialized(run_id) == assets, label
        assert env.ui.check_results(run_id) == checks, label
    assert env.snapshot() == before

    # The last published state is what a scanner sees over DICOM.
    scheduled = {r.accession_number: r.patient_id for r in env.rows().values()
                 if r.step_status == SCHEDULED}
    server = mwl_service_process(env.db_url)
    answers = run_findscu(server.host, server.port, server.ae_title,
                          ["AccessionNumber", "PatientID"])
    assert {str(ds.AccessionNumber): str(ds.PatientID) for ds in answers} == scheduled


def test_reexecution_of_a_failed_run_from_failure_and_all_steps(env):
    env.sim.fail_requests(status=400, count=None)
    try:
        failed = env.ui.launch(**env.everything())
        assert env.ui.wait(failed) == "FAILURE"
    finally:
        env.sim.clear_failures()
    message = env.ui.failure_message(failed)
    assert "fetching the booking window" in message and "Nothing was published" in message

    for strategy in ("FROM_FAILURE", "ALL_STEPS"):
        bid, patient, start = env.edit()
        run_id = env.ui.reexecute(failed, strategy)
        assert env.ui.wait(run_id) == "SUCCESS", env.ui.failure_message(run_id)
        assert env.ui.materialized(run_id) == {f"{env.source}/{a}" for a in ASSETS}
        assert env.ui.check_results(run_id) == dict.fromkeys(CHECKS, True)
        row = env.rows()[bid]
        assert (row.patient_id, row.scheduled_start_time) == (patient, start), strategy


def test_concurrent_launches_of_one_source_never_publish_at_once(env):
    env.edit()
    job = f"{env.source}_sync"
    runs = [env.ui.launch(job=job), env.ui.launch(job=job), env.ui.launch(**env.everything())]
    for run_id in runs:
        assert env.ui.wait(run_id) == "SUCCESS", env.ui.failure_message(run_id)
    spans = sorted((s for r in runs for s in env.ui.step_spans(r)), key=lambda s: s.start)
    assert [s.step_key for s in spans] == [f"{env.source}__sync"] * 3
    # Dagster's own step start/end events: each publish ends before the next starts.
    for earlier, later in zip(spans, spans[1:]):
        assert earlier.end <= later.start, (earlier, later)
    with Session(env.engine) as s:
        state = s.get(SourceSyncState, env.source)
    assert state.last_run_id == spans[-1].run_id


def test_a_second_sync_waits_in_the_queue_while_the_first_runs(env):
    """What the README says: a second launch of a source stays QUEUED while the first's
    step holds the pool (not a started run whose step waits for the pool)."""
    job = f"{env.source}_sync"
    env.sim.latency = 2.0  # the first step takes a few seconds
    try:
        first = env.ui.launch(job=job)
        deadline = time.monotonic() + 120
        while env.ui.worker_pid(first) is None:
            assert time.monotonic() < deadline, env.ui.status(first)
            time.sleep(0.2)
        second = env.ui.launch(job=job)
        seen = []
        while True:
            status = env.ui.status(second)  # read first: the first's step still ran then
            if any(e["__typename"] in STEP_ENDS for e in env.ui.events(first)):
                break
            seen.append(status)
            time.sleep(0.25)
    finally:
        env.sim.latency = 0.0
    assert seen and set(seen) == {"QUEUED"}, seen
    assert env.ui.wait(first) == "SUCCESS" and env.ui.wait(second) == "SUCCESS"


def test_a_failed_check_is_never_published_by_a_later_partial_run(env):
    scheduled = [b for b, r in env.rows().items() if r.step_status == SCHEDULED]
    assert len(scheduled) >= 5
    for bid in scheduled:  # Calpendo "loses" every booking: the guard must trip
        env.sim.delete_booking(int(bid))
    before = env.snapshot()
    failed = env.ui.launch(**env.everything())
    assert env.ui.wait(failed) == "FAILURE"
    assert env.ui.check_results(failed)["mass_cancellation_guard"] is False
    assert f"{env.source}/worklist" not in env.ui.materialized(failed)
    # The UI's Materialize on NAME/worklist alone, right after: still refused.
    alone = env.ui.launch(assets=[env.key("worklist")])
    assert env.ui.wait(alone) == "FAILURE"
    message = env.ui.failure_message(alone)
    assert "mass_cancellation_guard" in message and "Nothing was published" in message
    # Re-executing the failed run refuses the same way.
    again = env.ui.reexecute(failed, "FROM_FAILURE")
    assert env.ui.wait(again) == "FAILURE"
    assert env.snapshot() == before


def test_dagster_home_holds_no_participant_names(env):
    """Last in the module: every run above wrote its events and logs by now."""
    def personal(text: str) -> bool:  # a name, not an ID (IDs may be shown)
        return len(text) >= 4 and not any(ch.isdigit() for ch in text)

    titles = [b["properties"]["title"] for b in env.sim.bookings()]
    names = {t.partition(" - ")[2] for t in titles} | {t for t in titles if " " in t}
    names |= {r.patient_name for r in env.rows().values()}
    names = {n for n in names if personal(n.partition(" - ")[2] or n)}
    assert len(names) >= 10
    # Stopped first: a running instance checkpoints and deletes SQLite -wal files while
    # they are read; stopped, every event is in files that stay put.
    env.stop_dagster()
    stored = {str(p.relative_to(env.home)): p.read_bytes()
              for p in env.home.rglob("*") if p.is_file()}
    if env.dagster_pg_url:  # runs, events and ticks are in the database, not in files
        stored["Dagster's PostgreSQL database"] = dagster_pg_text(env.dagster_pg_url).encode()
    assert stored
    leaked = {}
    for where, data in stored.items():
        found = sorted(n for n in names if n.encode() in data)
        if found:
            leaked[where] = found[:3]
    assert leaked == {}
