"""The seed's (Pylantir's) documented example config loads unchanged and syncs as meant.

`config/pylantir-example.json` is the example verbatim; the tests only point its
base_url at this test's simulator. The example maps fields the sync derives itself
(start date/time, duration, step status) and a resource name to modality.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from calpendo_assets import sync
from calpendo_assets.config import load_config
from calpendo_assets.config.load import forget_logged_notes
from calpendo_assets.core.errors import ConfigError
from mwl_service.schema import DISCONTINUED, SCHEDULED, WorklistItem
from mwl_service.engine import make_engine
from tests.fixtures.dicom import run_findscu
from tests.fixtures.sim import ROOT, SIM_PASSWORD, SIM_USER

EXAMPLE = ROOT / "config" / "pylantir-example.json"
EDMONTON = ZoneInfo("America/Edmonton")
# 2026-03-08 is the spring-forward day in Edmonton: 02:00 MST -> 03:00 MDT.
DST_DAY = dt.date(2026, 3, 8)
CREDENTIALS = {"CALPENDO_USERNAME": SIM_USER, "CALPENDO_PASSWORD": SIM_PASSWORD}


def example_for(url: str, directory: Path) -> Path:
    data = json.loads(EXAMPLE.read_text())
    data["data_sources"][0]["config"]["base_url"] = url
    path = directory / "calpendo.json"
    path.write_text(json.dumps(data))
    return path


def test_example_loads_unchanged_with_one_warning_per_meaning(caplog):
    forget_logged_notes()  # another test may have loaded the example in this process
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.config"):
        (source,) = load_config(str(EXAMPLE), env={})
        # Dagster loads the code location several times: the notes are logged once.
        load_config(str(EXAMPLE), env={})
    assert source.name == "calpendo_3t"
    assert source.settings.base_url == "https://sfc-calgary.calpendo.com"
    assert source.settings.scheduled_statuses() == ("APPROVED",)
    interval = source.operation_interval
    assert (interval.start_time, interval.end_time) == ((6, 0), (20, 0))
    # What the derived fields mean: read from the named paths, not copied.
    assert (source.mapping.status_path, source.mapping.duration_path) == ("status", "durationInMinutes")
    mapped = source.mapping.mapped_fields()
    assert "scheduled_start_date" not in mapped and "scheduled_start_time" not in mapped
    assert set(mapped) == {"patient_id", "patient_name", "study_description", "modality"}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    derived, lookback = warnings
    for key in (
        "field_mapping.formattedName._extract.scheduled_start_date",
        "field_mapping.formattedName._extract.scheduled_start_time",
        "field_mapping.status",
        "field_mapping.durationInMinutes",
    ):
        assert key in derived
    assert "this mapping is not used" in derived and "read from 'status'" in derived
    assert "config.lookback_multiplier is accepted and not used" in lookback
    assert str(EXAMPLE) in derived and "data source 'calpendo_3t'" in lookback


def test_a_changed_file_logs_its_notes_again(tmp_path, caplog):
    path = example_for("http://127.0.0.1:9", tmp_path)
    with caplog.at_level(logging.WARNING, logger="calpendo_assets.config"):
        load_config(str(path), env={})
        load_config(str(path), env={})
        assert len(caplog.records) == 2
        data = json.loads(path.read_text())
        data["data_sources"][0]["config"]["lookback_multiplier"] = 3
        path.write_text(json.dumps(data))
        load_config(str(path), env={})
    assert len(caplog.records) == 4


def test_a_genuinely_unknown_key_is_still_an_error(tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data["data_sources"][0]["config"]["lookback_multiplyer"] = 2
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    message = str(info.value)
    assert message.startswith(
        f"config file '{path}': data source 'calpendo_3t': config.lookback_multiplyer: unknown key"
    )
    assert "lookback_multiplier" in message  # the allowed keys are listed


@pytest.fixture
def dst_sim(calpendo_sim_factory):
    sim = calpendo_sim_factory(bookings=0, today=DST_DAY)
    on = dict(resource="3T Diagnostic", project="BRISKP")
    ids = {
        "before": sim.add_booking("SUB0101 - Jane Doe", start=dt.datetime(2026, 3, 7, 10), minutes=45, **on),
        "after": sim.add_booking("SUB0102 - Jürgen Müller", start=dt.datetime(2026, 3, 8, 10), minutes=90, **on),
        "cancelled": sim.add_booking("SUB0103 - Ann Lee", start=dt.datetime(2026, 3, 9, 8, 30), **on),
        "other_resource": sim.add_booking("SUB0104 - Bo Li", start=dt.datetime(2026, 3, 9, 9), resource="3T MRI"),
        "requested": sim.add_booking("SUB0105 - Cy Ng", start=dt.datetime(2026, 3, 9, 11), status="REQUESTED", **on),
    }
    sim.cancel_booking(ids["cancelled"])
    return sim, {k: str(v) for k, v in ids.items()}


def test_example_syncs_the_rows_its_author_meant(dst_sim, tmp_path, caplog):
    sim, ids = dst_sim
    (source,) = load_config(str(example_for(sim.url, tmp_path)), env={})
    engine = make_engine(f"sqlite:///{tmp_path / 'worklist.db'}")
    now = dt.datetime(2026, 3, 8, 12, tzinfo=EDMONTON)
    fetched, result, published = sync.run_sync(source, engine, env=CREDENTIALS, now=now)
    engine_rows = _rows(engine)
    engine.dispose()

    assert fetched.fetch.complete
    assert set(engine_rows) == {ids["before"], ids["after"], ids["cancelled"]}
    before, after = engine_rows[ids["before"]], engine_rows[ids["after"]]
    assert (before.patient_id, before.patient_name) == ("SUB0101", "Doe^Jane")
    assert (after.patient_id, after.patient_name) == ("SUB0102", "Müller^Jürgen")
    assert before.study_description == after.study_description == "BRISKP"
    # A resource name is no modality: default_modality, said once.
    assert before.modality == after.modality == "MR"
    assert [w for w in result.warnings if "modality" in w] == [
        "field_mapping.resource.formattedName -> modality: 3 values are resource names or not "
        "DICOM modalities; they were mapped through config.resource_modality_mapping, else "
        "config.default_modality 'MR'"
    ]
    # Start and duration from the booking, DST-correct on either side of the change.
    assert (before.scheduled_start_date, before.scheduled_start_time) == ("20260307", "100000")
    assert before.scheduled_start_utc == dt.datetime(2026, 3, 7, 17, tzinfo=dt.timezone.utc)
    assert (after.scheduled_start_date, after.scheduled_start_time) == ("20260308", "100000")
    assert after.scheduled_start_utc == dt.datetime(2026, 3, 8, 16, tzinfo=dt.timezone.utc)
    assert (before.duration_minutes, after.duration_minutes) == (45, 90)
    # The status mapping: Approved -> SCHEDULED, cancelled -> DISCONTINUED.
    assert before.step_status == after.step_status == SCHEDULED
    assert engine_rows[ids["cancelled"]].step_status == DISCONTINUED
    assert published.inserted == 3


def _rows(engine) -> dict[str, WorklistItem]:
    with Session(engine) as s:
        return {r.booking_id: r for r in s.scalars(select(WorklistItem))}


DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.mark.external
def test_example_headless_job_serves_findscu(calpendo_sim_factory, tmp_path, sqlite_url, mwl_server):
    """The acceptance path: `dagster job execute ... -j calpendo_3t_sync`, then findscu."""
    sim = calpendo_sim_factory(bookings=0)
    today = sim.today
    sim.add_booking("SUB0201 - Jane Doe", resource="3T Diagnostic",
                    start=dt.datetime.combine(today, dt.time(14, 30)), minutes=60)
    env = {
        **os.environ, **CREDENTIALS,
        "CALPENDO_MWL_CONFIG": str(example_for(sim.url, tmp_path)),
        "WORKLIST_DB_URL": sqlite_url,
        "DAGSTER_HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [DAGSTER, "job", "execute", "-m", "calpendo_assets.definitions", "-j", "calpendo_3t_sync"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    server = mwl_server(sqlite_url)
    (answer,) = run_findscu(
        server.host, server.port, server.ae_title,
        ["PatientName", "PatientID", "StudyDescription",
         f"(0040,0100)[0].ScheduledProcedureStepStartDate={today:%Y%m%d}",
         "(0040,0100)[0].ScheduledProcedureStepStartTime", "(0040,0100)[0].Modality",
         "(0040,0100)[0].ScheduledStationAETitle"],
    )
    sps = answer.ScheduledProcedureStepSequence[0]
    assert (answer.PatientID, str(answer.PatientName)) == ("SUB0201", "Doe^Jane")
    assert (sps.ScheduledProcedureStepStartTime, sps.Modality) == ("143000", "MR")
    assert sps.ScheduledStationAETitle == "3T_DIAGNOSTIC"
    assert answer.StudyDescription == "BRISKP"
