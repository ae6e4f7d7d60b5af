"""Request log: each request's prompt and response, sealed with the tenant's data key (opt-in per tenant).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_request_log_tenant_created", "request_log", ["tenant_id", "created_at"])
    op.create_index("ix_request_log_expires", "request_log", ["expires_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE request_log ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE request_log FORCE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_isolation ON request_log "
            "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
            "OR current_setting('tenantlm.scope', true) = 'platform') "
            "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
            "OR current_setting('tenantlm.scope', true) = 'platform')"
        )


def downgrade() -> None:
    op.drop_table("request_log")
