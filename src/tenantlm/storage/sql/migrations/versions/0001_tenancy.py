"""Tenancy: tenants, tenant API keys, platform admin keys, end users; row-level security on Postgres.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# tenant-owned table -> the column that names the owner
TENANT_OWNED = {"tenants": "id", "api_keys": "tenant_id", "end_users": "tenant_id"}


def _create_tables() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("allowed_models", sa.JSON, nullable=True),
        sa.Column("model_aliases", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=True),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("last_used_at", sa.Float, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "admin_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("last_used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "end_users",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("request_count", sa.BigInteger, nullable=False),
    )


def _enable_rls() -> None:
    for table, column in TENANT_OWNED.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING ({column} = current_setting('tenantlm.tenant_id', true) "
            f"OR current_setting('tenantlm.scope', true) = 'platform') "
            f"WITH CHECK ({column} = current_setting('tenantlm.tenant_id', true) "
            f"OR current_setting('tenantlm.scope', true) = 'platform')"
        )
    op.execute("ALTER TABLE admin_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE admin_keys FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY platform_only ON admin_keys "
        "USING (current_setting('tenantlm.scope', true) = 'platform') "
        "WITH CHECK (current_setting('tenantlm.scope', true) = 'platform')"
    )


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        _enable_rls()


def downgrade() -> None:
    for table in ("end_users", "admin_keys", "api_keys", "tenants"):
        op.drop_table(table)
