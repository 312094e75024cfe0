"""The worklist's HTTP face (mwl-api): accounts, bearer tokens, the login rate limit,
the bookings each source's latest publish left out and why, and who made each
history entry.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BATCH = 1000


def _who(event: str, source: str, details_json: str) -> str:
    """The rule of mwl_service.history.changed_by as it stood at this revision."""
    if event in ("mpps_create", "mpps_set"):
        try:
            details = json.loads(details_json or "{}")
        except ValueError:
            details = {}
        ae = details.get("calling_ae_title", "") if isinstance(details, dict) else ""
        return f"mpps:{ae}"[:96] if ae else "mpps"
    if event == "purge":
        return "retention"
    return f"sync:{source}"[:96]


def _fill_changed_by() -> None:
    conn = op.get_bind()
    history = sa.table(
        "worklist_history",
        sa.column("id", sa.Integer),
        sa.column("event", sa.String),
        sa.column("source", sa.String),
        sa.column("details", sa.Text),
        sa.column("changed_by", sa.String),
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(history.c.id, history.c.event, history.c.source, history.c.details)
            .where(history.c.id > last)
            .order_by(history.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        conn.execute(
            history.update()
            .where(history.c.id == sa.bindparam("row_id"))
            .values(changed_by=sa.bindparam("who")),
            [{"row_id": r.id, "who": _who(r.event, r.source, r.details)} for r in rows],
        )
        last = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("worklist_history") as batch:
        batch.add_column(
            sa.Column("changed_by", sa.String(length=96), nullable=False, server_default="")
        )
    _fill_changed_by()
    op.create_table(
        "excluded_bookings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("scheduled_start_utc", sa.DateTime(), nullable=True),
        sa.Column("site_timezone", sa.String(length=64), nullable=False),
        sa.Column("scheduled_start_date", sa.String(length=8), nullable=False),
        sa.Column("resource_name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_excluded_source_date", "excluded_bookings", ["source", "scheduled_start_date"]
    )
    op.create_table(
        "api_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["api_users.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id"])
    op.create_table(
        "api_login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_login_failures_client", "api_login_failures", ["client", "failed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_login_failures_client", table_name="api_login_failures")
    op.drop_table("api_login_failures")
    op.drop_index("ix_api_tokens_user", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("api_users")
    op.drop_index("ix_excluded_source_date", table_name="excluded_bookings")
    op.drop_table("excluded_bookings")
    with op.batch_alter_table("worklist_history") as batch:
        batch.drop_column("changed_by")
