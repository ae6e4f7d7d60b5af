"""Domain objects of the audit trail: one log entry and one signed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One appended event. ``ts_us`` (integer microseconds) is the time the hash covers; ``ts`` is the stored float."""

    seq: int
    ts_us: int
    actor: str
    tenant_id: str | None
    action: str
    request_id: str | None
    details: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    @property
    def ts(self) -> float:
        return self.ts_us / 1_000_000

    def public(self) -> dict[str, Any]:
        return {
            "object": "audit_entry",
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
class Checkpoint:
    """A signature over the chain hash at ``seq``: whoever holds the public key can prove the log up to ``seq``."""

    seq: int
    ts: float
    hash: bytes
    signature: bytes
    key_id: str
