"""mwl-api with the real DICOM service and as its own process: a manual item made over
HTTP is answered by DCMTK findscu at once and gone from it once discontinued; the
`mwl-api` console script serves, logs no names, stops on SIGTERM and refuses an
out-of-date schema."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from alembic import command
from sqlalchemy import create_engine

from mwl_service import migrate, users
from mwl_service.engine import make_engine
from tests.fixtures.api import PASSWORD, api_user
from tests.fixtures.dicom import HOST, SITE_TZ, free_port, run_findscu, sps, with_keys

pytestmark = [pytest.mark.external, pytest.mark.postgres]


def test_a_manual_item_is_found_by_findscu_within_a_second_then_discontinued(
    db_url, mwl_server, api_server
):
    mwl = mwl_server(db_url)
    api = api_server(db_url)
    api_user(api.engine, "tech", "write")
    today = dt.datetime.now(ZoneInfo(SITE_TZ)).date()
    created = api.call("POST", "/api/v1/worklist", user="tech", json={
        "patient_id": "WALKIN42", "patient_name": "Walker, Ada",
        "scheduled_start": f"{today}T15:45", "scheduled_station_ae_title": "MRI3T",
        "modality": "MR", "study_description": "Walk-in head"})
    made = time.monotonic()
    assert created.status_code == 201
    item = created.json()
    found = run_findscu(mwl.host, mwl.port, mwl.ae_title, with_keys("PatientID=WALKIN42"))
    assert time.monotonic() - made < 1.0 + 0.5  # findscu's own start-up included
    (answer,) = found
    assert answer.PatientName == "Walker^Ada" and answer.AccessionNumber == item[
        "accession_number"]
    step = answer.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "MRI3T" and step.ScheduledProcedureStepStartTime == "154500"
    assert step.ScheduledProcedureStepID == item["scheduled_procedure_step_id"]

    path = f"/api/v1/worklist/{item['accession_number']}"
    assert api.call("DELETE", path, user="tech", params={"reason": "left"}).status_code == 200
    assert run_findscu(mwl.host, mwl.port, mwl.ae_title, with_keys("PatientID=WALKIN42")) == []
    asked = run_findscu(mwl.host, mwl.port, mwl.ae_title, with_keys(
        "PatientID=WALKIN42", sps("ScheduledProcedureStepStatus", "DISCONTINUED")))
    assert [a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for a in asked] == [
        "DISCONTINUED"]


def _mwl_api(*args: str, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("mwl-api")
    env = {k: v for k, v in os.environ.items() if k not in ("WORKLIST_DB_URL",
                                                             "CALPENDO_MWL_CONFIG")}
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([str(exe), *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mwl-api exited with {proc.returncode}"
        try:
            if requests.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail("mwl-api did not answer within 60 s")


def test_the_console_script_serves_logs_no_names_and_stops_on_sigterm(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    users.add_user(engine, "reader", "read", PASSWORD)
    engine.dispose()
    port = free_port()
    log = tmp_path / "mwl-api.log"
    proc = _mwl_api("--db-url", sqlite_url, "--host", HOST, "--port", str(port),
                    "--timezone", SITE_TZ, log=log)
    try:
        url = f"http://{HOST}:{port}"
        _wait_up(url, proc)
        token = requests.post(f"{url}/api/v1/login", timeout=30,
                              json={"username": "reader", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        listed = requests.get(f"{url}/api/v1/worklist?patient_id=SECRET-ID-77", timeout=30,
                              headers=headers)
        assert listed.status_code == 200 and listed.json() == {"items": [], "total": 0}
        assert requests.get(f"{url}/docs", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert '"GET /api/v1/worklist" 200' in output and '"POST /api/v1/login" 200' in output
    assert "SECRET-ID-77" not in output and PASSWORD not in output


def test_the_console_script_refuses_an_out_of_date_schema(sqlite_url, tmp_path):
    make_engine(sqlite_url).dispose()
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        command.downgrade(migrate._config(conn), "0002")
        conn.commit()
    engine.dispose()
    log = tmp_path / "mwl-api.log"
    proc = _mwl_api("--db-url", sqlite_url, "--port", str(free_port()), "--timezone", "UTC",
                    log=log)
    assert proc.wait(timeout=60) == 1
    output = log.read_text()
    assert "Cannot start mwl-api" in output and "calpendo-mwl db upgrade" in output
    assert "revision 0002" in output


def test_help_documents_every_option():
    exe = Path(sys.executable).with_name("mwl-api")
    text = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    for option in ("--host", "--port", "--db-url", "--timezone", "--tls-cert", "--tls-key",
                   "--token-ttl", "--cors-origin", "--forwarded-allow-ips", "--log-level",
                   "calpendo-mwl user add",
                   "WORKLIST_DB_URL", "CALPENDO_MWL_CONFIG", "413", "429"):
        assert option in text, option


def _refused_logins(url: str, forwarded_for: list[str]) -> list[int]:
    return [requests.post(f"{url}/api/v1/login", timeout=30,
                          headers={"X-Forwarded-For": address},
                          json={"username": "nobody", "password": "guess"}).status_code
            for address in forwarded_for]


@pytest.mark.parametrize("proxies", ["", "127.0.0.1"])
def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(sqlite_url, tmp_path,
                                                                    proxies):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: a client on the
    host could then send each guess under a new address and never meet the login limit."""
    make_engine(sqlite_url).dispose()
    port = free_port()
    proc = _mwl_api("--db-url", sqlite_url, "--host", HOST, "--port", str(port),
                    "--timezone", SITE_TZ, "--forwarded-allow-ips", proxies,
                    log=tmp_path / "mwl-api.log")
    try:
        url = f"http://{HOST}:{port}"
        _wait_up(url, proc)
        statuses = _refused_logins(url, [f"203.0.113.{n}" for n in range(1, 12)])
        if proxies:  # behind the proxy each client address has its own count
            assert statuses == [401] * 11
            assert _refused_logins(url, ["203.0.113.1"] * 10)[-1] == 429
        else:  # the header is ignored: all eleven come from 127.0.0.1
            assert statuses == [401] * 10 + [429]
    finally:
        proc.kill()
        proc.wait(timeout=20)
