"""The embedded index adapters: exact search with numpy for small stores, HNSW (usearch) for large ones.

``new_index`` picks by size (``IndexPolicy.exact_max``, chosen by measurement: see docs/benchmarks.md, "P4: vector
search"). Below it an exact index answers as fast as the graph, costs no build and less memory; above it the graph
keeps a search near a millisecond while exact search grows with the store. ``IndexCache`` moves a store from one
kind to the other in the background when it grows or shrinks past the threshold (``kind_for``).

Both adapters normalise vectors on the way in and score by dot product, so scores are cosine similarities. The rule
for filtered search is in ``port``'s docstring.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tenantlm.knowledge.index._usearch import Index, Matches
from tenantlm.knowledge.index.port import Allowed, Hit, Ids, VectorIndex

Kind = Literal["exact", "hnsw"]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """How indexes are built and searched. Defaults measured with ``bench/p4_search.py`` (384-d vectors)."""

    exact_max: int = 10_000
    """Stores of up to this many vectors are searched exactly; larger ones get an HNSW graph."""
    connectivity: int = 16
    """HNSW M: links a node."""
    expansion_add: int = 64
    """HNSW efConstruction: the build's search width."""
    expansion_search: int = 64
    """HNSW ef: the search width (raised to k when k is larger)."""
    build_threads: int = max(1, (os.cpu_count() or 2) // 2)
    """Threads one HNSW build may use; builds run in the background while searches are served."""
    oversample: int = 4
    """Filtered HNSW search asks the graph for this many candidates per wanted hit to begin with."""
    ann_candidates_max: int = 2048
    """Filtered HNSW search asks the graph for at most this many candidates (and at most one for every
    ``scan_ratio`` vectors) before it scores the allowed ids exactly."""
    scan_ratio: int = 25
    """Measured at 100k x 384: one more graph candidate costs about 5 us, testing one id against a predicate about
    0.2 us; so past n / 25 candidates, testing every id is the cheaper way."""
    subset_exact_max: int = 1024
    """An ``allowed`` set of at most this many ids is scored exactly, without the graph (fetching a vector from the
    graph costs about 4 us: 1,024 of them about as much as asking the graph for 2,048 candidates at 100k)."""


def kind_for(size: int, policy: IndexPolicy, current: Kind | None = None) -> Kind:
    """The kind a store of ``size`` vectors should have. A graph is kept until the store shrinks to half the
    threshold, so a store near the threshold is not rebuilt back and forth."""
    if size > policy.exact_max:
        return "hnsw"
    if current == "hnsw" and size > policy.exact_max // 2:
        return "hnsw"
    return "exact"


def new_index(ids: Ids, vectors: npt.NDArray[np.floating[Any]], *, policy: IndexPolicy,
              kind: Kind | None = None) -> LocalIndex:
    """An index holding ``vectors`` under ``ids``, of ``kind`` (default: the one its size calls for). CPU-bound: run it
    off the event loop for large stores."""
    kind = kind or kind_for(len(ids), policy)
    index: LocalIndex = ExactIndex(policy=policy) if kind == "exact" else HnswIndex(policy=policy)
    index.add(ids, vectors)
    return index


class ExactIndex:
    """Exact cosine search: one matrix-vector product over the store's rows a query.

    Rows are append-only: an add writes past the used rows, a removal only clears a row's ``alive`` flag, and
    compaction or growth copies into new arrays. So the arrays behind a ``snapshot`` never change underneath a reader
    (a background build reads them while the store keeps serving and changing).
    """

    kind: Kind = "exact"

    def __init__(self, *, policy: IndexPolicy, dim: int | None = None) -> None:
        self._policy = policy
        self._dim = dim
        self._rows: F32 = np.empty((0, dim or 0), dtype=np.float32)
        self._ids: I64 = np.empty(0, dtype=np.int64)
        self._alive: npt.NDArray[np.bool_] = np.empty(0, dtype=np.bool_)
        self._used = 0  # rows written (alive or not)
        self._pos: dict[int, int] = {}  # id -> row

    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        return len(self._pos)

    def memory_bytes(self) -> int:
        # the arrays, and the id -> row dict with its int objects (about 64 bytes an entry on CPython)
        return (self._rows.nbytes + self._ids.nbytes + self._alive.nbytes + sys.getsizeof(self._pos)
                + 64 * len(self._pos))

    def add(self, ids: Ids, vectors: npt.NDArray[np.floating[Any]]) -> None:
        keys, unit = checked_batch(ids, vectors, self._dim)
        if not len(keys):
            return
        self._dim = unit.shape[1]
        self.remove(keys.tolist())
        self._reserve(self._used + len(keys))
        start, end = self._used, self._used + len(keys)
        self._rows[start:end] = unit
        self._ids[start:end] = keys
        self._alive[start:end] = True
        self._pos.update(zip(keys.tolist(), range(start, end), strict=True))
        self._used = end

    def remove(self, ids: Iterable[int]) -> int:
        rows = [row for row in (self._pos.pop(int(i), None) for i in ids) if row is not None]
        if rows:
            self._alive[rows] = False
            dead = self._used - len(self._pos)
            if dead > max(1024, len(self._pos)):
                self._compact()
        return len(rows)

    def search(self, query: npt.NDArray[np.floating[Any]], k: int, *, allowed: Allowed | None = None) -> list[Hit]:
        q = checked_query(query, self._dim)
        if k <= 0 or not self._pos:
            return []
        if isinstance(allowed, AbstractSet) and len(allowed) <= self._policy.subset_exact_max:
            return self._search_among(q, k, allowed)
        scores = dot(self._rows[:self._used], q)
        if len(self._pos) < self._used:
            scores[~self._alive[:self._used]] = -np.inf
        if allowed is None:
            best = top_positions(scores, min(k, len(self._pos)))
            return list(zip(self._ids[best].tolist(), scores[best].tolist(), strict=True))
        return self._walk(scores, k, as_predicate(allowed))

    def snapshot(self) -> tuple[I64, F32]:
        """The live ids and their unit vectors, as arrays nobody will write to (views when nothing was removed)."""
        if len(self._pos) == self._used:
            return self._ids[:self._used], self._rows[:self._used]
        live = self._alive[:self._used]
        return self._ids[:self._used][live], self._rows[:self._used][live]

    def _search_among(self, q: F32, k: int, allowed: AbstractSet[int]) -> list[Hit]:
        rows = np.fromiter((r for r in map(self._pos.get, allowed) if r is not None), dtype=np.int64)
        if not len(rows):
            return []
        scores = dot(self._rows[rows], q)
        best = top_positions(scores, min(k, len(rows)))
        return list(zip(self._ids[rows[best]].tolist(), scores[best].tolist(), strict=True))

    def _walk(self, scores: F32, k: int, allowed: Callable[[int], bool]) -> list[Hit]:
        """Test the predicate best-first: on the top ``oversample * k`` rows, then down the full order."""
        window = top_positions(scores, min(self._used, k * self._policy.oversample))
        hits = self._passing(window, scores, allowed, k)
        if len(hits) >= k or len(window) == self._used:
            return hits
        tested = set(window.tolist())
        rest = np.array([r for r in np.argsort(-scores, kind="stable").tolist() if r not in tested], dtype=np.int64)
        return hits + self._passing(rest, scores, allowed, k - len(hits))

    def _passing(self, rows: I64, scores: F32, allowed: Callable[[int], bool], k: int) -> list[Hit]:
        hits: list[Hit] = []
        for key, score in zip(self._ids[rows].tolist(), scores[rows].tolist(), strict=True):
            if score == -math.inf or len(hits) == k:
                break
            if allowed(key):
                hits.append((key, score))
        return hits

    def _reserve(self, size: int) -> None:
        if size <= len(self._ids):
            return
        capacity = max(size, 2 * len(self._ids), 64)
        self._rows = _grown(self._rows, (capacity, self._dim or 0), self._used)
        self._ids = _grown(self._ids, (capacity,), self._used)
        self._alive = _grown(self._alive, (capacity,), self._used)

    def _compact(self) -> None:
        ids, rows = self.snapshot()
        self._ids, self._rows = ids.copy(), rows.copy()
        self._alive = np.ones(len(ids), dtype=np.bool_)
        self._used = len(ids)
        self._pos = dict(zip(ids.tolist(), range(len(ids)), strict=True))


class HnswIndex:
    """Approximate cosine search on an HNSW graph (usearch), vectors stored as float32 inside the graph.

    A removed id is marked deleted in the graph: it never comes back in a result, and its slot is reused by later
    additions.
    """

    kind: Kind = "hnsw"

    def __init__(self, *, policy: IndexPolicy, dim: int | None = None) -> None:
        self._policy = policy
        self._dim = dim
        self._graph: Index | None = None if dim is None else self._new_graph(dim)

    @property
    def dim(self) -> int | None:
        return self._dim

    def __len__(self) -> int:
        return 0 if self._graph is None else len(self._graph)

    def memory_bytes(self) -> int:
        # usearch's own count, which includes arena space reserved ahead (on top of what the process touches)
        return 0 if self._graph is None else int(self._graph.memory_usage)

    def add(self, ids: Ids, vectors: npt.NDArray[np.floating[Any]]) -> None:
        keys, unit = checked_batch(ids, vectors, self._dim)
        if not len(keys):
            return
        graph = self._graph_for(unit.shape[1])
        present = keys[graph.contains(keys)]
        if len(present):
            graph.remove(present)
        graph.add(keys, unit, threads=self._policy.build_threads)

    def remove(self, ids: Iterable[int]) -> int:
        keys = np.fromiter((int(i) for i in ids), dtype=np.int64)
        if self._graph is None or not len(keys):
            return 0
        return int(self._graph.remove(keys))

    def search(self, query: npt.NDArray[np.floating[Any]], k: int, *, allowed: Allowed | None = None) -> list[Hit]:
        q = checked_query(query, self._dim)
        if k <= 0 or not len(self) or self._graph is None:
            return []
        if allowed is None:
            return self._nearest(q, k)
        if isinstance(allowed, AbstractSet) and len(allowed) <= self._policy.subset_exact_max:
            return self._search_among(q, k, _id_array(allowed))
        found = self._from_graph(q, k, as_predicate(allowed))
        if found is not None:
            return found
        # a selective filter: the graph's neighbourhood holds too few allowed ids, so score the allowed ones exactly
        if isinstance(allowed, AbstractSet):
            return self._search_among(q, k, _id_array(allowed))
        assert self._graph is not None
        keys = np.asarray(self._graph.keys).astype(np.int64)
        return self._search_among(q, k, keys[np.fromiter(map(allowed, keys.tolist()), dtype=np.bool_, count=len(keys))])

    def snapshot(self) -> tuple[I64, F32]:
        """The live ids and their unit vectors (copies)."""
        if self._graph is None:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        ids = np.asarray(self._graph.keys).astype(np.int64)
        return ids, self._vectors_of(ids)

    def _from_graph(self, q: F32, k: int, allowed: Callable[[int], bool]) -> list[Hit] | None:
        """The top ``k`` allowed ids among the graph's nearest candidates, asking for more candidates while the pass
        rate seen so far says a bounded number will do; None when it will not (the filter is too selective)."""
        wanted = k * self._policy.oversample
        while True:
            candidates = self._nearest(q, wanted)
            hits = [hit for hit in candidates if allowed(hit[0])]
            if len(hits) >= k or len(candidates) < wanted or len(candidates) >= len(self):
                return hits[:k]
            needed = math.inf if not hits else 2 * k * len(candidates) / len(hits)
            if needed > min(self._policy.ann_candidates_max, len(self) // self._policy.scan_ratio):
                return None
            wanted = int(max(2 * wanted, needed))

    def _nearest(self, q: F32, count: int) -> list[Hit]:
        assert self._graph is not None
        found = self._graph.search(q, count, threads=1)
        assert isinstance(found, Matches)
        return list(zip(found.keys.tolist(), (1.0 - found.distances).tolist(), strict=True))

    def _search_among(self, q: F32, k: int, ids: I64) -> list[Hit]:
        assert self._graph is not None
        ids = ids[self._graph.contains(ids)] if len(ids) else ids
        if not len(ids):
            return []
        scores = dot(self._vectors_of(ids), q)
        best = top_positions(scores, min(k, len(ids)))
        return list(zip(ids[best].tolist(), scores[best].tolist(), strict=True))

    def _vectors_of(self, ids: I64) -> F32:
        assert self._graph is not None and self._dim is not None
        if not len(ids):
            return np.empty((0, self._dim), dtype=np.float32)
        found = self._graph.get(ids, dtype="f32")
        assert isinstance(found, tuple)
        rows = [row for row in found if row is not None]
        assert len(rows) == len(ids), "asked for ids the graph does not hold"
        return np.stack(rows).astype(np.float32, copy=False)

    def _graph_for(self, dim: int) -> Index:
        if self._graph is None:
            self._dim = dim
            self._graph = self._new_graph(dim)
        return self._graph

    def _new_graph(self, dim: int) -> Index:
        p = self._policy
        return Index(ndim=dim, metric="ip", dtype="f32", connectivity=p.connectivity,
                     expansion_add=p.expansion_add, expansion_search=p.expansion_search)


LocalIndex = ExactIndex | HnswIndex


def checked_batch(ids: Ids, vectors: npt.NDArray[np.floating[Any]], dim: int | None) -> tuple[I64, F32]:
    """Ids as int64 (distinct, non-negative) and the vectors as unit float32 rows; ValueError on a bad batch."""
    keys = np.asarray(ids, dtype=np.int64).reshape(-1)
    matrix = np.asarray(vectors, dtype=np.float32)
    if not len(keys) and matrix.size == 0:
        return keys, np.empty((0, dim or 0), dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(keys):
        raise ValueError(f"expected {len(keys)} vectors as a 2-d array, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"expected vectors of {dim} dimensions, got {matrix.shape[1]}")
    if keys.min() < 0:
        raise ValueError("ids must be non-negative")
    if len(np.unique(keys)) != len(keys):
        raise ValueError("ids in one batch must be distinct")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors must be finite")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return keys, np.ascontiguousarray(matrix / norms, dtype=np.float32)


def checked_query(query: npt.NDArray[np.floating[Any]], dim: int | None) -> F32:
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if dim is not None and len(q) != dim:
        raise ValueError(f"expected a query of {dim} dimensions, got {len(q)}")
    if not np.isfinite(q).all():
        raise ValueError("query must be finite")
    norm = float(np.linalg.norm(q))
    return q / norm if norm else q


def top_positions(scores: F32, k: int) -> I64:
    """Positions of the ``k`` highest scores, highest first."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable").astype(np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


def dot(rows: F32, q: F32) -> F32:
    """Row-by-row dot products. ``np.vecdot`` rather than ``rows @ q``: a matrix-vector product goes to the BLAS,
    whose worker threads wake late on a busy machine (p50 8 ms instead of 0.3 ms at 5,000 x 384 when measured on 2
    busy cores); vecdot runs on the calling thread."""
    return np.asarray(np.vecdot(rows, q), dtype=np.float32)


def _id_array(ids: AbstractSet[int]) -> I64:
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


def as_predicate(allowed: Allowed) -> Callable[[int], bool]:
    return allowed.__contains__ if isinstance(allowed, AbstractSet) else allowed


def _grown(array: npt.NDArray[Any], shape: tuple[int, ...], used: int) -> npt.NDArray[Any]:
    grown = np.zeros(shape, dtype=array.dtype)
    if used:
        grown[:used] = array[:used]
    return grown


def as_port(index: LocalIndex) -> VectorIndex:
    """Both adapters satisfy the port (mypy checks this assignment)."""
    return index
