"""The vector index port and its embedded adapter.

- ``port``: :class:`VectorIndex`, nearest neighbours among the chunks of one store of one tenant (cosine, filtered
  search as a hard predicate; the rule is in its docstring).
- ``local``: the adapters, :class:`ExactIndex` (numpy, stores up to ``IndexPolicy.exact_max`` chunks) and
  :class:`HnswIndex` (usearch), and :class:`IndexPolicy` with the measured defaults.
- ``cache``: :class:`IndexCache`, one index per ``(tenant_id, store_id)``, loaded on first search from the store's
  sealed vectors, evicted under a memory budget, changed in place by ingestion and deletion.

Numbers behind the choices: docs/benchmarks.md, "P4: vector search".
"""

from tenantlm.knowledge.index.cache import IndexBuilder, IndexCache, IndexCacheStats, IndexLoader
from tenantlm.knowledge.index.local import ExactIndex, HnswIndex, IndexPolicy, kind_for, new_index
from tenantlm.knowledge.index.port import Allowed, Hit, Ids, VectorIndex

__all__ = [
    "Allowed",
    "ExactIndex",
    "Hit",
    "HnswIndex",
    "Ids",
    "IndexBuilder",
    "IndexCache",
    "IndexCacheStats",
    "IndexLoader",
    "IndexPolicy",
    "VectorIndex",
    "kind_for",
    "new_index",
]
