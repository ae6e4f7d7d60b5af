"""Platform keys with roles (admin, auditor, billing), the indexes authentication's known-key refresh reads, and a
platform-only ``billing`` object on tenants (billing identifiers used to live in the tenant-writable ``metadata``).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("admin_keys", sa.Column("role", sa.String(16), nullable=False, server_default="admin"))
    op.add_column("tenants", sa.Column("billing", sa.JSON, nullable=False, server_default="{}"))
    op.create_index("ix_api_keys_created", "api_keys", ["created_at"])
    op.create_index("ix_admin_keys_created", "admin_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_keys_created", "admin_keys")
    op.drop_index("ix_api_keys_created", "api_keys")
    op.drop_column("tenants", "billing")
    op.drop_column("admin_keys", "role")
