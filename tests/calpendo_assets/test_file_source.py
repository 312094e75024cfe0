"""The `file` source type: manual entries (phantom QA, walk-ins) through the same pipeline."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from calpendo_assets import sync
from calpendo_assets.config import parse_config
from calpendo_assets.definitions import build_definitions
from calpendo_assets.rows.model import VANISHED_REASON
from calpendo_assets.sources.registry import plugin_for
from calpendo_assets.core.errors import BadAnswerError, ConfigError, SourceUnavailableError
from mwl_service.engine import make_engine
from mwl_service.excluded import list_excluded
from mwl_service.schema import DISCONTINUED, SCHEDULED, WorklistItem
from tests.fixtures.dagster_instance import shared_instance
from tests.fixtures.dicom import run_findscu

EDMONTON = ZoneInfo("America/Edmonton")
NOW = dt.datetime(2026, 3, 10, 8, tzinfo=EDMONTON)
HEADER = "id,start,minutes,resource,title,project.name\n"
ROWS = [
    "qa-1,2026-03-10 07:30,20,Prisma,QA0001 - Phantom,QA\n",
    "walkin-7,2026-03-10 13:15,45,Prisma,SUB0042 - Jane Doe,BRISKP\n",
    "later,2026-03-30 09:00,30,Prisma,SUB0043,BRISKP\n",  # outside the window
]


def file_source(path, **config):
    raw = {
        "name": "manual_entries",
        "type": "file",
        "config": {
            "path": str(path),
            "resource_modality_mapping": {"Prisma": "MR"},
            "resource_ae_title_mapping": {"Prisma": ["PRISMA1", "PRISMA2"]},
            **config,
        },
    }
    (source,) = parse_config({"data_sources": [raw]}, env={})
    return source


def rows_of(engine) -> dict[str, WorklistItem]:
    with Session(engine) as s:
        return {r.booking_id: r for r in s.scalars(select(WorklistItem))}


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'worklist.db'}")
    yield eng
    eng.dispose()


def test_csv_entries_publish_and_a_removed_row_is_cancelled(tmp_path, engine):
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + "".join(ROWS))
    source = file_source(path)
    fetched, result, published = sync.run_sync(source, engine, env={}, now=NOW)
    assert fetched.fetch.complete and published.inserted == 2
    rows = rows_of(engine)
    assert set(rows) == {"qa-1", "walkin-7"}
    walk_in = rows["walkin-7"]
    assert (walk_in.patient_id, walk_in.patient_name) == ("SUB0042", "Doe^Jane")
    assert (walk_in.scheduled_start_date, walk_in.scheduled_start_time) == ("20260310", "131500")
    assert walk_in.scheduled_start_utc == dt.datetime(2026, 3, 10, 19, 15, tzinfo=dt.timezone.utc)
    assert walk_in.duration_minutes == 45 and walk_in.modality == "MR"
    assert walk_in.study_description == "BRISKP" and walk_in.step_status == SCHEDULED
    # A resource with two consoles: one DICOM multi-value.
    assert walk_in.scheduled_station_ae_title == "PRISMA1\\PRISMA2"

    path.write_text(HEADER + ROWS[1] + ROWS[2])  # the QA entry was deleted
    _, _, published = sync.run_sync(source, engine, env={}, now=NOW)
    rows = rows_of(engine)
    assert published.cancelled == 1
    assert rows["qa-1"].step_status == DISCONTINUED
    assert rows["qa-1"].discontinued_reason == VANISHED_REASON
    assert rows["walkin-7"].step_status == SCHEDULED


def test_json_entries_and_a_cancelled_status(tmp_path, engine):
    path = tmp_path / "entries.json"
    entries = [
        {"id": 1, "start": "2026-03-10 09:00", "minutes": 30, "resource": "Prisma",
         "title": "SUB0050 - Ann Lee", "project": {"name": "ADNI4"}},
        {"id": "2", "start": "2026-03-10 10:00", "resource": "Prisma", "title": "SUB0051",
         "status": "CANCELLED", "cancellationReason": "no show"},
    ]
    path.write_text(json.dumps(entries))
    sync.run_sync(file_source(path), engine, env={}, now=NOW)
    rows = rows_of(engine)
    assert rows["1"].study_description == "ADNI4" and rows["1"].step_status == SCHEDULED
    assert rows["2"].step_status == DISCONTINUED
    assert rows["2"].discontinued_reason == "cancelled in Calpendo: no show"


@pytest.mark.parametrize(
    "body, where",
    [
        (HEADER + ",2026-03-10 09:00,30,Prisma,SUB0060 - Secret Name,QA\n", "row 2: id is missing"),
        (HEADER + "x,10/03/2026 9am,30,Prisma,SUB0061 - Secret Name,QA\n", "row 2: start is not YYYY-MM-DD HH:MM"),
        (HEADER + ROWS[0] + ROWS[0], "row 3: id repeats entry 2"),
    ],
)
def test_a_bad_row_fails_the_fetch_naming_row_not_value(tmp_path, engine, body, where):
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + ROWS[1])
    source = file_source(path)
    sync.run_sync(source, engine, env={}, now=NOW)
    path.write_text(body)
    with pytest.raises(BadAnswerError) as info:
        sync.run_sync(source, engine, env={}, now=NOW)
    assert str(info.value) == f"entries file '{path}', {where}"
    assert "Secret" not in str(info.value) and info.value.transient is False
    assert rows_of(engine)["walkin-7"].step_status == SCHEDULED  # nothing cancelled


def test_a_missing_file_fails_the_fetch(tmp_path, engine):
    source = file_source(tmp_path / "nope.csv")
    with pytest.raises(SourceUnavailableError, match="not found"):
        sync.fetch(source, now=NOW)


def test_path_is_relative_to_the_config_file_and_must_be_csv_or_json(tmp_path):
    raw = {"name": "manual_entries", "type": "file", "config": {"path": "entries.csv"}}
    (source,) = parse_config({"data_sources": [raw]}, env={}, base_dir=tmp_path)
    assert source.settings.path == str(tmp_path / "entries.csv")
    raw["config"]["path"] = "entries.xlsx"
    with pytest.raises(ConfigError, match=r"data source 'manual_entries': config.path: 'entries.xlsx' must end in .csv or .json"):
        parse_config({"data_sources": [raw]}, env={})
    raw["config"] = {"path": "e.csv", "base_url": "http://x"}  # a Calpendo key
    with pytest.raises(ConfigError, match="data source 'manual_entries': config.base_url: unknown key"):
        parse_config({"data_sources": [raw]}, env={})


def test_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + ROWS[0])
    source = file_source(path)
    first = sync.fingerprint(source, now=NOW)
    assert sync.fingerprint(source, now=NOW) == first
    path.write_text(HEADER + ROWS[0] + ROWS[2])  # outside the window: no change
    assert sync.fingerprint(source, now=NOW) == first
    path.write_text(HEADER + ROWS[0] + ROWS[1])
    assert sync.fingerprint(source, now=NOW) != first


def left_out_of(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [(e["booking_id"], e["kind"], e["run_id"]) for e in list_excluded(conn)]


def test_a_plain_sync_replaces_the_list_of_entries_it_left_out(tmp_path, engine):
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + ROWS[0] + "qa-2,2026-03-10 09:30,20,Prisma,Phantom session,QA\n"
                    "qa-3,2026-03-10 10:30,20,Prisma,,QA\n")
    source = file_source(path)
    sync.run_sync(source, engine, env={}, now=NOW)
    assert left_out_of(engine) == [("qa-2", "pattern_not_matched", ""),
                                   ("qa-3", "no_patient_id", "")]
    path.write_text(HEADER + ROWS[0] + "qa-2,2026-03-10 09:30,20,Prisma,QA0002 - Phantom,QA\n")
    sync.run_sync(source, engine, env={}, now=NOW)
    assert left_out_of(engine) == []  # fixed and gone: the publish replaced the list


def test_the_dagster_job_stores_the_entries_it_left_out(tmp_path, sqlite_url, monkeypatch):
    today = dt.datetime.now(EDMONTON).date()
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + f"qa-1,{today} 23:10,20,Prisma,QA0007 - Phantom,QA\n"
                    f"qa-2,{today} 23:40,20,Prisma,Phantom session,QA\n")
    monkeypatch.setenv("WORKLIST_DB_URL", sqlite_url)
    defs = build_definitions([file_source(path)], retry_policy=None)
    job = defs.resolve_job_def("manual_entries_sync")
    done = job.execute_in_process(instance=shared_instance())
    assert done.success
    engine = make_engine(sqlite_url)
    try:
        assert left_out_of(engine) == [("qa-2", "pattern_not_matched", done.run_id)]
        assert set(rows_of(engine)) == {"qa-1"}
    finally:
        engine.dispose()


@pytest.mark.external
def test_manual_entries_reach_findscu_through_the_dagster_job(
    tmp_path, sqlite_url, monkeypatch, mwl_server
):
    today = dt.datetime.now(EDMONTON).date()
    path = tmp_path / "entries.csv"
    path.write_text(HEADER + f"qa-{today},{today} 23:10,20,Prisma,QA0007 - Phantom,QA\n")
    source = file_source(path, resource_ae_title_mapping={"Prisma": "PRISMA1"})
    monkeypatch.setenv("WORKLIST_DB_URL", sqlite_url)
    # A site with only manual entries has no Calpendo account.
    monkeypatch.delenv("CALPENDO_USERNAME", raising=False)
    monkeypatch.delenv("CALPENDO_PASSWORD", raising=False)
    defs = build_definitions([source], retry_policy=None)
    assert defs.resolve_job_def("manual_entries_sync").execute_in_process(instance=shared_instance()).success

    server = mwl_server(sqlite_url)
    (answer,) = run_findscu(
        server.host, server.port, server.ae_title,
        ["PatientName", "PatientID", "(0040,0100)[0].ScheduledStationAETitle=PRISMA1",
         "(0040,0100)[0].ScheduledProcedureStepStartTime", "(0040,0100)[0].Modality"],
    )
    sps = answer.ScheduledProcedureStepSequence[0]
    assert (answer.PatientID, str(answer.PatientName)) == ("QA0007", "Phantom")
    assert (sps.ScheduledProcedureStepStartTime, sps.Modality) == ("231000", "MR")


def test_broken_json_names_line_and_column_not_content(tmp_path):
    path = tmp_path / "entries.json"
    path.write_text('[{"id": 1, "title": "SUB0070 - Secret Name",}]')
    with pytest.raises(BadAnswerError) as info:
        sync.fetch(file_source(path), now=NOW)
    assert str(info.value).startswith(f"entries file '{path}': invalid JSON at line 1 column 45")
    assert "Secret" not in str(info.value)


def test_a_plugin_reads_only_settings_of_its_own_type(tmp_path):
    source = file_source(tmp_path / "entries.csv")
    assert plugin_for("file").settings(source) is source.settings
    with pytest.raises(TypeError, match="data source 'manual_entries' is of type 'file', not 'calpendo'"):
        plugin_for("calpendo").settings(source)
