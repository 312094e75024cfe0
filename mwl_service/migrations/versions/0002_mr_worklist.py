"""An MR-ready worklist: patient medical fields, comments, requesting physician,
priority, contrast agent and pre-medication, the two code sequences, several station AE titles per step, and the
per-source sync state.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# New NOT NULL text columns; existing rows get "" (unknown / no code).
_TEXT_COLUMNS = (
    ("patient_weight", sa.String(length=16)),
    ("patient_size", sa.String(length=16)),
    ("medical_alerts", sa.String(length=64)),
    ("allergies", sa.String(length=64)),
    ("patient_comments", sa.Text()),
    ("requesting_physician", sa.String(length=324)),
    ("requested_procedure_priority", sa.String(length=16)),
    ("requested_procedure_code_value", sa.String(length=16)),
    ("requested_procedure_coding_scheme_designator", sa.String(length=16)),
    ("requested_procedure_code_meaning", sa.String(length=64)),
    ("scheduled_procedure_step_comments", sa.Text()),
    ("scheduled_protocol_code_value", sa.String(length=16)),
    ("scheduled_protocol_coding_scheme_designator", sa.String(length=16)),
    ("scheduled_protocol_code_meaning", sa.String(length=64)),
    ("requested_contrast_agent", sa.String(length=64)),
    ("pre_medication", sa.String(length=64)),
)


def upgrade() -> None:
    with op.batch_alter_table("worklist_items") as batch:
        for name, type_ in _TEXT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=False, server_default=""))
        batch.add_column(sa.Column("pregnancy_status", sa.Integer(), nullable=True))
        # Several AE titles joined by a backslash; a station matches any of them,
        # which the old station+date index cannot serve.
        batch.drop_index("ix_worklist_station_date")
        batch.alter_column(
            "scheduled_station_ae_title",
            existing_type=sa.String(length=16),
            type_=sa.String(length=169),
            existing_nullable=False,
        )
    op.create_table(
        "source_sync_state",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("last_fetched_at", sa.DateTime(), nullable=False),
        sa.Column("last_published_at", sa.DateTime(), nullable=False),
        sa.Column("last_run_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )


def downgrade() -> None:
    op.drop_table("source_sync_state")
    with op.batch_alter_table("worklist_items") as batch:
        batch.alter_column(
            "scheduled_station_ae_title",
            existing_type=sa.String(length=169),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
        batch.create_index(
            "ix_worklist_station_date", ["scheduled_station_ae_title", "scheduled_start_date"]
        )
        batch.drop_column("pregnancy_status")
        for name, _type in reversed(_TEXT_COLUMNS):
            batch.drop_column(name)
