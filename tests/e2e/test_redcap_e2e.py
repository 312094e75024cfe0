"""redcap-sim -> NAME_sync -> worklist DB -> mwl-service -> DCMTK `findscu -W`.

Once headless, as an operator runs it (`dagster job execute`, a separate process, no
CALPENDO_* variables, the token only in the environment), once materialized in process
for Pylantir's own REDCap example; and `calpendo-mwl check` on a REDCap source. The
oracles are the simulator's store and Pylantir's identifier code restated on it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from calpendo_assets.config import load_config
from calpendo_assets.defs.assets import build_source_assets
from calpendo_assets.defs.resources import SOURCE_ACCESS_KEY, WorklistDatabase, source_access
from calpendo_sim.redcap import RowKey
from tests.fixtures.dicom import run_findscu
from tests.fixtures.redcap_sim import REDCAP_TOKEN, pylantir_identifiers
from tests.fixtures.sim import ROOT

pytestmark = pytest.mark.external

BIN = Path(sys.executable).parent
WRONG = "ABCDEF0123456789ABCDEF0123456789"


@pytest.fixture
def sim(redcap_sim_factory):
    return redcap_sim_factory(today=None)


def environment(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALPENDO_", "REDCAP_"))}
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return {**env, "DAGSTER_HOME": str(tmp_path / "dagster_home"), **extra}


def example_config(tmp_path, url: str) -> str:
    data = json.loads((ROOT / "config" / "redcap-example.json").read_text())
    data["data_sources"][0]["config"]["url"] = url
    path = tmp_path / "redcap.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_headless_sync_of_a_redcap_source_reaches_findscu(sim, tmp_path, sqlite_url, mwl_server):
    env = environment(tmp_path, CALPENDO_MWL_CONFIG=example_config(tmp_path, sim.url),
                      WORKLIST_DB_URL=sqlite_url, REDCAP_API_TOKEN=REDCAP_TOKEN)
    proc = subprocess.run([str(BIN / "dagster"), "job", "execute", "-m",
                           "calpendo_assets.definitions", "-j", "mri_redcap_sync"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert REDCAP_TOKEN not in proc.stdout + proc.stderr
    leaked = [p for p in (tmp_path / "dagster_home").rglob("*")
              if p.is_file() and REDCAP_TOKEN.encode() in p.read_bytes()]
    assert leaked == []

    server = mwl_server(sqlite_url)
    today = sim.today
    answers = run_findscu(server.host, server.port, server.ae_title, [
        "PatientName", "PatientID", "PatientWeight", "PatientBirthDate",
        "(0040,0100)[0].ScheduledStationAETitle=MRI3T",
        f"(0040,0100)[0].ScheduledProcedureStepStartDate={today:%Y%m%d}",
        "(0040,0100)[0].ScheduledProcedureStepStartTime", "(0040,0100)[0].Modality",
        "(0040,0100)[0].ScheduledProcedureStepDescription"])
    expected = {}
    for key, values in sim.visits():
        if values["mri_date"] == today.isoformat() and values["mri_status"] == "1":
            participant = sim.row(RowKey(key.record, sim.project.participant_event))
            expected[(participant["study_id"], values["mri_time"].replace(":", "") + "00")] = (
                participant, values)
    assert len(expected) >= 3  # the simulator books three showcase visits today
    got = {}
    for answer in answers:
        sps = answer.ScheduledProcedureStepSequence[0]
        assert (sps.Modality, sps.ScheduledStationAETitle) == ("MR", "MRI3T")
        got[(answer.PatientID, sps.ScheduledProcedureStepStartTime)] = (answer, sps)
    assert set(got) == set(expected)
    for key, (participant, values) in expected.items():
        answer, sps = got[key]
        assert str(answer.PatientName) == f"{participant['last_name']}^{participant['first_name']}"
        assert float(answer.PatientWeight) == pytest.approx(
            float(participant["mri_wt_lbs"]) * 0.45359237, abs=0.051)  # lb on REDCap, kg here
        assert answer.PatientBirthDate == participant["dob"].replace("-", "")
        assert sps.ScheduledProcedureStepDescription == values["mri_protocol"]


def test_pylantir_s_redcap_example_reaches_findscu_with_pylantir_s_identifiers(
        sim, tmp_path, sqlite_url, mwl_server, monkeypatch):
    monkeypatch.setenv("REDCAP_API_URL", sim.url)
    monkeypatch.setenv("REDCAP_API_TOKEN", REDCAP_TOKEN)
    main, _ = load_config(str(ROOT / "config" / "pylantir-redcap-example.json"))
    result = dg.materialize([build_source_assets(main, retry_policy=None)], resources={
        "worklist_db": WorklistDatabase(url=sqlite_url),
        SOURCE_ACCESS_KEY: source_access([main])})
    assert result.success
    server = mwl_server(sqlite_url)
    answers = run_findscu(server.host, server.port, server.ae_title, [
        "PatientName", "PatientID",
        "(0040,0100)[0].ScheduledProcedureStepStartDate",
        "(0040,0100)[0].ScheduledProcedureStepDescription",
        "(0040,0100)[0].ScheduledProtocolCodeSequence"])
    start = (sim.today - dt.timedelta(days=1)).isoformat()
    end = (sim.today + dt.timedelta(days=8)).isoformat()
    # The whole window is offered work (a query without a date: the last 7 days on).
    expected = sorted(pylantir_identifiers(sim, start, end).values())
    assert sorted((str(a.PatientID), str(a.PatientName)) for a in answers) == expected
    assert len(expected) > 5
    for answer in answers:
        sps = answer.ScheduledProcedureStepSequence[0]
        assert sps.ScheduledProcedureStepDescription == "BRAIN_MRI_3T"
        (code,) = sps.ScheduledProtocolCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator) == ("BRAIN_MRI_3T", "GEHC")


def check(tmp_path, sim, token: str) -> subprocess.CompletedProcess:
    env = environment(tmp_path, REDCAP_API_TOKEN=token)
    return subprocess.run([str(BIN / "calpendo-mwl"), "check", "--config",
                           example_config(tmp_path, sim.url), "--no-db"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_calpendo_mwl_check_reports_a_redcap_source(sim, tmp_path):
    good = check(tmp_path, sim, REDCAP_TOKEN)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "data source 'mri_redcap' (type redcap)" in good.stdout
    assert "  token: ok - REDCAP_API_TOKEN is set" in good.stdout
    assert (f"  source: ok - REDCap 15.7.6 at {sim.url}: project 1402, classic, with "
            "repeating instruments") in good.stdout
    assert "credentials" not in good.stdout  # no CALPENDO_* variables for this site
    refused = check(tmp_path, sim, WRONG)
    assert refused.returncode == 1
    assert (f"  source: FAIL - credentials refused: REDCap at {sim.url} refused the API "
            "token (HTTP 403)") in refused.stdout
    for proc in (good, refused):
        assert REDCAP_TOKEN not in proc.stdout + proc.stderr and WRONG not in proc.stdout + proc.stderr
    missing = check(tmp_path, sim, "")
    assert "  token: FAIL - environment variable REDCAP_API_TOKEN is not set" in missing.stdout
