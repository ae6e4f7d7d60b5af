"""Audit trail: an append-only, hash-chained log and Ed25519-signed checkpoints.

No foreign key to tenants: the record of a tenant's deletion outlives the tenant.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("ix_audit_log_tenant_seq", "audit_log", ["tenant_id", "seq"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE audit_log FORCE ROW LEVEL SECURITY")
        # tenants read their own entries; writing and platform-wide reads need the platform scope
        op.execute(
            "CREATE POLICY tenant_read ON audit_log FOR SELECT "
            "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
            "OR current_setting('tenantlm.scope', true) = 'platform')"
        )
        op.execute(
            "CREATE POLICY platform_append ON audit_log FOR INSERT "
            "WITH CHECK (current_setting('tenantlm.scope', true) = 'platform')"
        )
        op.execute("ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY")
        op.execute("CREATE POLICY checkpoints_read ON audit_checkpoints FOR SELECT USING (true)")
        op.execute(
            "CREATE POLICY checkpoints_append ON audit_checkpoints FOR INSERT "
            "WITH CHECK (current_setting('tenantlm.scope', true) = 'platform')"
        )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_log")
