"""Verify the stored audit log: recompute the chain from genesis and check every signed checkpoint.

What is found, and where (``first_bad_seq``):

- ``edited``: an entry's values no longer give its stored hash (or a later entry's link shows that this one was
  rewritten with a recomputed hash);
- ``deleted``: a seq is missing (or entries were removed and the rest renumbered);
- ``reordered``: an entry sits where it does not belong: it links to an entry other than its predecessor, or the
  entry that should come next is stored under another seq;
- ``truncated``: a checkpoint signed a seq beyond the current head, or the entry at a checkpoint's seq no longer has
  the signed hash (the tail was cut and the log went on, or it was rewritten);
- ``bad_signature``: a checkpoint's signature does not verify, or names a key the verifier does not have.

Entries appended after the last checkpoint and then removed cannot be told from entries never written; the
``checkpoint_interval_s`` bounds that window. Checkpoints are read before the entries, so appends that race the
verifier never look like truncation.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tenantlm.audit.chain import GENESIS, recompute
from tenantlm.audit.models import AuditEntry, Checkpoint
from tenantlm.audit.signer import key_id_of, load_public_keys, verify_checkpoint
from tenantlm.audit.store import AuditStore
from tenantlm.storage.sql.engine import Database

PAGE = 1000
# Entries written after a checkpoint carry a later time; this much clock disagreement between replicas is tolerated.
CLOCK_SLACK_S = 0.001


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    checkpoints: int
    head_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if self.ok:
            return f"audit log intact: {self.message}"
        return f"audit log TAMPERED ({self.problem} at seq {self.first_bad_seq}): {self.message}"


@dataclass(frozen=True)
class _Problem:
    seq: int
    kind: str
    message: str


class _ChainWalk:
    """Walks the entries in seq order, keeping the stored hashes the checkpoints are compared with."""

    def __init__(self, store: AuditStore, checkpoint_seqs: set[int]) -> None:
        self.store = store
        self.want = checkpoint_seqs
        self.at_checkpoint: dict[int, AuditEntry] = {}
        self.entries = 0
        self.head_seq = 0
        self.head_hash = GENESIS

    async def run(self) -> _Problem | None:
        cursor = 0
        while True:
            page = await self.store.list_entries(tenant_id=None, after_seq=cursor, limit=PAGE)
            for entry in page:
                problem = await self._step(entry)
                if problem is not None:
                    return problem
            if len(page) < PAGE:
                return None
            cursor = page[-1].seq

    async def _step(self, e: AuditEntry) -> _Problem | None:
        expected = self.head_seq + 1
        if e.seq != expected:
            return await self._gap(expected, e.seq)
        if e.prev_hash != self.head_hash:
            return await self._broken_link(e)
        if recompute(e) != e.hash:
            return _Problem(e.seq, "edited", f"entry {e.seq} ({e.action}) does not match its hash: its stored "
                            "values were changed")
        self.entries += 1
        self.head_seq, self.head_hash = e.seq, e.hash
        if e.seq in self.want:
            self.at_checkpoint[e.seq] = e
        return None

    async def _gap(self, expected: int, found: int) -> _Problem:
        moved = await self.store.platform_seq_with_prev_hash(self.head_hash, after_seq=found - 1)
        if moved is not None:
            return _Problem(expected, "reordered", f"entry {expected} is missing from its place; the entry that "
                            f"follows {expected - 1} in the chain is stored as seq {moved}")
        gone = f"entry {expected}" if found == expected + 1 else f"entries {expected}..{found - 1}"
        return _Problem(expected, "deleted", f"{gone} deleted: the log jumps from seq {expected - 1} to {found}")

    async def _broken_link(self, e: AuditEntry) -> _Problem:
        owner = await self.store.platform_seq_with_hash(e.prev_hash)
        if owner is not None:
            return _Problem(e.seq, "reordered", f"entry {e.seq} links to entry {owner}, not to {e.seq - 1}: "
                            "entries were moved")
        if recompute(e) != e.hash:
            return _Problem(e.seq, "deleted", f"entry {e.seq} links to an entry that no longer exists and its own "
                            "hash fails: entries before it were deleted and the rest renumbered")
        if e.seq == 1:
            return _Problem(1, "edited", "entry 1 does not start from the genesis hash: it was forged")
        return _Problem(e.seq - 1, "edited", f"entry {e.seq} links to a hash that entry {e.seq - 1} no longer "
                        f"has: entry {e.seq - 1} was rewritten with a recomputed hash")


async def _check_checkpoints(cps: list[Checkpoint], walk: _ChainWalk, keys: Mapping[str, Ed25519PublicKey],
                             *, chain_ok: bool) -> _Problem | None:
    previous_good = 0
    for cp in cps:
        key = keys.get(cp.key_id)
        if key is None:
            return _Problem(cp.seq, "bad_signature", f"the checkpoint at seq {cp.seq} names key {cp.key_id}, "
                            "which the verifier does not have")
        if not verify_checkpoint(key, seq=cp.seq, chain_hash=cp.hash, signature=cp.signature):
            return _Problem(cp.seq, "bad_signature", f"the checkpoint at seq {cp.seq} has an invalid signature")
        if cp.seq > walk.head_seq:
            if not chain_ok:  # the chain broke before this seq: that problem comes first
                return None
            return _Problem(walk.head_seq + 1, "truncated", f"the log ends at seq {walk.head_seq} but a signed "
                            f"checkpoint covers seq {cp.seq}: entries from {walk.head_seq + 1} on were removed")
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
    """Recompute the whole chain (platform scope) and check every checkpoint against ``public_key`` (or a mapping of
    key id to public key, for logs signed by more than one key)."""
    keys = {key_id_of(public_key): public_key} if isinstance(public_key, Ed25519PublicKey) else dict(public_key)
    store = AuditStore(db)
    cps = await store.platform_checkpoints()
    walk = _ChainWalk(store, {cp.seq for cp in cps})
    chain_problem = await walk.run()
    cp_problem = await _check_checkpoints(cps, walk, keys, chain_ok=chain_problem is None)
    found = [p for p in (chain_problem, cp_problem) if p is not None]
    if not found:
        last = cps[-1].seq if cps else 0
        return VerifyReport(ok=True, entries=walk.entries, checkpoints=len(cps), head_seq=walk.head_seq,
                            message=f"{walk.entries} entries, {len(cps)} signed checkpoints (last at seq {last})")
    worst = min(found, key=lambda p: p.seq)
    return VerifyReport(ok=False, entries=walk.entries, checkpoints=len(cps), head_seq=walk.head_seq,
                        first_bad_seq=worst.seq, problem=worst.kind, message=worst.message)


def run_verify_cli(*, database_url: str, data_dir: Path, as_json: bool) -> int:
    """``tenantlm audit verify``: 0 intact, 1 tampered, 2 usage or setup error. Prints one line, or JSON."""
    keys = load_public_keys(data_dir) if data_dir.is_dir() else {}
    if not keys:
        return _setup_error(f"no audit public key (audit_signing.pub) in {data_dir}", as_json)
    sqlite_file = _sqlite_path(database_url)
    if sqlite_file is not None and not sqlite_file.is_file():
        return _setup_error(f"no database at {sqlite_file}", as_json)
    try:
        report = asyncio.run(_verify_url(database_url, keys))
    except Exception as exc:
        return _setup_error(f"cannot read the audit log: {exc.__class__.__name__}: {_first_line(exc)}", as_json)
    sys.stdout.write((json.dumps(report.to_dict(), sort_keys=True) if as_json else report.line()) + "\n")
    return 0 if report.ok else 1


async def _verify_url(url: str, keys: Mapping[str, Ed25519PublicKey]) -> VerifyReport:
    db = Database.from_url(url)
    try:
        return await verify(db, keys)
    finally:
        await db.dispose()


def _sqlite_path(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _setup_error(message: str, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(json.dumps({"ok": None, "error": message}) + "\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    return 2
