"""The hash chain: a canonical byte encoding of an entry and ``hash = SHA-256(prev_hash || canonical(entry))``.

The encoding is deterministic JSON (sorted keys, no whitespace, UTF-8, no NaN/Infinity) of the entry's *values*, so
it is recomputed identically from whatever a database hands back: a JSON column may reorder keys or re-escape
strings, a float column returns the same double. Time enters as integer microseconds (``ts_us``), never as a float
text. ``seq`` is part of the hashed entry, so moving an entry to another position breaks its hash as well as the
links around it. The first entry links to 32 zero bytes (``GENESIS``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from tenantlm.audit.models import AuditEntry

GENESIS = bytes(32)
FORMAT_VERSION = 1
CHECKPOINT_DOMAIN = b"tenantlm-audit-checkpoint"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def to_micros(ts: float) -> int:
    return round(ts * 1_000_000)


def canonical_entry(*, seq: int, ts_us: int, actor: str, tenant_id: str | None, action: str,
                    request_id: str | None, details: dict[str, Any]) -> bytes:
    return canonical_json({
        "v": FORMAT_VERSION, "seq": seq, "ts_us": ts_us, "actor": actor, "tenant_id": tenant_id, "action": action,
        "request_id": request_id, "details": details,
    })


def entry_hash(prev_hash: bytes, *, seq: int, ts_us: int, actor: str, tenant_id: str | None, action: str,
               request_id: str | None, details: dict[str, Any]) -> bytes:
    if len(prev_hash) != 32:
        raise ValueError("prev_hash must be 32 bytes")
    body = canonical_entry(seq=seq, ts_us=ts_us, actor=actor, tenant_id=tenant_id, action=action,
                           request_id=request_id, details=details)
    return hashlib.sha256(prev_hash + body).digest()


def checkpoint_message(seq: int, chain_hash: bytes) -> bytes:
    """What a checkpoint signs: the domain tag, the seq as 8 bytes big-endian, and the chain hash at that seq."""
    return CHECKPOINT_DOMAIN + struct.pack(">Q", seq) + chain_hash


def recompute(entry: AuditEntry) -> bytes:
    """The hash ``entry`` should carry, given its own ``prev_hash`` and values."""
    return entry_hash(entry.prev_hash, seq=entry.seq, ts_us=entry.ts_us, actor=entry.actor,
                      tenant_id=entry.tenant_id, action=entry.action, request_id=entry.request_id,
                      details=entry.details)
