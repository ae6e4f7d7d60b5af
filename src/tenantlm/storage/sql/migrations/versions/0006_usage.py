"""Usage ledger: one row per upstream attempt (idempotent on its id), per tenant/day/model rollups maintained at
flush, and the budget alerts already fired (so each fires once across restarts). All three are tenant-owned (RLS).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
_TABLES = ("usage_events", "usage_rollups", "usage_alerts")


def _totals() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger, nullable=False)
            for name in ("prompt_tokens", "completion_tokens", "cached_tokens")]


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("upstream_model", sa.String(256), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        *_totals(),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
    )
    op.create_index("ix_usage_events_tenant_created", "usage_events", ["tenant_id", "created_at"])
    op.create_index("ix_usage_events_created", "usage_events", ["created_at"])
    op.create_table(
        "usage_rollups",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        *_totals(),
        sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "usage_alerts",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("metric", sa.String(8), primary_key=True),
        sa.Column("threshold", sa.Integer, primary_key=True),
        sa.Column("target", sa.String(16), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
