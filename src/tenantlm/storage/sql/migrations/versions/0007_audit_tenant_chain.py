"""Audit trail: a chain of its own for every tenant.

Each entry with a tenant gets ``tenant_seq`` (1, 2, 3, ... per tenant), ``tenant_prev_hash`` and ``tenant_hash``,
computed over an encoding without any global field, so a tenant reading its entries sees neither other tenants'
hashes nor their volume. ``format_version`` says which platform encoding an entry's own hash used: the rows already
present keep 1 (their hashes and the checkpoints signed over them are not touched); new rows are written as 2, whose
platform hash also covers the tenant fields.

The rows already present are backfilled in seq order per tenant. A CHECK keeps every tenant entry on its tenant's
chain from now on: a replica still running the previous version cannot append a tenant entry without one (its
platform entries still insert, as format 1), so nothing is ever recorded outside a tenant chain.

Downgrading is refused once an entry of format 2 exists (its hash covers the fields a downgrade would drop).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from tenantlm.audit.chain import GENESIS, tenant_entry_hash, to_micros

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CHECK = (
    "(tenant_id IS NULL AND tenant_seq IS NULL AND tenant_prev_hash IS NULL AND tenant_hash IS NULL) OR "
    "(tenant_id IS NOT NULL AND tenant_seq IS NOT NULL AND tenant_prev_hash IS NOT NULL "
    "AND tenant_hash IS NOT NULL)"
)
_PAGE = 1000

_log = sa.table(
    "audit_log",
    sa.column("seq", sa.BigInteger), sa.column("ts", sa.Float), sa.column("actor", sa.String),
    sa.column("tenant_id", sa.String), sa.column("action", sa.String), sa.column("request_id", sa.String),
    sa.column("details", sa.JSON), sa.column("tenant_seq", sa.BigInteger),
    sa.column("tenant_prev_hash", sa.LargeBinary), sa.column("tenant_hash", sa.LargeBinary),
)


def _details(value: Any) -> dict[str, Any]:
    # as the audit store reads it: only a tampered row holds anything but an object
    return value if isinstance(value, dict) else {"<not an object>": value}


def _backfill(bind: sa.Connection) -> None:
    """Link every tenant's existing entries in seq order, one page of rows at a time."""
    heads: dict[str, tuple[int, bytes]] = {}
    after = 0
    while True:
        rows = bind.execute(
            sa.select(_log.c.seq, _log.c.ts, _log.c.actor, _log.c.tenant_id, _log.c.action, _log.c.request_id,
                      _log.c.details)
            .where(_log.c.tenant_id.is_not(None), _log.c.seq > after).order_by(_log.c.seq).limit(_PAGE)).all()
        updates = []
        for row in rows:
            seq, prev = heads.get(row.tenant_id, (0, GENESIS))
            digest = tenant_entry_hash(prev, tenant_id=row.tenant_id, seq=seq + 1, ts_us=to_micros(row.ts),
                                       actor=row.actor, action=row.action, request_id=row.request_id,
                                       details=_details(row.details))
            heads[row.tenant_id] = (seq + 1, digest)
            updates.append({"at": row.seq, "s": seq + 1, "p": prev, "h": digest})
        if updates:
            bind.execute(
                _log.update().where(_log.c.seq == sa.bindparam("at"))
                .values(tenant_seq=sa.bindparam("s"), tenant_prev_hash=sa.bindparam("p"),
                        tenant_hash=sa.bindparam("h")),
                updates)
        if len(rows) < _PAGE:
            return
        after = rows[-1].seq


def upgrade() -> None:
    bind = op.get_bind()
    is_pg = bind.dialect.name == "postgresql"
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("format_version", sa.SmallInteger, nullable=False, server_default="1"))
        batch.add_column(sa.Column("tenant_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True))
        batch.add_column(sa.Column("tenant_prev_hash", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("tenant_hash", sa.LargeBinary(32), nullable=True))
        batch.drop_index("ix_audit_log_tenant_seq")
    if is_pg:  # the owner runs this; FORCE RLS would hide the rows from it and allow it no UPDATE
        op.execute("ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY")
    _backfill(bind)
    if is_pg:
        op.execute("ALTER TABLE audit_log FORCE ROW LEVEL SECURITY")
    with op.batch_alter_table("audit_log") as batch:
        batch.create_index("ux_audit_log_tenant_chain", ["tenant_id", "tenant_seq"], unique=True)
        batch.create_check_constraint("ck_audit_log_tenant_chain", _CHECK)


def downgrade() -> None:
    # Entries written since 0007 have platform hashes over their tenant fields: dropping those fields would leave
    # a log that no longer verifies, so the downgrade is refused once such an entry exists.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # FORCE RLS: the owner sees the rows in the platform scope only
        bind.execute(sa.text("SELECT set_config('tenantlm.scope', 'platform', true)"))
    if bind.execute(sa.text("SELECT 1 FROM audit_log WHERE format_version > 1 LIMIT 1")).first():
        raise RuntimeError("cannot downgrade below 0007: audit entries written since cover their tenant chain "
                           "fields in their hashes, and dropping those fields would break the audit log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_constraint("ck_audit_log_tenant_chain", type_="check")
        batch.drop_index("ux_audit_log_tenant_chain")
        batch.drop_column("tenant_hash")
        batch.drop_column("tenant_prev_hash")
        batch.drop_column("tenant_seq")
        batch.drop_column("format_version")
        batch.create_index("ix_audit_log_tenant_seq", ["tenant_id", "seq"])
