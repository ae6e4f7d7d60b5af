"""The hash chains: canonical byte encodings of an entry and ``hash = SHA-256(prev_hash || canonical(entry))``.

There are two chains over the same entries:

- the **platform chain** links every entry in global ``seq`` order (the operator's view, with signed checkpoints);
- each **tenant chain** links one tenant's entries in ``tenant_seq`` order (1, 2, 3, ... per tenant). Its encoding
  holds no global field (no global seq, no platform hash), so what a tenant reads and verifies says nothing about
  any other tenant's activity.

The encodings are deterministic JSON (sorted keys, no whitespace, UTF-8, no NaN/Infinity) of the entry's *values*,
so they are recomputed identically from whatever a database hands back: a JSON column may reorder keys or re-escape
strings, a float column returns the same double. Time enters as integer microseconds (``ts_us``), never as a float
text. The position (``seq``) is part of each hashed body, so moving an entry breaks its hash as well as the links
around it. The first entry of every chain links to 32 zero bytes (``GENESIS``).

Platform encoding versions (``format_version``, stored with each entry and covered by its own hash through ``v``):

- 1: entries written before tenant chains existed; the platform hash does not cover the tenant fields (those were
  added later by migration 0007, and are proved by the tenant chain they sit on);
- 2: the platform hash also covers ``tenant_seq``, ``tenant_prev_hash`` and ``tenant_hash``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from tenantlm.audit.models import AuditEntry, TenantAuditEntry

GENESIS = bytes(32)
FORMAT_V1 = 1
FORMAT_VERSION = 2
TENANT_FORMAT_VERSION = 1
CHECKPOINT_DOMAIN = b"tenantlm-audit-checkpoint"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def to_micros(ts: float) -> int:
    return round(ts * 1_000_000)


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def canonical_entry(*, seq: int, ts_us: int, actor: str, tenant_id: str | None, action: str,
                    request_id: str | None, details: dict[str, Any], format_version: int = FORMAT_VERSION,
                    tenant_seq: int | None = None, tenant_prev_hash: bytes | None = None,
                    tenant_hash: bytes | None = None) -> bytes:
    """The platform chain's body of one entry, in the encoding ``format_version`` names."""
    body: dict[str, Any] = {
        "v": format_version, "seq": seq, "ts_us": ts_us, "actor": actor, "tenant_id": tenant_id, "action": action,
        "request_id": request_id, "details": details,
    }
    if format_version == FORMAT_VERSION:
        body |= {"tenant_seq": tenant_seq, "tenant_prev_hash": _hex(tenant_prev_hash),
                 "tenant_hash": _hex(tenant_hash)}
    elif format_version != FORMAT_V1:
        raise ValueError(f"unknown audit format version {format_version}")
    return canonical_json(body)


def canonical_tenant_entry(*, tenant_id: str, seq: int, ts_us: int, actor: str, action: str,
                           request_id: str | None, details: dict[str, Any]) -> bytes:
    """A tenant chain's body of one entry: ``seq`` is the tenant's own sequence number; no global field."""
    return canonical_json({
        "v": TENANT_FORMAT_VERSION, "chain": "tenant", "tenant_id": tenant_id, "seq": seq, "ts_us": ts_us,
        "actor": actor, "action": action, "request_id": request_id, "details": details,
    })


def _link(prev_hash: bytes, body: bytes) -> bytes:
    if len(prev_hash) != 32:
        raise ValueError("prev_hash must be 32 bytes")
    return hashlib.sha256(prev_hash + body).digest()


def entry_hash(prev_hash: bytes, *, seq: int, ts_us: int, actor: str, tenant_id: str | None, action: str,
               request_id: str | None, details: dict[str, Any], format_version: int = FORMAT_VERSION,
               tenant_seq: int | None = None, tenant_prev_hash: bytes | None = None,
               tenant_hash: bytes | None = None) -> bytes:
    return _link(prev_hash, canonical_entry(
        seq=seq, ts_us=ts_us, actor=actor, tenant_id=tenant_id, action=action, request_id=request_id,
        details=details, format_version=format_version, tenant_seq=tenant_seq, tenant_prev_hash=tenant_prev_hash,
        tenant_hash=tenant_hash))


def tenant_entry_hash(prev_hash: bytes, *, tenant_id: str, seq: int, ts_us: int, actor: str, action: str,
                      request_id: str | None, details: dict[str, Any]) -> bytes:
    return _link(prev_hash, canonical_tenant_entry(tenant_id=tenant_id, seq=seq, ts_us=ts_us, actor=actor,
                                                   action=action, request_id=request_id, details=details))


def checkpoint_message(seq: int, chain_hash: bytes) -> bytes:
    """What a checkpoint signs: the domain tag, the seq as 8 bytes big-endian, and the chain hash at that seq."""
    return CHECKPOINT_DOMAIN + struct.pack(">Q", seq) + chain_hash


def recompute(entry: AuditEntry) -> bytes:
    """The platform hash ``entry`` should carry, given its own ``prev_hash`` and values."""
    return entry_hash(entry.prev_hash, seq=entry.seq, ts_us=entry.ts_us, actor=entry.actor,
                      tenant_id=entry.tenant_id, action=entry.action, request_id=entry.request_id,
                      details=entry.details, format_version=entry.format_version, tenant_seq=entry.tenant_seq,
                      tenant_prev_hash=entry.tenant_prev_hash, tenant_hash=entry.tenant_hash)


def recompute_tenant(entry: TenantAuditEntry) -> bytes:
    """The tenant-chain hash ``entry`` should carry, given its own ``prev_hash`` and values."""
    return tenant_entry_hash(entry.prev_hash, tenant_id=entry.tenant_id, seq=entry.seq, ts_us=entry.ts_us,
                             actor=entry.actor, action=entry.action, request_id=entry.request_id,
                             details=entry.details)
