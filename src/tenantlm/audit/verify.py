"""Verify the audit log: recompute the platform chain from genesis and check every signed checkpoint and every
tenant chain; or verify one tenant's chain alone, from the database in that tenant's scope or from a tenant's export.

What is found, and where (``first_bad_seq``: a platform seq, or a tenant seq when ``tenant_id`` is set):

- ``edited``: an entry's values no longer give its stored hash (or a later entry's link shows that this one was
  rewritten with a recomputed hash), or its place on its tenant's chain is wrong;
- ``deleted``: a seq is missing (or entries were removed and the rest renumbered);
- ``reordered``: an entry sits where it does not belong: it links to an entry other than its predecessor, or the
  entry that should come next is stored under another seq;
- ``truncated``: a checkpoint signed a seq beyond the current head, or the entry at a checkpoint's seq no longer has
  the signed hash (the tail was cut and the log went on, or it was rewritten);
- ``bad_signature``: a checkpoint's signature does not verify, or names a key the verifier does not have;
- ``malformed``: a line of an export file is not a tenant chain entry.

Entries appended after the last checkpoint and then removed cannot be told from entries never written; the
``checkpoint_interval_s`` bounds that window. Checkpoints are read before the entries, so appends that race the
verifier never look like truncation. A tenant chain alone has no signed checkpoints: it proves that nothing inside it
was edited, removed or moved, while a cut tail or a wholesale rewrite is what the platform verification catches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenantlm.audit.chain import GENESIS, recompute, recompute_tenant
from tenantlm.audit.models import AuditEntry, Checkpoint, TenantAuditEntry
from tenantlm.audit.signer import key_id_of, verify_checkpoint
from tenantlm.audit.store import AuditStore
from tenantlm.storage.sql.engine import Database

PAGE = 1000
# Entries written after a checkpoint carry a later time; this much clock disagreement between replicas is tolerated.
CLOCK_SLACK_S = 0.001

E = TypeVar("E", AuditEntry, TenantAuditEntry)


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    checkpoints: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None
    message: str = ""
    tenant_id: str | None = None  # set when one tenant's chain was verified (then seqs are that tenant's)
    tenant_chains: int = 0  # tenant chains checked along the platform chain

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        what = "audit log" if self.tenant_id is None else f"audit chain of tenant {self.tenant_id}"
        if self.ok:
            return f"{what} intact: {self.message}"
        return f"{what} TAMPERED ({self.problem} at seq {self.first_bad_seq}): {self.message}"


@dataclass(frozen=True)
class _Problem:
    seq: int
    kind: str
    message: str


class _Links(Protocol):
    """Where a broken link is looked up: which stored entry has a hash, which links to one."""

    async def seq_with_hash(self, chain_hash: bytes) -> int | None: ...

    async def seq_with_prev_hash(self, chain_hash: bytes, *, after_seq: int) -> int | None: ...


class _PlatformLinks:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def seq_with_hash(self, chain_hash: bytes) -> int | None:
        return await self.store.platform_seq_with_hash(chain_hash)

    async def seq_with_prev_hash(self, chain_hash: bytes, *, after_seq: int) -> int | None:
        return await self.store.platform_seq_with_prev_hash(chain_hash, after_seq=after_seq)


class _TenantLinks:
    """Lookups in the tenant's own scope: verifying a tenant's chain never reads another tenant's rows."""

    def __init__(self, store: AuditStore, tenant_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id

    async def seq_with_hash(self, chain_hash: bytes) -> int | None:
        return await self.store.tenant_seq_with_hash(chain_hash, tenant_id=self.tenant_id)

    async def seq_with_prev_hash(self, chain_hash: bytes, *, after_seq: int) -> int | None:
        return await self.store.tenant_seq_with_prev_hash(chain_hash, tenant_id=self.tenant_id, after_seq=after_seq)


class _ListLinks:
    """Lookups among entries held in memory (an export file)."""

    def __init__(self, entries: Iterable[TenantAuditEntry]) -> None:
        self.by_hash: dict[bytes, int] = {}
        self.by_prev: dict[bytes, list[int]] = {}
        for e in entries:
            self.by_hash.setdefault(e.hash, e.seq)
            self.by_prev.setdefault(e.prev_hash, []).append(e.seq)

    async def seq_with_hash(self, chain_hash: bytes) -> int | None:
        return self.by_hash.get(chain_hash)

    async def seq_with_prev_hash(self, chain_hash: bytes, *, after_seq: int) -> int | None:
        return min((s for s in self.by_prev.get(chain_hash, []) if s > after_seq), default=None)


class _ChainWalk(Generic[E]):
    """Walks one chain's entries in order: each must carry the next seq, link to the previous hash and match its
    own hash. On a break, ``links`` tells a moved entry from a deleted or rewritten one."""

    def __init__(self, links: _Links, rehash: Callable[[E], bytes]) -> None:
        self.links = links
        self.rehash: Callable[[E], bytes] = rehash
        self.entries = 0
        self.head_seq = 0
        self.head_hash = GENESIS

    async def step(self, e: E) -> _Problem | None:
        expected = self.head_seq + 1
        if e.seq != expected:
            return await self._gap(expected, e.seq)
        if e.prev_hash != self.head_hash:
            return await self._broken_link(e)
        if self.rehash(e) != e.hash:
            return _Problem(e.seq, "edited", f"entry {e.seq} ({e.action}) does not match its hash: its stored "
                            "values were changed")
        self.entries += 1
        self.head_seq, self.head_hash = e.seq, e.hash
        return None

    async def _gap(self, expected: int, found: int) -> _Problem:
        moved = await self.links.seq_with_prev_hash(self.head_hash, after_seq=expected - 1)
        if moved == expected:
            return _Problem(expected, "reordered", f"entry {expected} is out of place: entry {found} comes where "
                            "it should be")
        if moved is not None and moved != found:
            return _Problem(expected, "reordered", f"entry {expected} is missing from its place; the entry that "
                            f"follows {expected - 1} in the chain is stored as seq {moved}")
        if moved == found or found < expected:
            return _Problem(expected, "edited", f"entry {found} comes after entry {expected - 1}: its seq was "
                            "changed")
        gone = f"entry {expected}" if found == expected + 1 else f"entries {expected}..{found - 1}"
        return _Problem(expected, "deleted", f"{gone} deleted: the log jumps from seq {expected - 1} to {found}")

    async def _broken_link(self, e: E) -> _Problem:
        owner = await self.links.seq_with_hash(e.prev_hash)
        if owner is not None:
            return _Problem(e.seq, "reordered", f"entry {e.seq} links to entry {owner}, not to {e.seq - 1}: "
                            "entries were moved")
        if self.rehash(e) != e.hash:
            return _Problem(e.seq, "deleted", f"entry {e.seq} links to an entry that no longer exists and its own "
                            "hash fails: entries before it were deleted and the rest renumbered")
        if e.seq == 1:
            return _Problem(1, "edited", "entry 1 does not start from the genesis hash: it was forged")
        return _Problem(e.seq - 1, "edited", f"entry {e.seq} links to a hash that entry {e.seq - 1} no longer "
                        f"has: entry {e.seq - 1} was rewritten with a recomputed hash")


class _TenantChains:
    """Along the platform chain: every entry with a tenant must take the next place on that tenant's chain."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, bytes]] = {}

    def step(self, e: AuditEntry) -> _Problem | None:
        if e.tenant_id is None:
            if (e.tenant_seq, e.tenant_prev_hash, e.tenant_hash) != (None, None, None):
                return _Problem(e.seq, "edited", f"entry {e.seq} has no tenant but carries tenant chain fields")
            return None
        seq, prev = self.heads.get(e.tenant_id, (0, GENESIS))
        view = e.tenant_view()
        where = f"entry {e.seq} (tenant {e.tenant_id})"
        if view is None:
            return _Problem(e.seq, "edited", f"{where} is not on its tenant's chain: its tenant fields are missing")
        if view.seq != seq + 1:
            return _Problem(e.seq, "edited", f"{where} carries tenant seq {view.seq} where {seq + 1} comes next")
        if view.prev_hash != prev:
            return _Problem(e.seq, "edited", f"{where} does not link to its tenant's entry {seq}")
        if recompute_tenant(view) != view.hash:
            return _Problem(e.seq, "edited", f"{where} does not match its tenant chain hash")
        self.heads[e.tenant_id] = (view.seq, view.hash)
        return None


class _PlatformWalk:
    """The platform chain in seq order, the tenant chains along it, and the entries the checkpoints signed."""

    def __init__(self, store: AuditStore, checkpoint_seqs: set[int]) -> None:
        self.store = store
        self.chain: _ChainWalk[AuditEntry] = _ChainWalk(_PlatformLinks(store), recompute)
        self.tenants = _TenantChains()
        self.want = checkpoint_seqs
        self.at_checkpoint: dict[int, AuditEntry] = {}

    async def run(self) -> _Problem | None:
        cursor = 0
        while True:
            page = await self.store.list_platform(after_seq=cursor, limit=PAGE)
            for entry in page:
                problem = await self.chain.step(entry) or self.tenants.step(entry)
                if problem is not None:
                    return problem
                if entry.seq in self.want:
                    self.at_checkpoint[entry.seq] = entry
            if len(page) < PAGE:
                return None
            cursor = page[-1].seq


async def _check_checkpoints(cps: list[Checkpoint], walk: _PlatformWalk, keys: Mapping[str, Ed25519PublicKey],
                             *, chain_ok: bool) -> _Problem | None:
    previous_good = 0
    head_seq = walk.chain.head_seq
    for cp in cps:
        key = keys.get(cp.key_id)
        if key is None:
            return _Problem(cp.seq, "bad_signature", f"the checkpoint at seq {cp.seq} names key {cp.key_id}, "
                            "which the verifier does not have")
        if not verify_checkpoint(key, seq=cp.seq, chain_hash=cp.hash, signature=cp.signature):
            return _Problem(cp.seq, "bad_signature", f"the checkpoint at seq {cp.seq} has an invalid signature")
        if cp.seq > head_seq:
            if not chain_ok:  # the chain broke before this seq: that problem comes first
                return None
            return _Problem(head_seq + 1, "truncated", f"the log ends at seq {head_seq} but a signed "
                            f"checkpoint covers seq {cp.seq}: entries from {head_seq + 1} on were removed")
        entry = walk.at_checkpoint.get(cp.seq)
        if entry is not None and entry.hash != cp.hash:
            later = await walk.store.platform_first_seq_after_time(
                after_seq=previous_good, up_to_seq=cp.seq, ts=cp.ts + CLOCK_SLACK_S)
            message = (f"entry {cp.seq} no longer has the hash signed for that seq: the entries after seq "
                       f"{previous_good} were replaced (the log was cut and went on, or was rewritten)")
            if later is not None:
                message += f"; seq {later} is the first entry written after that checkpoint"
            return _Problem(previous_good + 1 if later is None else later, "truncated", message)
        previous_good = cp.seq
    return None


async def verify(db: Database, public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> VerifyReport:
    """Recompute the platform chain (platform scope), every tenant chain along it, and check every checkpoint
    against ``public_key`` (or a mapping of key id to public key, for logs signed by more than one key)."""
    keys = {key_id_of(public_key): public_key} if isinstance(public_key, Ed25519PublicKey) else dict(public_key)
    store = AuditStore(db)
    cps = await store.platform_checkpoints()
    walk = _PlatformWalk(store, {cp.seq for cp in cps})
    chain_problem = await walk.run()
    cp_problem = await _check_checkpoints(cps, walk, keys, chain_ok=chain_problem is None)
    found = [p for p in (chain_problem, cp_problem) if p is not None]
    chain, tenants = walk.chain, len(walk.tenants.heads)
    if not found:
        last = cps[-1].seq if cps else 0
        return VerifyReport(ok=True, entries=chain.entries, checkpoints=len(cps), head_seq=chain.head_seq,
                            tenant_chains=tenants,
                            message=f"{chain.entries} entries, {len(cps)} signed checkpoints (last at seq {last}), "
                                    f"{tenants} tenant chains")
    worst = min(found, key=lambda p: p.seq)
    return VerifyReport(ok=False, entries=chain.entries, checkpoints=len(cps), head_seq=chain.head_seq,
                        first_bad_seq=worst.seq, problem=worst.kind, message=worst.message, tenant_chains=tenants)


def _tenant_report(tenant_id: str, walk: _ChainWalk[TenantAuditEntry], problem: _Problem | None) -> VerifyReport:
    if problem is None:
        return VerifyReport(ok=True, entries=walk.entries, checkpoints=0, head_seq=walk.head_seq, tenant_id=tenant_id,
                            message=f"{walk.entries} entries, linked from genesis to seq {walk.head_seq}")
    return VerifyReport(ok=False, entries=walk.entries, checkpoints=0, head_seq=walk.head_seq, tenant_id=tenant_id,
                        first_bad_seq=problem.seq, problem=problem.kind, message=problem.message)


async def verify_tenant(db: Database, *, tenant_id: str) -> VerifyReport:
    """Recompute one tenant's chain from genesis, reading only that tenant's rows in its own scope."""
    store = AuditStore(db)
    walk: _ChainWalk[TenantAuditEntry] = _ChainWalk(_TenantLinks(store, tenant_id), recompute_tenant)
    cursor = 0
    while True:
        page = await store.list_tenant(tenant_id=tenant_id, after_seq=cursor, limit=PAGE)
        for entry in page:
            problem = await walk.step(entry)
            if problem is not None:
                return _tenant_report(tenant_id, walk, problem)
        if len(page) < PAGE:
            return _tenant_report(tenant_id, walk, None)
        cursor = page[-1].seq


class MalformedExport(ValueError):
    """A line of an export file is not an entry of a tenant chain."""


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "tenant_id": ((str,), "a string"), "seq": ((int,), "an integer"), "ts_us": ((int,), "an integer"),
    "actor": ((str,), "a string"), "action": ((str,), "a string"), "prev_hash": ((str,), "a string"),
    "hash": ((str,), "a string"), "request_id": ((str, type(None)), "a string or null"),
}


def _typed(item: dict[str, Any], name: str) -> Any:
    value = item[name]
    kinds, label = _KINDS[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise MalformedExport(f"{name} is not {label}")
    return value


def parse_tenant_line(line: str | bytes) -> TenantAuditEntry:
    """One line of a tenant's audit export (``GET /admin/v1/tenants/{id}/audit/export``, or ``audit.jsonl`` in a
    tenant export archive) as the entry it describes. Values are taken as they are, never converted: what is
    verified is exactly what the line shows."""
    try:
        item = json.loads(line)
        if not isinstance(item, dict) or item.get("chain") != "tenant":
            raise MalformedExport("not a tenant chain entry (a platform export is verified with the database)")
        if not isinstance(item["details"], dict):
            raise MalformedExport("details is not an object")
        return TenantAuditEntry(
            tenant_id=_typed(item, "tenant_id"), seq=_typed(item, "seq"), ts_us=_typed(item, "ts_us"),
            actor=_typed(item, "actor"), action=_typed(item, "action"), request_id=_typed(item, "request_id"),
            details=item["details"], prev_hash=bytes.fromhex(_typed(item, "prev_hash")),
            hash=bytes.fromhex(_typed(item, "hash")))
    except MalformedExport:
        raise
    except (KeyError, ValueError) as exc:
        raise MalformedExport(f"not an audit entry ({exc.__class__.__name__}: {exc})") from None


async def verify_tenant_export(lines: Iterable[str | bytes]) -> VerifyReport:
    """Verify a tenant's chain from its exported JSON lines alone (no database, no key): every ``hash`` recomputed
    and every link checked from genesis, in the order of the file. Verify a full export (no ``after`` or ``action``
    filter): a filtered one has gaps by design."""
    entries: list[TenantAuditEntry] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(parse_tenant_line(line))
        except MalformedExport as exc:
            return VerifyReport(ok=False, entries=0, checkpoints=0, head_seq=0, problem="malformed",
                                message=f"line {n}: {exc}")
    tenants = {e.tenant_id for e in entries}
    if len(tenants) > 1:
        return VerifyReport(ok=False, entries=0, checkpoints=0, head_seq=0, problem="malformed",
                            message=f"the file mixes the entries of {len(tenants)} tenants")
    if not entries:
        return VerifyReport(ok=True, entries=0, checkpoints=0, head_seq=0, message="the file holds no entries")
    tenant_id = tenants.pop()
    walk: _ChainWalk[TenantAuditEntry] = _ChainWalk(_ListLinks(entries), recompute_tenant)
    for entry in entries:
        problem = await walk.step(entry)
        if problem is not None:
            return _tenant_report(tenant_id, walk, problem)
    return _tenant_report(tenant_id, walk, None)
