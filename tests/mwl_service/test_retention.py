"""Retention (mwl_service.retention.purge) and its daily Dagster job, on a real DB."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
from sqlalchemy import insert, select

from calpendo_assets.defs.resources import WorklistDatabase
from calpendo_assets.defs.retention import JOB_NAME, OP_NAME, SCHEDULE_NAME, build_retention_defs
from mwl_service import retention, schema
from mwl_service.engine import make_engine
from mwl_service.schema import MppsInstance, WorklistHistory, WorklistItem
from tests.fixtures.dagster_instance import shared_instance
from tests.fixtures.dicom import insert_item

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def fill(engine) -> dict[str, dict]:
    rows = {
        "old": insert_item(engine, booking_id="OLD", start=NOW - dt.timedelta(days=400)),
        "older": insert_item(engine, booking_id="OLDER", start=NOW - dt.timedelta(days=800),
                             step_status=schema.COMPLETED),
        "recent": insert_item(engine, booking_id="RECENT", start=NOW - dt.timedelta(days=30)),
    }
    with engine.begin() as conn:
        for key in ("older", "recent"):
            r = rows[key]
            conn.execute(insert(MppsInstance).values(
                sop_instance_uid=f"1.2.3.{r['id']}", status=schema.COMPLETED,
                worklist_item_id=r["id"], created_at=NOW, updated_at=NOW))
        conn.execute(insert(MppsInstance).values(  # unscheduled: no row, never purged here
            sop_instance_uid="1.2.3.999", status=schema.COMPLETED, worklist_item_id=None,
            created_at=NOW, updated_at=NOW))
        conn.execute(insert(WorklistHistory), [
            dict(worklist_item_id=r["id"], source=r["source"], booking_id=r["booking_id"],
                 event=schema.EVENT_INSERT, new_step_status=schema.SCHEDULED, changed_at=NOW)
            for r in rows.values()
        ])
    return rows


def test_purge_deletes_old_rows_and_their_mpps_and_keeps_history(engine):
    rows = fill(engine)
    result = retention.purge(engine, dt.timedelta(days=365), now=NOW)
    assert result.cutoff == NOW - dt.timedelta(days=365)
    assert (result.worklist_items, result.mpps_instances, result.history_kept,
            result.purge_events) == (2, 1, 2, 2)
    with engine.connect() as conn:
        assert conn.scalars(select(WorklistItem.booking_id)).all() == ["RECENT"]
        assert sorted(conn.scalars(select(MppsInstance.sop_instance_uid))) == sorted(
            [f"1.2.3.{rows['recent']['id']}", "1.2.3.999"])
        history = conn.execute(select(WorklistHistory).order_by(WorklistHistory.id)).all()
    kept = {(h.booking_id, h.event): h for h in history}
    assert kept[("OLD", schema.EVENT_INSERT)].worklist_item_id is None
    assert kept[("RECENT", schema.EVENT_INSERT)].worklist_item_id == rows["recent"]["id"]
    purged = kept[("OLDER", schema.EVENT_PURGE)]
    assert purged.old_step_status == schema.COMPLETED
    details = json.loads(purged.details)
    assert details["accession_number"] == rows["older"]["accession_number"]
    assert details["mpps_instances"] == [f"1.2.3.{rows['older']['id']}"]
    assert "patient_name" not in details
    # Nothing left to purge: a second run changes nothing.
    again = retention.purge(engine, dt.timedelta(days=365), now=NOW)
    assert (again.worklist_items, again.mpps_instances, again.purge_events) == (0, 0, 0)


def test_retention_job_purges_and_reports_counts(sqlite_url):
    engine = make_engine(sqlite_url)
    today = dt.datetime.now(dt.UTC)
    insert_item(engine, booking_id="ANCIENT", start=today - dt.timedelta(days=500))
    insert_item(engine, booking_id="TODAY", start=today)
    job, schedule = build_retention_defs(purge_after_days=100)
    assert job.name == JOB_NAME and schedule.name == SCHEDULE_NAME
    assert schedule.cron_schedule == "15 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    defs = dg.Definitions(jobs=[job], schedules=[schedule],
                          resources={"worklist_db": WorklistDatabase(url=sqlite_url)})
    result = defs.get_job_def(JOB_NAME).execute_in_process(instance=shared_instance())
    assert result.success
    (output,) = [e for e in result.events_for_node(OP_NAME) if e.is_successful_output]
    metadata = output.step_output_data.metadata
    assert metadata["purged_worklist_items"].value == 1
    assert metadata["purged_mpps_instances"].value == 0
    assert metadata["purge_after_days"].value == 100
    with engine.connect() as conn:
        assert conn.scalars(select(WorklistItem.booking_id)).all() == ["TODAY"]
    engine.dispose()
