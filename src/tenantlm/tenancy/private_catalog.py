"""A tenant's own catalog entries, stored tenant-scoped (row-level security on Postgres): private models (a
deployment only that tenant sees) and LoRA adapters on a base model's vLLM upstream.

``TenantEntries`` is what the catalog reads on the request path, loaded once per tenant into a short-lived cache
(``PrivateCatalog``) and dropped there at once when this replica changes it (other replicas within the TTL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tenantlm.cache import TtlCache
from tenantlm.errors import Conflict
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import tenant_adapters, tenant_models


@dataclass(frozen=True, slots=True)
class PrivateModel:
    tenant_id: str
    name: str
    provider: str
    upstream_model: str
    kind: str
    region: str
    created_at: float
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"id": self.name, "object": "tenant.model", "tenant_id": self.tenant_id, "provider": self.provider,
                "upstream_model": self.upstream_model, "kind": self.kind, "region": self.region,
                "input_price_per_1m": self.input_price_per_1m, "output_price_per_1m": self.output_price_per_1m,
                "created_at": int(self.created_at)}


@dataclass(frozen=True, slots=True)
class Adapter:
    tenant_id: str
    name: str
    base_model: str
    source: str
    lora_name: str  # the name the upstream knows it by: unique per tenant and per creation
    created_at: float

    def public(self) -> dict[str, Any]:
        return {"id": self.name, "object": "tenant.adapter", "tenant_id": self.tenant_id,
                "base_model": self.base_model, "source": self.source, "lora_name": self.lora_name,
                "created_at": int(self.created_at)}


@dataclass(frozen=True, slots=True)
class TenantEntries:
    models: dict[str, PrivateModel] = field(default_factory=dict)
    adapters: dict[str, Adapter] = field(default_factory=dict)


EMPTY = TenantEntries()


def _model(row: Any) -> PrivateModel:
    return PrivateModel(tenant_id=row.tenant_id, name=row.name, provider=row.provider,
                        upstream_model=row.upstream_model, kind=row.kind, region=row.region,
                        created_at=row.created_at, input_price_per_1m=row.input_price_per_1m,
                        output_price_per_1m=row.output_price_per_1m)


def _adapter(row: Any) -> Adapter:
    return Adapter(tenant_id=row.tenant_id, name=row.name, base_model=row.base_model, source=row.source,
                   lora_name=row.lora_name, created_at=row.created_at)


class PrivateCatalogStore:
    """Every method takes ``tenant_id`` and scopes each query by it, inside ``tenant_tx``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def entries(self, *, tenant_id: str) -> TenantEntries:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            models = await conn.execute(sa.select(tenant_models).where(tenant_models.c.tenant_id == tenant_id))
            adapters = await conn.execute(sa.select(tenant_adapters).where(tenant_adapters.c.tenant_id == tenant_id))
            return TenantEntries(models={r.name: _model(r) for r in models},
                                 adapters={r.name: _adapter(r) for r in adapters})

    async def insert_model(self, *, tenant_id: str, model: PrivateModel) -> None:
        assert model.tenant_id == tenant_id
        await self._insert(tenant_id, tenant_models.insert().values(
            tenant_id=tenant_id, name=model.name, provider=model.provider, upstream_model=model.upstream_model,
            kind=model.kind, region=model.region, created_at=model.created_at,
            input_price_per_1m=model.input_price_per_1m, output_price_per_1m=model.output_price_per_1m), model.name)

    async def insert_adapter(self, *, tenant_id: str, adapter: Adapter) -> None:
        assert adapter.tenant_id == tenant_id
        await self._insert(tenant_id, tenant_adapters.insert().values(
            tenant_id=tenant_id, name=adapter.name, base_model=adapter.base_model, source=adapter.source,
            lora_name=adapter.lora_name, created_at=adapter.created_at), adapter.name)

    async def _insert(self, tenant_id: str, stmt: Any, name: str) -> None:
        try:
            async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
                await conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"this tenant already has a model or adapter named {name!r}", param="name") from exc

    async def delete_model(self, *, tenant_id: str, name: str) -> bool:
        cond = sa.and_(tenant_models.c.tenant_id == tenant_id, tenant_models.c.name == name)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return bool((await conn.execute(tenant_models.delete().where(cond))).rowcount)

    async def delete_adapter(self, *, tenant_id: str, name: str) -> bool:
        cond = sa.and_(tenant_adapters.c.tenant_id == tenant_id, tenant_adapters.c.name == name)
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            return bool((await conn.execute(tenant_adapters.delete().where(cond))).rowcount)

    async def forget_tenant(self, *, tenant_id: str) -> None:
        async with self.db.tenant_tx(tenant_id=tenant_id) as conn:
            await conn.execute(tenant_adapters.delete().where(tenant_adapters.c.tenant_id == tenant_id))
            await conn.execute(tenant_models.delete().where(tenant_models.c.tenant_id == tenant_id))


class PrivateCatalog:
    """The tenant's entries for the request path: one read per tenant per ``ttl_s`` (single-flight, bounded)."""

    def __init__(self, *, store: PrivateCatalogStore, ttl_s: float, max_entries: int = 100_000) -> None:
        self.store = store
        self._cache: TtlCache[str, TenantEntries] = TtlCache(ttl_s=ttl_s, max_entries=max_entries)

    async def entries(self, tenant_id: str) -> TenantEntries:
        return await self._cache.get_or_load(tenant_id, lambda: self.store.entries(tenant_id=tenant_id))

    def invalidate(self, tenant_id: str) -> None:
        self._cache.evict(lambda key, _value: key == tenant_id)
