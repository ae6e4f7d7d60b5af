"""Per-tenant data keys: versioned DEKs, each wrapped by the tenant's key-encryption key.

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


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
        sa.Column("kek_ref", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON tenant_keys "
            "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
            "OR current_setting('tenantlm.scope', true) = 'platform') "
            "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
            "OR current_setting('tenantlm.scope', true) = 'platform')"
        )


def downgrade() -> None:
    op.drop_table("tenant_keys")
