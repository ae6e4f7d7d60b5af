"""Residency and per-tenant models: a tenant's ``allowed_regions`` (null: any region), its private catalog entries
(``tenant_models``) and its LoRA adapters (``tenant_adapters``), both tenant-owned under row-level security.

Revision ID: 0016
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TABLES = ("tenant_models", "tenant_adapters")


def upgrade() -> None:
    op.add_column("tenants", sa.Column("allowed_regions", sa.JSON, nullable=True))
    op.create_table(
        "tenant_models",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("input_price_per_1m", sa.Float, nullable=False, server_default="0"),
        sa.Column("output_price_per_1m", sa.Float, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tenant_adapters",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("base_model", sa.String(100), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("lora_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
    op.drop_column("tenants", "allowed_regions")  # native DROP COLUMN (SQLite 3.35+): no copy of tenants
