"""Stored responses (the Responses API) per tenant: one row per response with its own new input items and its
output, both sealed with the tenant's data key, and a pointer to the response it continues (``previous_response_id``),
so a conversation is rebuilt by walking the chain and never copied from turn to turn.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TABLES = ("responses",)


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sealed_input", sa.LargeBinary, nullable=False),
        sa.Column("sealed_output", sa.LargeBinary, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
