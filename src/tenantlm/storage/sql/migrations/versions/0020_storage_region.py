"""Storage locations: each tenant's ``storage_region`` names the location (database) that keeps its content, when
the operator configures more than one. Null: the home database (``database_url``). The row itself stays in the home
database's ``tenants`` table; a location keeps a copy that its content rows' foreign keys point at.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("storage_region", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "storage_region")
