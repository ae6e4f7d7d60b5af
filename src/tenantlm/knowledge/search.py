"""Search of a tenant's vector store (``POST /v1/vector_stores/{id}/search``): hybrid retrieval, filtered first.

For one store of one tenant — the pair is the key of every structure here, so nothing is ever shared between
tenants or stores:

- the dense side is the store's vector index (``index.cache.IndexCache``: built lazily from the sealed vectors on
  the first search, evicted under a memory budget, so an idle tenant costs no RAM);
- the lexical side is a BM25 index of the chunks' text plus each chunk's file and each file's attributes (built
  with it, kept in a bounded cache: ``LEXICAL_STORES`` stores at most);
- the query strings are embedded as the tenant, under the asking key (admitted, scheduled, metered);
- ``filters`` select every chunk whose file's attributes match; both retrievers rank only those; the rankings are
  fused (``fusion``: weighted reciprocal rank fusion, ``ranking_options.hybrid_search``), then ``score_threshold``
  and ``max_num_results`` cut the list; the texts of the results are opened from the database.

Any change to the store (a file completed, detached or deleted, attributes changed, the store deleted) drops both
indexes of that store at once (``invalidate``), so a deleted file is never found again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tenantlm.cache import TtlCache
from tenantlm.errors import NotFound
from tenantlm.knowledge.embedding import Embedder
from tenantlm.knowledge.files import FilesService
from tenantlm.knowledge.filters import filter_predicate, parse_filter
from tenantlm.knowledge.fusion import (
    CANDIDATE_DEPTH,
    RankingOptions,
    cut,
    fuse,
    parse_max_num_results,
    parse_query,
)
from tenantlm.knowledge.index.cache import IndexCache
from tenantlm.knowledge.lexical import BM25Index
from tenantlm.knowledge.vector_store_store import VectorStoreStore, chunk_record
from tenantlm.knowledge.vector_stores import VectorStoresService
from tenantlm.tenancy.models import TenantContext

LEXICAL_STORES = 256
Attributes = dict[str, str | float | bool] | None


class Opener(Protocol):
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...


@dataclass
class StoreText:
    """The lexical side of one store: BM25 over its chunks, and which file (with its attributes) each chunk is."""

    bm25: BM25Index[int]
    chunk_file: dict[int, str]
    file_attributes: dict[str, Attributes]
    seqs: dict[int, int]


class KnowledgeSearch:
    def __init__(self, *, store: VectorStoreStore, vector_stores: VectorStoresService, files: FilesService,
                 embedder: Embedder, opener: Opener, index_budget_bytes: int) -> None:
        self.store = store
        self.vector_stores = vector_stores
        self.files = files
        self.embedder = embedder
        self.opener = opener
        self.dense = IndexCache(load=self._load_vectors, budget_bytes=index_budget_bytes)
        # No time limit: entries live until their store changes (invalidate) or the size bound pushes them out.
        self.lexical: TtlCache[tuple[str, str], StoreText] = TtlCache(ttl_s=float("inf"),
                                                                      max_entries=LEXICAL_STORES)

    # --- the indexes ------------------------------------------------------------------------------------------
    async def _load_vectors(self, *, tenant_id: str, store_id: str) -> tuple[list[int], npt.NDArray[np.float32]]:
        ids: list[int] = []
        rows: list[npt.NDArray[np.float32]] = []
        async for page in self.store.store_chunks(tenant_id=tenant_id, store_id=store_id):
            for chunk in page:
                plain = await self.opener.open(tenant_id=tenant_id, kind="chunk_vector",
                                               record_id=chunk_record(store_id, chunk.file_id, chunk.seq),
                                               ciphertext=chunk.sealed_vector)
                ids.append(chunk.id)
                rows.append(np.frombuffer(plain, dtype="<f4"))
        return ids, (np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32))

    async def _load_text(self, tenant_id: str, store_id: str) -> StoreText:
        bm25: BM25Index[int] = BM25Index()
        chunk_file: dict[int, str] = {}
        seqs: dict[int, int] = {}
        async for page in self.store.store_chunks(tenant_id=tenant_id, store_id=store_id):
            for chunk in page:
                plain = await self.opener.open(tenant_id=tenant_id, kind="chunk_text",
                                               record_id=chunk_record(store_id, chunk.file_id, chunk.seq),
                                               ciphertext=chunk.sealed_text)
                bm25.add(chunk.id, plain.decode("utf-8"))
                chunk_file[chunk.id] = chunk.file_id
                seqs[chunk.id] = chunk.seq
        attributes = {row.file_id: await self.vector_stores.attributes(row)
                      for row in await self.store.all_files(tenant_id=tenant_id, store_id=store_id)}
        return StoreText(bm25=bm25, chunk_file=chunk_file, file_attributes=attributes, seqs=seqs)

    async def _text(self, tenant_id: str, store_id: str) -> StoreText:
        return await self.lexical.get_or_load((tenant_id, store_id), lambda: self._load_text(tenant_id, store_id))

    def invalidate(self, tenant_id: str, store_id: str) -> None:
        """The store changed: drop both of its indexes (rebuilt on the next search)."""
        self.dense.invalidate(tenant_id=tenant_id, store_id=store_id)
        self.lexical.evict(lambda key, _text: key == (tenant_id, store_id))

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Erasure: nothing of the tenant stays in memory."""
        self.dense.drop_tenant(tenant_id=tenant_id)
        self.lexical.evict(lambda key, _text: key[0] == tenant_id)

    # --- search -----------------------------------------------------------------------------------------------
    async def search(self, *, ctx: TenantContext, store_id: str, body: dict[str, Any],
                     end_user: str | None = None) -> dict[str, Any]:
        queries = parse_query(body.get("query"))
        limit = parse_max_num_results(body.get("max_num_results"))
        ranking = RankingOptions.parse(body.get("ranking_options"))
        filters = parse_filter(body["filters"]) if body.get("filters") is not None else None
        await self.vector_stores.usable_store(tenant_id=ctx.tenant_id, store_id=store_id)
        results = await self.query(ctx=ctx, store_ids=[store_id], queries=queries, ranking=ranking,
                                   filters=filter_predicate(filters), limit=limit, end_user=end_user)
        return {"object": "vector_store.search_results.page", "search_query": queries, "data": results,
                "has_more": False, "next_page": None}

    async def query(self, *, ctx: TenantContext, store_ids: list[str], queries: list[str], ranking: RankingOptions,
                    filters: Callable[[Attributes], bool], limit: int, end_user: str | None = None
                    ) -> list[dict[str, Any]]:
        """The ranked results over one or more stores of the tenant (``file_search`` searches several): one dense
        and one lexical ranking per (store, query string), fused together. A store whose indexes turn out stale
        while the results are read (a ranked id names another chunk or none: a file deleted meanwhile, or the
        tenant moved between tiers, which renumbers chunk ids) is searched once more on fresh indexes."""
        vectors = await self.embedder.embed(ctx=ctx, texts=queries, end_user=end_user) \
            if ranking.hybrid_search.embedding_weight > 0 else None
        results, stale = await self._ranked(ctx.tenant_id, store_ids, queries, vectors, ranking, filters, limit)
        if stale:
            for store_id in stale:
                self.invalidate(ctx.tenant_id, store_id)
            results, _ = await self._ranked(ctx.tenant_id, store_ids, queries, vectors, ranking, filters, limit)
        return results

    async def _ranked(self, tenant_id: str, store_ids: list[str], queries: list[str], vectors: Any,
                      ranking: RankingOptions, filters: Callable[[Attributes], bool], limit: int
                      ) -> tuple[list[dict[str, Any]], set[str]]:
        """The results, and the stores some ranked id of which no longer named the chunk it was indexed for."""
        weights = ranking.hybrid_search
        dense: list[list[tuple[str, int]]] = []
        lexical: list[list[tuple[str, int]]] = []
        texts: dict[str, StoreText] = {}
        for store_id in store_ids:
            text = await self._text(tenant_id, store_id)
            texts[store_id] = text
            allowed = {cid for cid, fid in text.chunk_file.items() if filters(text.file_attributes.get(fid))}
            for i, query in enumerate(queries):
                if vectors is not None:
                    hits = await self.dense.search(tenant_id=tenant_id, store_id=store_id, query=vectors[i],
                                                   k=CANDIDATE_DEPTH, allowed=allowed)
                    dense.append([(store_id, cid) for cid, _ in hits])
                if weights.text_weight > 0:
                    found = text.bm25.search(query, CANDIDATE_DEPTH, allowed=allowed.__contains__)
                    lexical.append([(store_id, cid) for cid, _ in found])
        fused = cut(fuse(dense=dense, lexical=lexical, weights=weights),
                    score_threshold=ranking.score_threshold, max_num_results=limit)
        wanted: dict[str, list[int]] = {}
        for r in fused:
            wanted.setdefault(r.id[0], []).append(r.id[1])
        rows = {store_id: await self.store.chunk_texts(tenant_id=tenant_id, store_id=store_id, ids=ids)
                for store_id, ids in wanted.items()}  # one read per store for all of its results
        results, stale = [], set()
        names: dict[str, str | None] = {}  # file id -> its name, opened once per search (None: the file is gone)
        for r in fused:
            store_id, cid = r.id
            result = await self._result(tenant_id, store_id, cid, r.score, texts[store_id], rows[store_id])
            if result is None:
                stale.add(store_id)
                continue
            file_id = result["file_id"]
            if file_id not in names:
                names[file_id] = await self._filename(tenant_id, file_id)
            if names[file_id] is not None:  # a file deleted while this search ran is not shown
                results.append({**result, "filename": names[file_id]})
        return results, stale

    async def _filename(self, tenant_id: str, file_id: str) -> str | None:
        try:
            return (await self.files.get(tenant_id=tenant_id, file_id=file_id)).filename
        except NotFound:
            return None

    async def _result(self, tenant_id: str, store_id: str, chunk_id: int, score: float, text: StoreText,
                      found: dict[int, tuple[str, int, bytes]]) -> dict[str, Any] | None:
        """A result as OpenAI shapes it; None for a chunk deleted while this search ran (never shown), or whose id
        now names another chunk (ids are renumbered when a tenant moves between tiers, and SQLite may reuse the
        highest id of a deleted chunk)."""
        file_id, seq, sealed = found.get(chunk_id, ("", -1, b""))
        if file_id != text.chunk_file.get(chunk_id) or seq != text.seqs.get(chunk_id):
            return None
        plain = await self.opener.open(tenant_id=tenant_id, kind="chunk_text",
                                       record_id=chunk_record(store_id, file_id, text.seqs[chunk_id]),
                                       ciphertext=sealed)
        return {"file_id": file_id, "filename": None, "score": round(score, 6),
                "attributes": text.file_attributes.get(file_id),
                "content": [{"type": "text", "text": plain.decode("utf-8")}]}

