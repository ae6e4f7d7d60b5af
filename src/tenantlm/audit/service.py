"""The audit log: append (validated, hash-chained, serialized across processes), signed checkpoints, reads, export.

Every entry is linked twice: on the platform chain (global ``seq``, for the operator, with signed checkpoints) and,
when it has a tenant, on that tenant's own chain (``tenant_seq`` 1, 2, 3, ...), both allocated in the same locked
transaction. Reads with a tenant show the tenant's chain only; see ``chain`` for the encodings.

Appends take the store's lock (a Postgres advisory lock or SQLite's write lock) and, in this process, an asyncio lock
too, so that tasks queue here instead of holding pooled connections while they wait. A checkpoint is written in the
same transaction as the append that makes it due: ``checkpoint_every`` entries since the last one, or the oldest
uncovered entry is ``checkpoint_interval_s`` old. ``maybe_checkpoint()`` applies the time rule when no appends come
(call it from a periodic task) and, with ``force=True``, covers the head at shutdown.

Secrets never enter the log: ``details`` must be a JSON object whose key names do not look like secrets and whose
strings do not look like API keys; anything else is a ``ValueError`` (a programming error in the caller).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from tenantlm.audit.chain import FORMAT_VERSION, canonical_json, recompute, tenant_entry_hash, to_micros
from tenantlm.audit.models import AuditEntry, Checkpoint, TenantAuditEntry
from tenantlm.audit.ports import PendingEntries
from tenantlm.audit.signer import AuditSigner
from tenantlm.audit.store import AuditStore, AuditWriter
from tenantlm.storage.sql.engine import Database

log = logging.getLogger("tenantlm.audit")

MAX_DETAILS_BYTES = 64 * 1024
MAX_DEPTH = 8
# Key names refused anywhere in details: any word from _SECRET_WORDS, or a last word from _SECRET_LAST_WORDS
# ("api_key", "private_key", "access_token" are refused; "key_id", "key_prefix", "max_tokens" are fine).
_SECRET_WORDS = frozenset({"secret", "secrets", "password", "passwd", "passphrase", "authorization", "credential",
                           "credentials", "apikey", "bearer", "cookie", "plaintext"})
_SECRET_LAST_WORDS = frozenset({"key", "token"})
# A TenantLM key (tlm_ / tlmadmin_ + 16 hex id + 43 base62 secret) or a bearer credential inside any string value.
_SECRET_VALUE = re.compile(r"tlm(?:admin)?_[0-9a-f]{16}[A-Za-z0-9]{43}|\bbearer\s+\S{8,}", re.IGNORECASE)
_ACTION = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,99}$")
_FIELD_LIMITS = {"actor": 200, "tenant_id": 40, "request_id": 128}


def _words(name: str) -> list[str]:
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return [w for w in re.split(r"[^a-z0-9]+", snake) if w]


def looks_secret(name: str) -> bool:
    words = _words(name)
    return bool(words) and (words[-1] in _SECRET_LAST_WORDS or any(w in _SECRET_WORDS for w in words))


def _check_value(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"audit details nest deeper than {MAX_DEPTH} levels at {path}")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"audit details keys must be strings (at {path})")
            if looks_secret(k):
                raise ValueError(f"audit details may not carry secrets: key {k!r} at {path} looks like one")
            _check_value(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_value(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str):
        if _SECRET_VALUE.search(value):
            raise ValueError(f"audit details may not carry secrets: the value at {path} looks like a credential")
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"audit details must be JSON: {type(value).__name__} at {path}")


def validate_details(details: Any) -> dict[str, Any]:
    """Check ``details`` and return its JSON-normal form (what is stored and hashed)."""
    if not isinstance(details, dict):
        raise ValueError("audit details must be a JSON object")
    _check_value(details, "details", 0)
    try:
        encoded = canonical_json(details)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details must be JSON (finite numbers, string keys): {exc}") from None
    if len(encoded) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details exceed {MAX_DETAILS_BYTES} bytes")
    normal: dict[str, Any] = json.loads(encoded)
    return normal


def _check_fields(*, actor: str, action: str, tenant_id: str | None, request_id: str | None) -> None:
    if not _ACTION.match(action):
        raise ValueError(f"bad audit action {action!r}: lowercase letters, digits and ._:- only, at most 100")
    for name, value in (("actor", actor), ("tenant_id", tenant_id), ("request_id", request_id)):
        if value is None and name != "actor":
            continue
        if not isinstance(value, str) or not value or len(value) > _FIELD_LIMITS[name] or not value.isprintable():
            raise ValueError(f"bad audit {name}: a printable string of at most {_FIELD_LIMITS[name]} characters")


class AuditLog:
    def __init__(self, db: Database, signer: AuditSigner, *, checkpoint_every: int = 100,
                 checkpoint_interval_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if checkpoint_every < 1 or checkpoint_interval_s <= 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_interval_s > 0")
        self.store = AuditStore(db)
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.clock = clock
        self._lock = asyncio.Lock()

    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> AuditEntry:
        _check_fields(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id)
        clean = validate_details(details)
        async with self._lock, self.store.locked() as w:
            head_seq, head_hash = await w.head()
            tenant_head = None if tenant_id is None else await w.tenant_head(tenant_id=tenant_id)
            entry = _linked(seq=head_seq + 1, prev_hash=head_hash, tenant_head=tenant_head,
                            ts_us=to_micros(self.clock()), actor=actor, tenant_id=tenant_id, action=action,
                            request_id=request_id, details=clean)
            await w.insert(entry)
            await self._checkpoint_if_due(w, entry.seq, entry.hash, force=False)
        return entry

    async def maybe_checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the head if a checkpoint is due (or, with ``force``, whenever the head is not yet covered)."""
        head, last, oldest = await self.store.platform_state()
        if head <= last or not (force or self._due(head, last, oldest)):
            return None
        async with self._lock, self.store.locked() as w:
            seq, chain_hash = await w.head()
            return await self._checkpoint_if_due(w, seq, chain_hash, force=force)

    def _due(self, head: int, last: int, oldest_uncovered_ts: float | None) -> bool:
        if head - last >= self.checkpoint_every:
            return True
        return oldest_uncovered_ts is not None and self.clock() - oldest_uncovered_ts >= self.checkpoint_interval_s

    async def _checkpoint_if_due(self, w: AuditWriter, seq: int, chain_hash: bytes, *, force: bool
                                 ) -> Checkpoint | None:
        last = await w.last_checkpoint_seq()
        if seq <= last:
            if not force:
                log.error("the audit log's head (seq %d) is behind its last signed checkpoint (seq %d): entries were "
                          "removed; run `tenantlm audit verify`", seq, last)
            return None
        if not force and not self._due(seq, last, await w.ts_of(last + 1)):
            return None
        cp = Checkpoint(seq=seq, ts=self.clock(), hash=chain_hash, signature=self.signer.sign(seq, chain_hash),
                        key_id=self.signer.key_id)
        await w.insert_checkpoint(cp)
        return cp

    async def list_platform(self, *, after_seq: int = 0, limit: int = 100, action: str | None = None
                            ) -> builtins.list[AuditEntry]:
        """Every entry after global seq ``after_seq``, in the platform chain's order (the operator's view)."""
        return await self.store.list_platform(after_seq=after_seq, limit=limit, action=action)

    async def list_tenant(self, *, tenant_id: str, after_seq: int = 0, limit: int = 100, action: str | None = None
                          ) -> builtins.list[TenantAuditEntry]:
        """The tenant's entries after its own seq ``after_seq``, on its own chain (read in the tenant's scope, so
        Postgres RLS holds too; no platform seq or hash is read)."""
        return await self.store.list_tenant(tenant_id=tenant_id, after_seq=after_seq, limit=limit, action=action)

    async def read(self, *, tenant_id: str | None, after_seq: int = 0, limit: int = 100, action: str | None = None
                   ) -> builtins.list[dict[str, Any]]:
        """Entries as the API shows them: with ``tenant_id``, that tenant's chain (``seq``, ``prev_hash`` and
        ``hash`` are the tenant's own; ``after_seq`` is a tenant seq); without, the platform chain."""
        found: Sequence[AuditEntry | TenantAuditEntry]
        if tenant_id is None:
            found = await self.list_platform(after_seq=after_seq, limit=limit, action=action)
        else:
            found = await self.list_tenant(tenant_id=tenant_id, after_seq=after_seq, limit=limit, action=action)
        return [e.public() for e in found]

    async def export_jsonl(self, *, tenant_id: str | None, after_seq: int = 0, action: str | None = None,
                           batch: int = 500) -> AsyncIterator[bytes]:
        """JSON lines, one entry each, in the shape ``read`` gives (with hex hashes, so that an export can be
        re-verified: a tenant's with ``tenantlm audit verify --export FILE``)."""
        cursor = after_seq
        while True:
            page = await self.read(tenant_id=tenant_id, after_seq=cursor, limit=batch, action=action)
            for item in page:
                yield orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
            if len(page) < batch:
                return
            cursor = page[-1]["seq"]

    async def background_loop(self, *, aggregator: PendingEntries | None = None,
                              every_s: float = 5.0) -> None:
        """Run forever (cancel to stop): time-based checkpoints and the auth-failure aggregate."""
        while True:
            await asyncio.sleep(every_s)
            await self.background_tick(aggregator=aggregator)

    async def background_tick(self, *, aggregator: PendingEntries | None = None, force: bool = False
                              ) -> None:
        """One round of background work; with ``force`` (at shutdown) flush and cover everything pending."""
        if aggregator is not None:
            await _quietly(aggregator.flush(force=force))
        await _quietly(self.maybe_checkpoint(force=force))


def _linked(*, seq: int, prev_hash: bytes, tenant_head: tuple[int, bytes] | None, ts_us: int, actor: str,
            tenant_id: str | None, action: str, request_id: str | None, details: dict[str, Any]) -> AuditEntry:
    """The entry at ``seq`` after ``prev_hash`` on the platform chain and, with a tenant, after ``tenant_head`` (the
    tenant's last seq and hash) on the tenant's chain; the platform hash covers the tenant fields."""
    tenant_seq = tenant_prev = tenant_hash = None
    if tenant_id is not None and tenant_head is not None:
        tenant_seq, tenant_prev = tenant_head[0] + 1, tenant_head[1]
        tenant_hash = tenant_entry_hash(tenant_prev, tenant_id=tenant_id, seq=tenant_seq, ts_us=ts_us, actor=actor,
                                        action=action, request_id=request_id, details=details)
    draft = AuditEntry(seq=seq, ts_us=ts_us, actor=actor, tenant_id=tenant_id, action=action, request_id=request_id,
                       details=details, prev_hash=prev_hash, hash=b"", format_version=FORMAT_VERSION,
                       tenant_seq=tenant_seq, tenant_prev_hash=tenant_prev, tenant_hash=tenant_hash)
    return replace(draft, hash=recompute(draft))


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except Exception:
        log.warning("audit background work failed; will retry", exc_info=True)
