"""The vector index port: nearest neighbours among the chunks of ONE vector store of ONE tenant.

An index knows nothing of tenants: it holds the vectors of one store, and whoever holds the index (``IndexCache``)
keys it by ``(tenant_id, store_id)``. Ids are the caller's chunk ids (non-negative integers below 2**63); scores are
cosine similarities, higher is better. Every vector is normalised on the way in, so a score is a dot product of unit
vectors.

Filtered search. ``allowed`` restricts the answer to some ids, as a hard predicate applied before ranking: the answer
is the top ``k`` among the allowed ids, never a top ``k`` that was filtered afterwards and came back short. It is
either a predicate ``id -> bool`` or a set of ids (a set lets a selective filter skip looking at every id). The rule
each adapter follows:

1. a set of at most ``IndexPolicy.subset_exact_max`` ids: score exactly those ids (exact answer);
2. the exact adapter: score every vector (one matrix product), then test the predicate best-first until ``k`` pass
   (exact answer);
3. the HNSW adapter: ask the graph for ``oversample * k`` candidates and keep the allowed ones; when fewer than
   ``k`` pass, ask again for twice the candidates needed at the pass rate seen so far. When that would be more than
   ``min(ann_candidates_max, len / scan_ratio)`` (a selective filter), score the allowed ids exactly instead: those
   of the set, or, for a predicate, those among all ids for which it holds (one call per id: a set is cheaper
   there). So a selective filter gets an exact answer and a broad one gets the graph's recall on the allowed ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Hit = tuple[int, float]
"""(chunk id, cosine similarity)"""

Ids = Sequence[int] | npt.NDArray[np.integer[Any]]
Allowed = Callable[[int], bool] | AbstractSet[int]


class VectorIndex(Protocol):
    """One store's vectors. Not thread-safe: the holder serialises calls (``IndexCache`` does, per store)."""

    @property
    def dim(self) -> int | None:
        """Dimensions of the vectors, or None while the index is empty and has never held one."""
        ...

    def add(self, ids: Ids, vectors: npt.NDArray[np.floating[Any]]) -> None:
        """Insert ``vectors`` (shape ``(len(ids), dim)``) under ``ids``; an id already present is replaced."""
        ...

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (unknown ones are ignored); they leave search results at once. Returns how many were present."""
        ...

    def search(self, query: npt.NDArray[np.floating[Any]], k: int, *,
               allowed: Allowed | None = None) -> list[Hit]:
        """The ``k`` nearest ids by cosine similarity, best first (fewer when fewer exist or are allowed)."""
        ...

    def __len__(self) -> int:
        ...

    def memory_bytes(self) -> int:
        """Bytes this index holds (what a memory budget counts)."""
        ...
