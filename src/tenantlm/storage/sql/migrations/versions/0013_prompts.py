"""Prompt templates: platform base prompts with immutable numbered versions and movable labels, and tenant overrides
with their own immutable versions and labels. An override's content (its blocks or its whole template) is sealed with
the tenant's data key; override rows are tenant-owned (row-level security on Postgres). Base prompts belong to the
platform and hold no tenant content.

Revision ID: 0013
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0018"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TENANT_TABLES = ("prompt_overrides", "prompt_override_labels")


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("template", sa.JSON, nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("model", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "prompt_overrides",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "prompt_override_labels",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.add_column("usage_events", sa.Column("prompt_id", sa.String(64), nullable=True))
    op.add_column("usage_events", sa.Column("prompt_version", sa.String(16), nullable=True))
    op.add_column("usage_events", sa.Column("prompt_override_version", sa.String(16), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    for column in ("prompt_override_version", "prompt_version", "prompt_id"):
        op.drop_column("usage_events", column)
    for table in (*reversed(TENANT_TABLES), "prompt_labels", "prompt_versions", "prompts"):
        op.drop_table(table)
