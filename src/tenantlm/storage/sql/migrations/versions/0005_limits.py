"""Plans and limits: named plans (platform), per-tenant overrides, per-key sub-limits.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
        "plans",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tenant_limits",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("end_user_limits", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.add_column("api_keys", sa.Column("limits", sa.JSON, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tenant_limits ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE tenant_limits FORCE ROW LEVEL SECURITY")
        op.execute(_POLICY.format(table="tenant_limits"))


def downgrade() -> None:
    op.drop_column("api_keys", "limits")
    op.drop_table("tenant_limits")
    op.drop_table("plans")
