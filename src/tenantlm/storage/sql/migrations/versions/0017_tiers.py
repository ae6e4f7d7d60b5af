"""Isolation tiers: each tenant's ``tier`` says where its content lives, ``pool`` (the shared tables, the default)
or ``silo`` (its own database). The row stays in the pool's ``tenants`` table either way; only content moves.
A silo tenant may have ``reserved_share``: the share of every model's capacity kept for it.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("tier", sa.String(8), nullable=False, server_default="pool"))
    op.add_column("tenants", sa.Column("reserved_share", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "reserved_share")
    op.drop_column("tenants", "tier")
