"""Schema versions and upgrades (mwl_service.migrate), on SQLite and PostgreSQL.

A database of the first release is built from that release's own DDL (frozen in
tests/fixtures/release_1_*.sql, not from revision 0001), filled with rows, MPPS
instances and history, refused, upgraded, compared with the schema module, and
served by the real mwl-service process to DCMTK findscu.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url

from mwl_service import migrate, schema
from mwl_service.engine import make_engine
from tests.fixtures.dicom import SERVER_AET, SITE_TZ, item_values, run_findscu

FIXTURES = Path(__file__).parents[1] / "fixtures"


def build_release_1(url: str) -> None:
    """A database exactly as the first release's create_all left it."""
    engine = create_engine(url)
    ddl = (FIXTURES / f"release_1_{engine.dialect.name}.sql").read_text()
    statements = [s.strip() for s in ddl.split(";\n") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            sql = "\n".join(x for x in statement.splitlines() if not x.startswith("--"))
            if sql.strip():
                conn.exec_driver_sql(sql)
    engine.dispose()


def _naive_utc(value):
    return value.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(value, dt.datetime) else value


def fill_release_1(url: str) -> dict[str, list[dict]]:
    """Rows, an MPPS instance and history in the release-1 tables (reflected, so
    only the columns that release had)."""
    engine = create_engine(url)
    meta = MetaData()
    now = dt.datetime(2026, 3, 1, 12, 0)
    with engine.begin() as conn:
        items = Table("worklist_items", meta, autoload_with=conn)
        history = Table("worklist_history", meta, autoload_with=conn)
        mpps = Table("mpps_instances", meta, autoload_with=conn)
        today = dt.datetime.now(dt.UTC).replace(hour=15, minute=0, second=0, microsecond=0)
        rows = [
            item_values(booking_id="R1-1", patient_name="Müller^Jürgen", start=today),
            item_values(booking_id="R1-2", patient_name="Doe^John", start=today,
                        step_status=schema.IN_PROGRESS, step_status_owner=schema.OWNER_MPPS),
        ]
        for row in rows:
            row.update(created_at=now, updated_at=now)
            # The release's ORM defaults were "" for the text columns not given.
            row.update({c.name: "" for c in items.columns
                        if c.name not in row and not c.nullable and not c.primary_key})
            values = {k: _naive_utc(v) for k, v in row.items()}
            row["id"] = conn.execute(insert(items).values(**values)).inserted_primary_key[0]
        conn.execute(insert(mpps).values(
            sop_instance_uid="1.2.3.4.5", status=schema.IN_PROGRESS,
            worklist_item_id=rows[1]["id"], calling_ae_title="MRI3T",
            study_instance_uid=rows[1]["study_instance_uid"],
            accession_number=rows[1]["accession_number"],
            scheduled_procedure_step_id=rows[1]["scheduled_procedure_step_id"],
            dataset_json=json.dumps({"00400252": {"vr": "CS", "Value": ["IN PROGRESS"]}}),
            created_at=now, updated_at=now,
        ))
        conn.execute(insert(history), [
            dict(worklist_item_id=r["id"], source=r["source"], booking_id=r["booking_id"],
                 event=schema.EVENT_INSERT, old_step_status="", new_step_status=schema.SCHEDULED,
                 details="{}", changed_at=now)
            for r in rows
        ] + [dict(worklist_item_id=rows[1]["id"], source="test", booking_id="R1-2",
                  event=schema.EVENT_MPPS_CREATE, old_step_status=schema.SCHEDULED,
                  new_step_status=schema.IN_PROGRESS, details='{"mpps": "1.2.3.4.5"}',
                  changed_at=now)])
        snapshot = {
            name: [dict(r._mapping) for r in conn.execute(select(t).order_by(*t.primary_key))]
            for name, t in (("items", items), ("history", history), ("mpps", mpps))
        }
    engine.dispose()
    return snapshot


def schema_differences(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, schema.Base.metadata)
    engine.dispose()
    return diffs


def test_new_database_is_created_at_head(db_url):
    engine = make_engine(db_url)
    state = migrate.schema_state(engine)
    assert state.current == state.head == migrate.head_revision()
    assert state.up_to_date
    engine.dispose()
    assert schema_differences(db_url) == []


def test_revisions_from_empty_match_the_schema_module(db_url):
    assert migrate.upgrade(db_url) == (None, migrate.head_revision())
    assert schema_differences(db_url) == []


def test_release_1_database_is_refused_upgraded_and_keeps_everything(db_url):
    build_release_1(db_url)
    before = fill_release_1(db_url)

    shown = make_url(db_url)
    if shown.get_backend_name() == "postgresql":
        # A password in the URL is never shown (the dev server trusts loopback).
        shown = shown.set(password="s3cret-pw")
    with pytest.raises(migrate.SchemaOutOfDateError) as refused:
        make_engine(shown.render_as_string(hide_password=False))
    message = str(refused.value)
    assert "calpendo-mwl db upgrade --db-url " in message
    assert "first release" in message and migrate.head_revision() in message
    assert "s3cret-pw" not in message

    assert migrate.upgrade(db_url) == (migrate.RELEASE_1, migrate.head_revision())
    assert migrate.upgrade(db_url) == (migrate.head_revision(), migrate.head_revision())
    assert schema_differences(db_url) == []

    engine = make_engine(db_url)  # now accepted
    with engine.connect() as conn:
        for name, model in (("items", schema.WorklistItem), ("history", schema.WorklistHistory),
                            ("mpps", schema.MppsInstance)):
            table = model.__table__
            after = [dict(r._mapping) for r in conn.execute(
                select(table).order_by(*table.primary_key))]
            assert len(after) == len(before[name])
            for old, new in zip(before[name], after):
                for column, value in old.items():
                    assert _naive_utc(new[column]) == value, (name, column)
        new_fields = conn.execute(select(
            schema.WorklistItem.patient_weight, schema.WorklistItem.pregnancy_status,
            schema.WorklistItem.scheduled_protocol_code_value,
            schema.WorklistItem.referenced_studies,
            schema.WorklistItem.requested_procedure_coding_scheme_version,
        )).all()
        assert new_fields == [("", "", "", "", "")] * 2  # unknown; pregnancy_status NULL
        # Who made each older history entry, filled in by revision 0003.
        who = conn.execute(select(schema.WorklistHistory.changed_by)
                           .order_by(schema.WorklistHistory.id)).scalars().all()
        assert who == ["sync:test", "sync:test", "mpps"]  # that MPPS entry named no AE
    # The widened column holds a two-console station (PostgreSQL enforces lengths).
    with engine.begin() as conn:
        conn.execute(schema.WorklistItem.__table__.update().values(
            scheduled_station_ae_title="MRI3T_CONSOLE_A\\MRI3T_CONSOLE_B"))
    engine.dispose()


@pytest.mark.external
def test_upgraded_release_1_database_is_served(sqlite_url, mwl_service_process):
    build_release_1(sqlite_url)
    before = fill_release_1(sqlite_url)

    refused = mwl_service_process(sqlite_url, wait=False)
    assert refused.proc.wait(timeout=30) == 1
    assert "calpendo-mwl db upgrade --db-url sqlite:///" in refused.output()

    migrate.upgrade(sqlite_url)
    service = mwl_service_process(sqlite_url)
    answers = run_findscu(
        service.host, service.port, SERVER_AET,
        ["PatientName", "AccessionNumber", "PatientWeight", "ReferencedStudySequence",
         "TimezoneOffsetFromUTC", "(0040,0100)[0].ScheduledProcedureStepStatus",
         "(0040,0100)[0].ScheduledStationAETitle"],
    )
    got = {str(a.AccessionNumber): a for a in answers}
    assert set(got) == {r["accession_number"] for r in before["items"]}
    by_booking = {r["booking_id"]: r["accession_number"] for r in before["items"]}
    assert str(got[by_booking["R1-1"]].PatientName) == "Müller^Jürgen"
    assert got[by_booking["R1-2"]].ScheduledProcedureStepSequence[0] \
        .ScheduledProcedureStepStatus == "IN PROGRESS"
    assert got[by_booking["R1-1"]].PatientWeight is None  # unknown stays empty
    assert len(got[by_booking["R1-1"]].ReferencedStudySequence) == 0  # no reference
    today = dt.datetime.now(dt.UTC).replace(hour=15, minute=0, second=0, microsecond=0)
    offset = today.astimezone(ZoneInfo(SITE_TZ)).strftime("%z")
    assert got[by_booking["R1-1"]].TimezoneOffsetFromUTC == offset
    service.stop()


def test_revision_0004_adds_only_its_columns_and_goes_back(db_url):
    # It is chained after 0002 for now: it must not touch what other revisions own.
    assert migrate.upgrade(db_url) == (None, migrate.head_revision())
    engine = create_engine(db_url)
    added = {"referenced_studies", "requested_procedure_coding_scheme_version",
             "scheduled_protocol_coding_scheme_version"}

    def columns() -> set[str]:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns("worklist_items")}

    assert added <= columns()
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert not added & columns()
    assert len(columns()) == len(schema.WorklistItem.__table__.columns) - len(added)
    engine.dispose()
    assert migrate.upgrade(db_url) == ("0002", migrate.head_revision())
    assert schema_differences(db_url) == []


def test_require_current_names_a_newer_or_partial_database(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with pytest.raises(migrate.SchemaOutOfDateError, match="revision 0001"):
        migrate.require_current(engine)
    assert not migrate.schema_state(engine).up_to_date
    engine.dispose()
