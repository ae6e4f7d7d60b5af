"""The model catalog as one tenant sees it: the operator's models, narrowed by the tenant's allow-list and its
``allowed_regions``, extended by the tenant's aliases (``alias -> catalog name``) and by its own entries (private
models and LoRA adapters, ``tenancy.private_catalog``), which no other tenant can see or name: to another tenant
they answer exactly like a model that does not exist.

Resolution order for a name: an operator's model, the tenant's private model, its adapter, its alias. The model a
name resolves to is then checked against the tenant's regions (``tenancy.residency``); an adapter runs in its base
model's region.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenantlm.errors import ModelNotFound
from tenantlm.settings import ModelConfig
from tenantlm.tenancy.models import Tenant, TenantContext
from tenantlm.tenancy.private_catalog import EMPTY, Adapter, PrivateCatalog, PrivateModel, TenantEntries
from tenantlm.tenancy.residency import AuditSink, Residency, Via, permits


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # the name the tenant used; responses carry this name
    config: ModelConfig
    # The request's residency rule, for the provider router to check each fallback against (None: unchecked).
    residency: Residency | None = None
    capacity: str | None = None  # the model whose scheduler capacity this one uses (an adapter: its base)

    @property
    def pool(self) -> str:
        return self.capacity or self.config.name


def _not_found(name: object) -> ModelNotFound:
    return ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")


def private_config(entry: PrivateModel) -> ModelConfig:
    return ModelConfig(name=entry.name, provider=entry.provider, upstream_model=entry.upstream_model,
                       kind="embedding" if entry.kind == "embedding" else "chat", region=entry.region,
                       input_price_per_1m=entry.input_price_per_1m, output_price_per_1m=entry.output_price_per_1m)


def adapter_config(adapter: Adapter, base: ModelConfig) -> ModelConfig:
    """The adapter as a catalog entry: its base model's provider, region, prices and limits, the upstream model
    being the adapter's lora_name (loaded from ``source`` on first use), and no fallbacks (another model has not got
    the adapter)."""
    return base.model_copy(update={"name": adapter.name, "upstream_model": adapter.lora_name,
                                   "lora_source": adapter.source, "fallbacks": []})


class ModelCatalog:
    def __init__(self, models: list[ModelConfig], *, created_at: int, private: PrivateCatalog | None = None,
                 audit: AuditSink | None = None) -> None:
        self._models = {m.name: m for m in models}
        self.created_at = created_at
        self._private = private
        self._audit = audit

    def names(self) -> set[str]:
        return set(self._models)

    def get(self, name: str) -> ModelConfig | None:
        """An operator's model by name (not narrowed to any tenant)."""
        return self._models.get(name)

    async def entries(self, tenant: Tenant) -> TenantEntries:
        return EMPTY if self._private is None else await self._private.entries(tenant.id)

    def _allowed(self, tenant: Tenant, name: str) -> bool:
        return name in self._models and (tenant.allowed_models is None or name in tenant.allowed_models)

    async def visible(self, tenant: Tenant) -> list[ResolvedModel]:
        """What the tenant may use: every name that would resolve, in a region the tenant allows."""
        entries = await self.entries(tenant)
        names = [*self._models, *entries.models, *entries.adapters, *tenant.model_aliases]
        out: dict[str, ResolvedModel] = {}
        for name in names:
            found = self._lookup(tenant, entries, name)
            if found is not None and name not in out and permits(tenant, found[0]):
                out[name] = ResolvedModel(name, found[0])
        return sorted(out.values(), key=lambda r: r.name)

    async def resolve(self, ctx: TenantContext, name: object) -> ResolvedModel:
        """The model ``name`` means to this tenant: 404 ``model_not_found`` when it means nothing the tenant may
        use, 403 ``region_not_allowed`` (audited) when it is served outside the tenant's regions."""
        if not isinstance(name, str) or not name:
            raise ModelNotFound("you must provide a model parameter", param="model")
        entries = await self.entries(ctx.tenant)
        found = self._lookup(ctx.tenant, entries, name)
        if found is None:
            raise _not_found(name)
        config, via = found
        residency = Residency(ctx=ctx, requested=name, audit=self._audit)
        await residency.check(config, via=via)
        adapter = entries.adapters.get(name) if via == "adapter" else None
        return ResolvedModel(name, config, residency, capacity=None if adapter is None else adapter.base_model)

    def _lookup(self, tenant: Tenant, entries: TenantEntries, name: str) -> tuple[ModelConfig, Via] | None:
        if name in self._models:
            return (self._models[name], "direct") if self._allowed(tenant, name) else None
        if name in entries.models:
            return private_config(entries.models[name]), "private"
        if name in entries.adapters:
            adapter = entries.adapters[name]
            base = self.base(tenant, entries, adapter.base_model)
            return None if base is None else (adapter_config(adapter, base), "adapter")
        target = tenant.model_aliases.get(name)
        if target is not None and self._allowed(tenant, target):
            return self._models[target], "alias"
        return None

    def base(self, tenant: Tenant, entries: TenantEntries, name: str) -> ModelConfig | None:
        """The model an adapter of this tenant runs on: an operator's model it may use, or its private model."""
        if name in self._models:
            return self._models[name] if self._allowed(tenant, name) else None
        entry = entries.models.get(name)
        return None if entry is None else private_config(entry)
