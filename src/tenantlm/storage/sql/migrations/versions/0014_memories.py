"""Long-term memories per end user, and the end user on stored responses and request-log entries (so one end user's
content can be found and erased).

``memories``: one row per fact about one end user of one tenant, its text and embedding sealed with the tenant's
data key. ``responses.end_user`` and ``request_log.end_user``: the end user the request named (null when none), in
clear like ``end_users.user_id``.

Revision ID: 0014
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TABLES = ("memories",)


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("end_user", sa.String(256), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("sealed_text", sa.LargeBinary, nullable=False),
        sa.Column("sealed_vector", sa.LargeBinary, nullable=True),
    )
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("end_user", sa.String(256), nullable=True))
    op.create_index("ix_responses_end_user", "responses", ["tenant_id", "end_user"])
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("end_user", sa.String(256), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    op.drop_index("ix_responses_end_user", table_name="responses")
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("end_user")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("end_user")
    for table in reversed(TABLES):
        op.drop_table(table)
