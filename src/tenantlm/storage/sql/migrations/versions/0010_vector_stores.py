"""Vector stores per tenant: the stores, the files attached to them (each also the durable ingestion job of that
file: claimed with a lease, completed in one transaction with its chunks), file batches, and the chunks with their
text and embedding sealed with the tenant's data key.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_POLICY = (
    "CREATE POLICY tenant_isolation ON {table} "
    "USING (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform') "
    "WITH CHECK (tenant_id = current_setting('tenantlm.tenant_id', true) "
    "OR current_setting('tenantlm.scope', true) = 'platform')"
)
TABLES = ("vector_stores", "vector_store_files", "vector_store_file_batches", "chunks")


def upgrade() -> None:
    op.create_table(
        "vector_stores",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sealed_meta", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_active_at", sa.Float, nullable=False),
        sa.Column("expires_after_days", sa.Integer, nullable=True),
    )
    op.create_index("ix_vector_stores_tenant_created", "vector_stores", ["tenant_id", "created_at"])
    op.create_table(
        "vector_store_files",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("vector_store_id", sa.String(64), primary_key=True),
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32), nullable=True),
        sa.Column("error_message", sa.String(500), nullable=True),
        sa.Column("sealed_attributes", sa.LargeBinary, nullable=True),
        sa.Column("chunking", sa.JSON, nullable=False),
        sa.Column("usage_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "vector_store_id"], ["vector_stores.tenant_id", "vector_stores.id"],
                                ondelete="CASCADE"),
    )
    op.create_index("ix_vector_store_files_work", "vector_store_files", ["status", "lease_until"])
    op.create_table(
        "vector_store_file_batches",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "vector_store_id"], ["vector_stores.tenant_id", "vector_stores.id"],
                                ondelete="CASCADE"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("sealed_text", sa.LargeBinary, nullable=False),
        sa.Column("sealed_vector", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "vector_store_id", "file_id"],
                                ["vector_store_files.tenant_id", "vector_store_files.vector_store_id",
                                 "vector_store_files.file_id"], ondelete="CASCADE"),
    )
    op.create_index("ix_chunks_store", "chunks", ["tenant_id", "vector_store_id"])
    op.create_index("ix_chunks_file", "chunks", ["tenant_id", "vector_store_id", "file_id"])
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(_POLICY.format(table=table))


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
