"""Domain objects of the audit trail: one log entry as the platform sees it, the same entry as its tenant sees it,
and one signed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TenantAuditEntry:
    """One entry on its tenant's own chain: ``seq`` is the tenant's sequence number (1, 2, 3, ... with no gaps) and
    ``prev_hash`` / ``hash`` link the tenant's entries only. Nothing here is global: no platform seq, no platform
    hash, so a tenant's view carries no trace of other tenants' activity."""

    tenant_id: str
    seq: int
    ts_us: int
    actor: str
    action: str
    request_id: str | None
    details: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    def public(self) -> dict[str, Any]:
        return {
            "object": "audit_entry",
            "chain": "tenant",
            "seq": self.seq,
            "created_at": self.ts_us // 1_000_000,
            "ts_us": self.ts_us,
            "actor": self.actor,
            "tenant_id": self.tenant_id,
            "action": self.action,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One appended event as the platform sees it. ``ts_us`` (integer microseconds) is the time the hashes cover;
    ``ts`` is the stored float. ``seq`` / ``prev_hash`` / ``hash`` are the platform chain; an entry with a tenant also
    sits on that tenant's chain (``tenant_seq`` / ``tenant_prev_hash`` / ``tenant_hash``). ``format_version`` names the
    platform encoding its hash was computed with (see ``chain``)."""

    seq: int
    ts_us: int
    actor: str
    tenant_id: str | None
    action: str
    request_id: str | None
    details: dict[str, Any]
    prev_hash: bytes
    hash: bytes
    format_version: int
    tenant_seq: int | None = None
    tenant_prev_hash: bytes | None = None
    tenant_hash: bytes | None = None

    @property
    def ts(self) -> float:
        return self.ts_us / 1_000_000

    def tenant_view(self) -> TenantAuditEntry | None:
        """This entry as its tenant sees it, or None for a platform entry (or one missing its tenant fields)."""
        if self.tenant_id is None or self.tenant_seq is None or self.tenant_prev_hash is None \
                or self.tenant_hash is None:
            return None
        return TenantAuditEntry(tenant_id=self.tenant_id, seq=self.tenant_seq, ts_us=self.ts_us, actor=self.actor,
                                action=self.action, request_id=self.request_id, details=self.details,
                                prev_hash=self.tenant_prev_hash, hash=self.tenant_hash)

    def public(self) -> dict[str, Any]:
        return {
            "object": "audit_entry",
            "chain": "platform",
            "seq": self.seq,
            "created_at": self.ts_us // 1_000_000,
            "ts_us": self.ts_us,
            "actor": self.actor,
            "tenant_id": self.tenant_id,
            "action": self.action,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
            "format_version": self.format_version,
            "tenant_seq": self.tenant_seq,
            "tenant_prev_hash": None if self.tenant_prev_hash is None else self.tenant_prev_hash.hex(),
            "tenant_hash": None if self.tenant_hash is None else self.tenant_hash.hex(),
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signature over the chain hash at ``seq``: whoever holds the public key can prove the log up to ``seq``."""

    seq: int
    ts: float
    hash: bytes
    signature: bytes
    key_id: str
