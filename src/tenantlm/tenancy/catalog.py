"""The model catalog as one tenant sees it: the operator's models, narrowed by the tenant's allow-list and
extended by the tenant's aliases (``alias -> catalog name``)."""

from __future__ import annotations

from dataclasses import dataclass

from tenantlm.errors import ModelNotFound
from tenantlm.settings import ModelConfig
from tenantlm.tenancy.models import Tenant


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # the name the tenant used; responses carry this name
    config: ModelConfig


class ModelCatalog:
    def __init__(self, models: list[ModelConfig], *, created_at: int) -> None:
        self._models = {m.name: m for m in models}
        self.created_at = created_at

    def names(self) -> set[str]:
        return set(self._models)

    def _allowed(self, tenant: Tenant, name: str) -> bool:
        return name in self._models and (tenant.allowed_models is None or name in tenant.allowed_models)

    def visible(self, tenant: Tenant) -> list[ResolvedModel]:
        out = [ResolvedModel(n, m) for n, m in self._models.items() if self._allowed(tenant, n)]
        out += [ResolvedModel(alias, self._models[target]) for alias, target in tenant.model_aliases.items()
                if self._allowed(tenant, target) and alias not in self._models]
        return sorted(out, key=lambda r: r.name)

    def resolve(self, tenant: Tenant, name: object) -> ResolvedModel:
        if not isinstance(name, str) or not name:
            raise ModelNotFound("you must provide a model parameter", param="model")
        target = tenant.model_aliases.get(name, name) if name not in self._models else name
        if not self._allowed(tenant, target):
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", param="model")
        return ResolvedModel(name, self._models[target])
