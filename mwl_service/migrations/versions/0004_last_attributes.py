"""The last worklist attributes: Referenced Study Sequence items and the Coding Scheme
Version of both code sequences.

Only new columns of worklist_items, so this revision does not depend on what other
revisions do to other tables.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# New NOT NULL text columns; existing rows get "" (no reference, no version).
_TEXT_COLUMNS = (
    ("requested_procedure_coding_scheme_version", sa.String(length=16)),
    ("referenced_studies", sa.Text()),
    ("scheduled_protocol_coding_scheme_version", sa.String(length=16)),
)


def upgrade() -> None:
    with op.batch_alter_table("worklist_items") as batch:
        for name, type_ in _TEXT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("worklist_items") as batch:
        for name, _type in reversed(_TEXT_COLUMNS):
            batch.drop_column(name)
