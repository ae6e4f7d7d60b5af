"""Usage events record how many conversation items a Responses request sent the model as history.

Revision ID: 0019
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("history_items", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("usage_events", "history_items")
