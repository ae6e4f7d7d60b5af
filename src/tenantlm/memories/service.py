"""Long-term memory per end user: remember facts, recall the ones a turn needs, list, delete, erase, export.

Isolation is structural. Every structure is keyed by ``(tenant_id, end_user)``: the rows (both columns in every
query, row-level security on the tenant), the sealed bytes (record id ``<end user>/<memory id>``, so a row moved to
another person does not open), the vector index (an ``IndexCache`` of its own whose "store" is the end user: the
index of (A, u1) is built from (A, u1)'s rows only and never holds another person's vectors) and the keyword index
(a BM25 index per (tenant, end user) in a bounded cache). A search looks in exactly one person's indexes, so there is
nothing to filter afterwards.

Remembering: a text is deduplicated against what the person already has, first by its normalised form (case folded,
spaces collapsed, punctuation dropped), then by cosine similarity of the embeddings (at least
:data:`DUPLICATE_SIMILARITY`); a duplicate returns the memory already stored. Otherwise the text is embedded as the
tenant (through the gate: admitted, scheduled, metered; under the asking key in a turn, under the key id
``key_memory`` for an admin call), sealed with the tenant's data key, and stored; the person's indexes follow.

Recall: the query's dense ranking (the person's vector index) and its BM25 ranking are fused by weighted reciprocal
rank (``knowledge.fusion``, the weights file search uses by default), the best ``k`` opened and returned. A person
without memories costs one small query and no embedding call.

Replicas: each holds its own indexes; before using one it compares the person's row count and newest time with what
the index was built from (one small query), so a memory added or deleted through another replica is seen at once.
The answer's texts are always read from the database, so an index that is behind can never show a deleted memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tenantlm.cache import TtlCache
from tenantlm.errors import InvalidRequest, NotFound, TenantLMError
from tenantlm.knowledge.fusion import CANDIDATE_DEPTH, HybridWeights, fuse
from tenantlm.knowledge.index.cache import IndexCache
from tenantlm.knowledge.lexical import BM25Index
from tenantlm.memories.extract import extract_facts
from tenantlm.memories.models import (
    Memory,
    check_text,
    index_key,
    long_term_enabled,
    memory_id_of,
    new_memory_id,
)
from tenantlm.memories.store import MemoryRow, MemoryStore
from tenantlm.tenancy.models import Role, Tenant, TenantContext

log = logging.getLogger("tenantlm.memories")
TEXT_KIND, VECTOR_KIND = "memory_text", "memory_vector"
MEMORY_KEY_ID = "key_memory"
DUPLICATE_SIMILARITY = 0.95
LEXICAL_PEOPLE = 1024
RECALL_K = 5
MAX_PER_END_USER = 10_000
LOCK_STRIPES = 64


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


class TextEmbedder(Protocol):
    async def embed(self, *, ctx: TenantContext, texts: Sequence[str], end_user: str | None = None
                    ) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class Remembered:
    memory: Memory
    created: bool  # False: a duplicate of ``memory``, which was already stored


@dataclass
class _People:
    """The keyword side of one person's memories, and each one's normalised text (for deduplication)."""

    bm25: BM25Index[int]
    signature: tuple[int, float]  # of the rows it was built from (``MemoryStore.signature``)
    normalised: dict[str, str] = field(default_factory=dict)  # normalised text -> memory id

    def __len__(self) -> int:
        return len(self.bm25)


def normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


def record_id(end_user: str, memory_id: str) -> str:
    return f"{end_user}/{memory_id}"


class LongTermMemory:
    def __init__(self, *, store: MemoryStore, sealer: Sealer, embedder: TextEmbedder | None,
                 tenant: Callable[[str], Awaitable[Tenant]], index_budget_bytes: int = 64 * 2**20,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sealer = sealer
        self.embedder = embedder
        self.tenant = tenant  # tenant id -> Tenant (for the context an admin call embeds under)
        self.clock = clock
        self.dense = IndexCache(load=self._load_vectors, budget_bytes=index_budget_bytes)
        self.lexical: TtlCache[tuple[str, str], _People] = TtlCache(ttl_s=float("inf"), max_entries=LEXICAL_PEOPLE)
        # striped locks: one person's remembers run one at a time (two turns saying the same thing store it once),
        # in a fixed number of locks whatever the number of people
        self._stripes = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    # --- the indexes ------------------------------------------------------------------------------------------
    async def _load_vectors(self, *, tenant_id: str, store_id: str) -> tuple[list[int], npt.NDArray[np.float32]]:
        end_user = store_id  # this cache's "stores" are the end users of a tenant
        ids: list[int] = []
        rows: list[npt.NDArray[np.float32]] = []
        for row in await self.store.of_end_user(tenant_id=tenant_id, end_user=end_user):
            if row.sealed_vector is None:
                continue
            plain = await self.sealer.open(tenant_id=tenant_id, kind=VECTOR_KIND,
                                           record_id=record_id(end_user, row.id), ciphertext=row.sealed_vector)
            ids.append(index_key(row.id))
            rows.append(np.frombuffer(plain, dtype="<f4"))
        if rows and len({r.shape for r in rows}) > 1:  # the embedding model changed: keep the newest dimension
            dim = rows[-1].shape
            kept = [(i, r) for i, r in zip(ids, rows, strict=True) if r.shape == dim]
            ids, rows = [i for i, _ in kept], [r for _, r in kept]
        return ids, (np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32))

    async def _load_people(self, tenant_id: str, end_user: str) -> _People:
        rows = await self.store.of_end_user(tenant_id=tenant_id, end_user=end_user)
        people = _People(BM25Index(), (len(rows), max((r.created_at for r in rows), default=0.0)))
        for row in rows:
            text = await self._open_text(row)
            people.bm25.add(index_key(row.id), text)
            people.normalised[normalise(text)] = row.id
        return people

    async def _people(self, tenant_id: str, end_user: str) -> _People:
        """The person's keyword index, rebuilt (with their vector index) when their rows changed since it was built,
        on this replica or another one (one small query: ``MemoryStore.signature``)."""
        key = (tenant_id, end_user)
        held = self.lexical.get(key)
        if held is not None and held.signature != await self.store.signature(tenant_id=tenant_id, end_user=end_user):
            self._changed(tenant_id, end_user)
            self.dense.invalidate(tenant_id=tenant_id, store_id=end_user)
        return await self.lexical.get_or_load(key, lambda: self._load_people(tenant_id, end_user))

    def _changed(self, tenant_id: str, end_user: str) -> None:
        self.lexical.evict(lambda key, _p: key == (tenant_id, end_user))

    # --- sealing ----------------------------------------------------------------------------------------------
    async def _open_text(self, row: MemoryRow) -> str:
        plain = await self.sealer.open(tenant_id=row.tenant_id, kind=TEXT_KIND,
                                       record_id=record_id(row.end_user, row.id), ciphertext=row.sealed_text)
        return plain.decode("utf-8")

    async def _memory(self, row: MemoryRow, score: float | None = None) -> Memory:
        return Memory(id=row.id, end_user=row.end_user, text=await self._open_text(row), source=row.source,
                      created_at=row.created_at, score=score)

    async def _context(self, tenant_id: str) -> TenantContext:
        return TenantContext(tenant=await self.tenant(tenant_id), key_id=MEMORY_KEY_ID, role=Role.MEMBER,
                             permissions=frozenset())

    async def _embed(self, ctx: TenantContext, end_user: str, text: str) -> npt.NDArray[np.float32] | None:
        """The text's unit vector, or None without an embedding model (none wired, or the knowledge embedding model
        is not in the catalog or not allowed to the tenant): memory then works on keywords alone."""
        if self.embedder is None:
            return None
        try:
            vectors = await self.embedder.embed(ctx=ctx, texts=[text], end_user=end_user)
        except NotFound:
            return None
        return np.asarray(vectors[0], dtype=np.float32)

    async def _nearest(self, tenant_id: str, end_user: str, vector: npt.NDArray[np.float32], k: int
                       ) -> list[tuple[int, float]]:
        """The person's ``k`` nearest memories; none when the index holds vectors of another embedding model (the
        operator changed it: the index is dropped, and rebuilt from the newest model's vectors on the next use)."""
        try:
            return await self.dense.search(tenant_id=tenant_id, store_id=end_user, query=vector, k=k)
        except ValueError:
            self.dense.invalidate(tenant_id=tenant_id, store_id=end_user)
            return []

    # --- remember ---------------------------------------------------------------------------------------------
    async def remember(self, *, tenant_id: str, end_user: str, text: str, source: str | None,
                       ctx: TenantContext | None = None) -> Remembered:
        """Store one fact about ``end_user`` (or find the one already stored that says the same)."""
        text = check_text(text)
        async with self._stripes[hash((tenant_id, end_user)) % LOCK_STRIPES]:
            return await self._remember(tenant_id, end_user, text, source, ctx)

    async def _remember(self, tenant_id: str, end_user: str, text: str, source: str | None,
                        ctx: TenantContext | None) -> Remembered:
        people = await self._people(tenant_id, end_user)
        same = people.normalised.get(normalise(text))
        if same is not None:
            found = await self.store.some(tenant_id=tenant_id, end_user=end_user, ids=[same])
            if same in found:
                return Remembered(await self._memory(found[same]), created=False)
        if len(people) >= MAX_PER_END_USER:
            raise InvalidRequest(f"an end user holds at most {MAX_PER_END_USER} memories; delete some first",
                                 param="text")
        ctx = ctx or await self._context(tenant_id)
        vector = await self._embed(ctx, end_user, text)
        if vector is not None and len(people):
            near = await self._nearest(tenant_id, end_user, vector, 1)
            if near and near[0][1] >= DUPLICATE_SIMILARITY:
                twin = await self._by_key(tenant_id, end_user, near[0][0])
                if twin is not None:
                    return Remembered(twin, created=False)
        return Remembered(await self._insert(tenant_id, end_user, text, source, vector), created=True)

    async def _by_key(self, tenant_id: str, end_user: str, key: int) -> Memory | None:
        memory_id = memory_id_of(key)
        found = await self.store.some(tenant_id=tenant_id, end_user=end_user, ids=[memory_id])
        return await self._memory(found[memory_id]) if memory_id in found else None

    async def _insert(self, tenant_id: str, end_user: str, text: str, source: str | None,
                      vector: npt.NDArray[np.float32] | None) -> Memory:
        memory_id = new_memory_id()
        rid = record_id(end_user, memory_id)
        sealed_text = await self.sealer.seal(tenant_id=tenant_id, kind=TEXT_KIND, record_id=rid,
                                             plaintext=text.encode("utf-8"))
        sealed_vector = None if vector is None else await self.sealer.seal(
            tenant_id=tenant_id, kind=VECTOR_KIND, record_id=rid, plaintext=vector.astype("<f4").tobytes())
        row = MemoryRow(tenant_id=tenant_id, end_user=end_user, id=memory_id, created_at=self.clock(),
                        source=source, sealed_text=sealed_text, sealed_vector=sealed_vector)
        await self.store.insert(tenant_id=tenant_id, row=row)  # storage first, then the indexes
        self._changed(tenant_id, end_user)
        if vector is not None:
            try:
                await self.dense.add(tenant_id=tenant_id, store_id=end_user, ids=[index_key(memory_id)],
                                     vectors=vector[None, :])
            except ValueError:  # another embedding model's index: rebuilt from storage on the next use
                self.dense.invalidate(tenant_id=tenant_id, store_id=end_user)
        return Memory(id=memory_id, end_user=end_user, text=text, source=source, created_at=row.created_at)

    # --- recall -----------------------------------------------------------------------------------------------
    async def recall(self, *, tenant_id: str, end_user: str, query: str, k: int = RECALL_K,
                     ctx: TenantContext | None = None) -> list[Memory]:
        """The ``k`` memories of ``end_user`` that best match ``query``, best first (hybrid: dense + BM25)."""
        people = await self._people(tenant_id, end_user)
        if not len(people) or not query.strip():
            return []
        lexical = [key for key, _ in people.bm25.search(query, CANDIDATE_DEPTH)]
        dense: list[int] = []
        vector = await self._embed(ctx or await self._context(tenant_id), end_user, query)
        if vector is not None:
            dense = [key for key, _ in await self._nearest(tenant_id, end_user, vector, CANDIDATE_DEPTH)]
        weights = HybridWeights() if vector is not None else HybridWeights.lexical_only()
        fused = fuse(dense=[dense], lexical=[lexical], weights=weights)[:k]
        ids = [memory_id_of(r.id) for r in fused]
        rows = await self.store.some(tenant_id=tenant_id, end_user=end_user, ids=ids)
        return [await self._memory(rows[i], r.score) for i, r in zip(ids, fused, strict=True) if i in rows]

    # --- the admin API ----------------------------------------------------------------------------------------
    async def list_memories(self, *, tenant_id: str, end_user: str) -> list[Memory]:
        """Every memory of ``end_user``, newest first."""
        rows = await self.store.of_end_user(tenant_id=tenant_id, end_user=end_user)
        return [await self._memory(row) for row in reversed(rows)]

    async def delete(self, *, tenant_id: str, end_user: str, memory_id: str) -> None:
        if not await self.store.delete(tenant_id=tenant_id, end_user=end_user, memory_id=memory_id):
            raise NotFound(f"no memory {memory_id!r} for this end user", param="memory_id")
        self._changed(tenant_id, end_user)
        await self.dense.remove(tenant_id=tenant_id, store_id=end_user, ids=[index_key(memory_id)])

    # --- a turn of the Responses API --------------------------------------------------------------------------
    async def before_turn(self, *, ctx: TenantContext, end_user: str | None, query: str | None) -> list[str]:
        """What to tell the model about the end user this turn: the texts of their best memories for ``query``
        (none when the tenant has not turned long-term memory on or the request names no end user)."""
        if end_user is None or not query or not long_term_enabled(ctx.tenant):
            return []
        return [m.text for m in await self.recall(tenant_id=ctx.tenant_id, end_user=end_user, query=query,
                                                  k=RECALL_K, ctx=ctx)]

    async def after_turn(self, *, ctx: TenantContext, end_user: str | None, texts: Sequence[str],
                         source: str) -> int:
        """Remember the facts the extractor finds in the user's messages of a turn; returns how many were new.
        A failure (a limit, an embedding model that is down) is logged, never the turn's error."""
        if end_user is None or not long_term_enabled(ctx.tenant):
            return 0
        created = 0
        try:
            for text in texts:
                for fact in extract_facts(text):
                    remembered = await self.remember(tenant_id=ctx.tenant_id, end_user=end_user, text=fact,
                                                     source=source, ctx=ctx)
                    created += remembered.created
        except TenantLMError as exc:
            log.warning("memories of a turn were not stored: %s", exc.message)
        return created

    # --- erasure, export, key rotation ------------------------------------------------------------------------
    async def forget_sources(self, *, tenant_id: str, sources: Sequence[str]) -> int:
        """Delete the memories written by the given turns (response ids), e.g. when the session they belonged to
        ends; returns how many went."""
        counts = await self.store.delete_sources(tenant_id=tenant_id, sources=sources)
        for end_user in counts:
            self._changed(tenant_id, end_user)
            self.dense.invalidate(tenant_id=tenant_id, store_id=end_user)
        return sum(counts.values())

    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        removed = await self.store.delete_end_user(tenant_id=tenant_id, end_user=end_user)
        self._changed(tenant_id, end_user)
        self.dense.invalidate(tenant_id=tenant_id, store_id=end_user)
        return removed

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> list[dict[str, Any]]:
        return [m.public() for m in reversed(await self.list_memories(tenant_id=tenant_id, end_user=end_user))]

    async def export_tenant(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every memory of every end user of the tenant (the GDPR export of the tenant)."""
        async for page in self.store.pages(tenant_id=tenant_id):
            for row in page:
                yield (await self._memory(row)).public()

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)
        self.dense.drop_tenant(tenant_id=tenant_id)
        self.lexical.evict(lambda key, _p: key[0] == tenant_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal every memory of the tenant under its active data key (after a rotation)."""
        moved = 0
        async for page in self.store.pages(tenant_id=tenant_id):
            for row in page:
                rid = record_id(row.end_user, row.id)
                text = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=TEXT_KIND, record_id=rid,
                                                       ciphertext=row.sealed_text)
                vector = None if row.sealed_vector is None else await self.sealer.rewrap_record(
                    tenant_id=tenant_id, kind=VECTOR_KIND, record_id=rid, ciphertext=row.sealed_vector)
                if text is None and vector is None:
                    continue
                await self.store.replace_sealed(tenant_id=tenant_id, end_user=row.end_user, memory_id=row.id,
                                                sealed_text=text or row.sealed_text,
                                                sealed_vector=vector or row.sealed_vector)
                moved += (text is not None) + (vector is not None)
        return moved


class ConversationResponses(Protocol):
    async def conversation_response_ids(self, *, tenant_id: str, conversation_id: str) -> list[str]: ...


class SessionMemories:
    """What a session's end erases of long-term memory (a ``conversations.service.SessionContent``): the memories
    written by the turns of its conversation (their source is the response id), asked for before those responses are
    erased."""

    def __init__(self, *, memories: LongTermMemory, responses: ConversationResponses) -> None:
        self.memories = memories
        self.responses = responses

    async def session_ended(self, *, tenant_id: str, conversation_id: str) -> None:
        turns = await self.responses.conversation_response_ids(tenant_id=tenant_id, conversation_id=conversation_id)
        if turns:
            await self.memories.forget_sources(tenant_id=tenant_id, sources=turns)
