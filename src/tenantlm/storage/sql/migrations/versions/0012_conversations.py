"""Conversations (the Conversations API) per tenant: a row per conversation with the end user it belongs to (if any),
its sealed metadata and sealed running summary, and a row per item, sealed with the tenant's data key, in the order
the conversation received them. Stored responses name the conversation they were made in, so ending a conversation
erases them too.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TABLES = ("conversations", "conversation_items")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_active_at", sa.Float, nullable=False),
        sa.Column("next_position", sa.Integer, nullable=False),
        sa.Column("sealed_metadata", sa.LargeBinary, nullable=False),
        sa.Column("sealed_summary", sa.LargeBinary, nullable=True),
        sa.Column("summary_through", sa.Integer, nullable=False),
    )
    op.create_index("ix_conversations_end_user", "conversations", ["tenant_id", "end_user"])
    op.create_table(
        "conversation_items",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sealed_item", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_conversation_items_position", "conversation_items",
                    ["tenant_id", "conversation_id", "position"], unique=True)
    with op.batch_alter_table("responses") as batch:
        batch.add_column(sa.Column("conversation_id", sa.String(64), nullable=True))
    op.create_index("ix_responses_conversation", "responses", ["tenant_id", "conversation_id"])
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    op.drop_index("ix_responses_conversation", "responses")
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("conversation_id")
    for table in reversed(TABLES):
        op.drop_table(table)
