"""Release 1: the worklist schema as the first release created it (no version table).

Databases of that release have these tables and no ``alembic_version``;
``mwl_service.migrate.upgrade`` stamps them at this revision before upgrading.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worklist_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=False),
        sa.Column("patient_sex", sa.String(length=16), nullable=False),
        sa.Column("other_patient_ids", sa.String(length=64), nullable=False),
        sa.Column("admission_id", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
        sa.Column("requested_procedure_description", sa.String(length=64), nullable=False),
        sa.Column("study_description", sa.String(length=64), nullable=False),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=False),
        sa.Column("scheduled_procedure_step_description", sa.String(length=64), nullable=False),
        sa.Column("scheduled_station_ae_title", sa.String(length=16), nullable=False),
        sa.Column("scheduled_station_name", sa.String(length=16), nullable=False),
        sa.Column("scheduled_procedure_step_location", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("performing_physician_name", sa.String(length=324), nullable=False),
        sa.Column("scheduled_start_utc", sa.DateTime(), nullable=False),
        sa.Column("site_timezone", sa.String(length=64), nullable=False),
        sa.Column("scheduled_start_date", sa.String(length=8), nullable=False),
        sa.Column("scheduled_start_time", sa.String(length=6), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("step_status", sa.String(length=16), nullable=False),
        sa.Column("step_status_owner", sa.String(length=8), nullable=False),
        sa.Column("discontinued_at", sa.DateTime(), nullable=True),
        sa.Column("discontinued_reason", sa.String(length=255), nullable=False),
        sa.Column("booking_status", sa.String(length=32), nullable=False),
        sa.Column("resource_name", sa.String(length=128), nullable=False),
        sa.Column("project_name", sa.String(length=255), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("accession_number"),
        sa.UniqueConstraint("source", "booking_id", name="uq_worklist_source_booking"),
        sa.UniqueConstraint("study_instance_uid"),
    )
    for name, columns in (
        ("ix_worklist_date_time", ["scheduled_start_date", "scheduled_start_time"]),
        ("ix_worklist_station_date", ["scheduled_station_ae_title", "scheduled_start_date"]),
        ("ix_worklist_modality_date", ["modality", "scheduled_start_date"]),
        ("ix_worklist_patient_id", ["patient_id"]),
        ("ix_worklist_patient_name", ["patient_name"]),
        ("ix_worklist_status_date", ["step_status", "scheduled_start_date"]),
        ("ix_worklist_source_start", ["source", "scheduled_start_utc"]),
    ):
        op.create_index(name, "worklist_items", columns, unique=False)
    op.create_table(
        "worklist_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("worklist_item_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("old_step_status", sa.String(length=16), nullable=False),
        sa.Column("new_step_status", sa.String(length=16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["worklist_item_id"], ["worklist_items.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_history_source_booking", "worklist_history", ["source", "booking_id"], unique=False
    )
    op.create_table(
        "mpps_instances",
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worklist_item_id", sa.Integer(), nullable=True),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=False),
        sa.Column("dataset_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["worklist_item_id"], ["worklist_items.id"]),
        sa.PrimaryKeyConstraint("sop_instance_uid"),
    )


def downgrade() -> None:
    op.drop_table("mpps_instances")
    op.drop_index("ix_history_source_booking", table_name="worklist_history")
    op.drop_table("worklist_history")
    op.drop_table("worklist_items")
