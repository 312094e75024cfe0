"""Dagster for real: `dagster dev` on loopback with the project's dagster.yaml,
`NAME_sync` launched through the GraphQL API (dagster-graphql's client), its
blocking asset checks read back over GraphQL, the published rows over DICOM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mwl_service.schema import SCHEDULED, WorklistItem, make_engine
from tests.fixtures.dicom import free_port, run_findscu
from tests.fixtures.sim import ROOT

DAGSTER = str(Path(sys.executable).parent / "dagster")
CHECKS = {
    "worklist_rows": ["required_fields_present", "dicom_values_valid", "identifiers_unique"],
    "cancellation_reconciliation": ["mass_cancellation_guard"],
}
CHECK_QUERY = """
query Checks($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 10) {
    runId status evaluation { success }
  }
}"""


def start_dagster_dev(tmp_path: Path, port: int) -> subprocess.Popen:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    log = open(tmp_path / "dagster-dev.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_for_ui(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"dagster dev did not answer in {timeout}s:\n{log.read_text()[-4000:]}")


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {status} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sync_launched_over_graphql(calpendo_sim, pipeline_env, tmp_path, mwl_service_process):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_dagster_dev(tmp_path, port)
    try:
        wait_for_ui(proc, url, tmp_path / "dagster-dev.log")
        name = pipeline_env["source_names"][0]
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution(
            f"{name}_sync", repository_location_name="calpendo_assets",
            repository_name="__repository__",
        )
        assert wait_for_run(client, run_id) == DagsterRunStatus.SUCCESS

        for asset, check_names in CHECKS.items():
            for check in check_names:
                answer = requests.post(f"{url}/graphql", timeout=30, json={
                    "query": CHECK_QUERY,
                    "variables": {"key": {"path": [name, asset]}, "name": check},
                }).json()
                runs = {e["runId"]: e for e in answer["data"]["assetCheckExecutions"]}
                assert run_id in runs, f"{check} did not run in {run_id}: {answer}"
                assert runs[run_id]["status"] == "SUCCEEDED"
                assert runs[run_id]["evaluation"]["success"] is True
    finally:
        stop(proc)

    engine = make_engine(pipeline_env["WORKLIST_DB_URL"])
    with Session(engine) as s:
        scheduled = {
            r.accession_number: r for r in s.scalars(select(WorklistItem)) if r.step_status == SCHEDULED
        }
    engine.dispose()
    assert scheduled
    server = mwl_service_process(pipeline_env["WORKLIST_DB_URL"])
    answers = run_findscu(server.host, server.port, server.ae_title, [
        "AccessionNumber", "PatientID",
        "(0040,0100)[0].ScheduledProcedureStepStartDate",
        "(0040,0100)[0].ScheduledProcedureStepStartTime",
    ])
    got = {
        str(ds.AccessionNumber): (
            str(ds.PatientID),
            ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate,
            ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime,
        )
        for ds in answers
    }
    assert got == {
        acc: (r.patient_id, r.scheduled_start_date, r.scheduled_start_time)
        for acc, r in scheduled.items()
    }
