"""The port behind the response cache: where sealed entries and the semantic index live.

Backends store opaque bytes (already sealed with the tenant's data key by the service) and never see a prompt or an
answer. Every method takes ``tenant_id``: entries, semantic spaces and the end-user index are kept per tenant, and no
method can reach another tenant's data. ``end_user`` is remembered with every entry so that an end user's erasure
finds the entries made from their requests.

Adapters: ``memory.MemoryCacheBackend`` (embedded: bounded LRU with a byte budget) and ``redis_store.RedisCacheBackend``
(scale-out: one key prefix per tenant, TTLs). ``tests/contract/test_respcache_contract.py`` runs on both.
"""

from __future__ import annotations

from typing import Protocol


class CacheUnavailable(Exception):
    """The backend cannot be reached: the request goes on without the cache (a miss that is not stored)."""


class CacheBackend(Protocol):
    """Adapters raise ``CacheUnavailable`` when their storage cannot be reached."""

    async def get(self, *, tenant_id: str, key: str) -> bytes | None:
        """The entry stored under ``key`` for this tenant, or None (absent or expired)."""
        ...

    async def put(self, *, tenant_id: str, key: str, value: bytes, end_user: str | None, ttl_s: float) -> None:
        """Store (or replace) an entry for ``ttl_s`` seconds."""
        ...

    async def add_vector(self, *, tenant_id: str, space: str, key: str, vector: bytes, end_user: str | None,
                         ttl_s: float, max_entries: int) -> None:
        """Index ``vector`` (sealed) for the entry ``key`` in the tenant's semantic ``space``, keeping at most
        ``max_entries`` vectors in that space (others are dropped when it is full)."""
        ...

    async def vectors(self, *, tenant_id: str, space: str) -> list[tuple[str, bytes]]:
        """Every (entry key, sealed vector) of the tenant's semantic ``space``."""
        ...

    async def purge_tenant(self, *, tenant_id: str) -> int:
        """Drop every entry and vector of the tenant; returns how many entries went."""
        ...

    async def purge_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Drop the tenant's entries and vectors made from ``end_user``'s requests; returns how many entries went."""
        ...

    async def aclose(self) -> None: ...
