"""Use cases of a tenant's own catalog entries (``POST|GET|DELETE /admin/v1/tenants/{id}/models|adapters``):
validation, storage, the request path's cache dropped at once, and an audit event for every change.

A private model names a configured provider and the model it serves; it runs in that provider's region (or the
one given, when the provider names none). An adapter names a chat model the tenant may use whose provider loads
LoRA adapters at run time (vLLM, or the embedded llama.cpp model, which checks the adapter file at creation); it
runs in that model's region. Names are the tenant's own: they may not be an operator's catalog model, and one name
is either a private model or an adapter.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from tenantlm.errors import Conflict, InvalidRequest, NotFound
from tenantlm.observability.logging import request_id_var
from tenantlm.settings import Settings
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.models import Tenant
from tenantlm.tenancy.private_catalog import Adapter, PrivateCatalog, PrivateCatalogStore, PrivateModel
from tenantlm.tenancy.residency import AuditSink

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


class Tenants(Protocol):
    async def get_tenant(self, *, tenant_id: str) -> Tenant: ...


class AdapterHost(Protocol):
    """The provider side of adapters (``ProviderRegistry``)."""

    def serves_adapters(self, provider: str) -> bool: ...

    async def check_adapter(self, provider: str, *, source: str, model: str) -> None: ...

    async def forget_adapter(self, provider: str, lora_name: str) -> None: ...


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidRequest("name must be 1-100 letters, digits, '.', '_', ':' or '-', starting with a letter or "
                             "digit", param="name")
    return value


def _check_price(value: Any, param: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e6:
        raise InvalidRequest(f"{param} must be a number of dollars per million tokens, 0 or more", param=param)
    return float(value)


def _check_text(value: Any, param: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidRequest(f"{param} must be a non-empty string of at most {limit} characters", param=param)
    return value


class PrivateCatalogService:
    def __init__(self, *, store: PrivateCatalogStore, cache: PrivateCatalog, catalog: ModelCatalog,
                 settings: Settings, tenants: Tenants, adapters: AdapterHost, audit: AuditSink,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cache = cache
        self.catalog = catalog
        self.settings = settings
        self.tenants = tenants
        self.adapters = adapters
        self.audit = audit
        self.clock = clock

    async def _audit(self, actor: str, action: str, tenant_id: str, **details: Any) -> None:
        await self.audit.append(actor=actor, action=action, tenant_id=tenant_id, request_id=request_id_var.get(),
                                details=details)

    async def _free_name(self, tenant: Tenant, value: Any) -> str:
        name = _check_name(value)
        if self.catalog.get(name) is not None:
            raise Conflict(f"'{name}' is a model of the platform catalog; pick another name", param="name")
        entries = await self.store.entries(tenant_id=tenant.id)
        if name in entries.models or name in entries.adapters:
            raise Conflict(f"this tenant already has a model or adapter named {name!r}", param="name")
        return name

    # --- private models ---------------------------------------------------------------------------------------
    async def create_model(self, *, tenant_id: str, body: dict[str, Any], actor: str) -> PrivateModel:
        tenant = await self.tenants.get_tenant(tenant_id=tenant_id)
        name = await self._free_name(tenant, body.get("name"))
        provider_name = _check_text(body.get("provider"), "provider", 100)
        try:
            provider = self.settings.provider(provider_name)
        except KeyError:
            known = ", ".join(p.name for p in self.settings.providers)
            raise InvalidRequest(f"no provider {provider_name!r}; configured: {known}", param="provider") from None
        kind = body.get("kind", "chat")
        if kind not in ("chat", "embedding"):
            raise InvalidRequest("kind must be 'chat' or 'embedding'", param="kind")
        region = body.get("region")
        if region is not None and provider.region is not None and region != provider.region:
            raise InvalidRequest(f"provider {provider.name!r} runs in region {provider.region!r}, not {region!r}",
                                 param="region")
        model = PrivateModel(tenant_id=tenant_id, name=name, provider=provider.name,
                             upstream_model=_check_text(body.get("upstream_model"), "upstream_model", 200), kind=kind,
                             region=_check_text(region or provider.region or "local", "region", 64),
                             created_at=self.clock(),
                             input_price_per_1m=_check_price(body.get("input_price_per_1m"), "input_price_per_1m"),
                             output_price_per_1m=_check_price(body.get("output_price_per_1m"),
                                                              "output_price_per_1m"))
        await self.store.insert_model(tenant_id=tenant_id, model=model)
        self.cache.invalidate(tenant_id)
        await self._audit(actor, "tenant_model.created", tenant_id, name=name, provider=model.provider,
                          upstream_model=model.upstream_model, kind=kind, region=model.region,
                          input_price_per_1m=model.input_price_per_1m, output_price_per_1m=model.output_price_per_1m)
        return model

    async def list_models(self, *, tenant_id: str) -> list[PrivateModel]:
        await self.tenants.get_tenant(tenant_id=tenant_id)
        entries = await self.store.entries(tenant_id=tenant_id)
        return sorted(entries.models.values(), key=lambda m: m.name)

    async def get_model(self, *, tenant_id: str, name: str) -> PrivateModel:
        model = (await self.store.entries(tenant_id=tenant_id)).models.get(name)
        if model is None:
            raise NotFound(f"no model {name!r}", param="name")
        return model

    async def delete_model(self, *, tenant_id: str, name: str, actor: str) -> PrivateModel:
        model = await self.get_model(tenant_id=tenant_id, name=name)
        users = [a.name for a in (await self.store.entries(tenant_id=tenant_id)).adapters.values()
                 if a.base_model == name]
        if users:
            raise Conflict(f"adapter(s) {', '.join(sorted(users))} run on {name!r}; delete them first", param="name")
        await self.store.delete_model(tenant_id=tenant_id, name=name)
        self.cache.invalidate(tenant_id)
        await self._audit(actor, "tenant_model.deleted", tenant_id, name=name, provider=model.provider,
                          region=model.region)
        return model

    # --- adapters ---------------------------------------------------------------------------------------------
    async def create_adapter(self, *, tenant_id: str, body: dict[str, Any], actor: str) -> Adapter:
        tenant = await self.tenants.get_tenant(tenant_id=tenant_id)
        name = await self._free_name(tenant, body.get("name"))
        base_name = _check_text(body.get("base_model"), "base_model", 100)
        base = self.catalog.base(tenant, await self.store.entries(tenant_id=tenant_id), base_name)
        if base is None or base.kind != "chat":
            raise InvalidRequest(f"base_model {base_name!r} is not a chat model this tenant may use",
                                 param="base_model")
        if not self.adapters.serves_adapters(base.provider):
            raise InvalidRequest(
                f"adapters need a vLLM upstream (an openai_compatible provider started with --enable-lora) or the "
                f"embedded local model; {base_name!r} is served by provider {base.provider!r}, which cannot load "
                "LoRA adapters", param="base_model")
        source = _check_text(body.get("source"), "source", 1000)
        await self.adapters.check_adapter(base.provider, source=source, model=base_name)
        adapter = Adapter(tenant_id=tenant_id, name=name, base_model=base_name, source=source,
                          lora_name=f"{tenant_id}__{name}__{secrets.token_hex(4)}", created_at=self.clock())
        await self.store.insert_adapter(tenant_id=tenant_id, adapter=adapter)
        self.cache.invalidate(tenant_id)
        await self._audit(actor, "adapter.created", tenant_id, name=name, base_model=base_name,
                          source=adapter.source, lora_name=adapter.lora_name, region=base.region)
        return adapter

    async def list_adapters(self, *, tenant_id: str) -> list[Adapter]:
        await self.tenants.get_tenant(tenant_id=tenant_id)
        entries = await self.store.entries(tenant_id=tenant_id)
        return sorted(entries.adapters.values(), key=lambda a: a.name)

    async def get_adapter(self, *, tenant_id: str, name: str) -> Adapter:
        adapter = (await self.store.entries(tenant_id=tenant_id)).adapters.get(name)
        if adapter is None:
            raise NotFound(f"no adapter {name!r}", param="name")
        return adapter

    async def delete_adapter(self, *, tenant_id: str, name: str, actor: str) -> Adapter:
        adapter = await self.get_adapter(tenant_id=tenant_id, name=name)
        await self.store.delete_adapter(tenant_id=tenant_id, name=name)
        self.cache.invalidate(tenant_id)
        shared = self.catalog.get(adapter.base_model)
        private = (await self.store.entries(tenant_id=tenant_id)).models.get(adapter.base_model)
        provider = shared.provider if shared is not None else private.provider if private is not None else None
        if provider is not None:
            await self.adapters.forget_adapter(provider, adapter.lora_name)
        await self._audit(actor, "adapter.deleted", tenant_id, name=name, base_model=adapter.base_model,
                          lora_name=adapter.lora_name)
        return adapter

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)
        self.cache.invalidate(tenant_id)
