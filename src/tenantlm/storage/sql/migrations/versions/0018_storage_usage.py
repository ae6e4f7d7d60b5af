"""Storage metering: per tenant, UTC day and kind of content (files, vector stores, stored responses), the most
bytes kept that day, as sampled by the storage meter; tenant-scoped with row-level security on Postgres.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)


def upgrade() -> None:
    op.create_table(
        "storage_usage",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("peak_bytes", sa.BigInteger, nullable=False),
        sa.Column("sampled_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE storage_usage ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE storage_usage FORCE ROW LEVEL SECURITY")
        op.execute(_POLICY.format(table="storage_usage"))


def downgrade() -> None:
    op.drop_table("storage_usage")
