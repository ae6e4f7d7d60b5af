"""Embedding for knowledge: chunk texts at ingestion, queries at search, always as the tenant.

Every call goes through the gate like a request to ``/v1/embeddings``: admitted against the tenant's limits and
budgets, scheduled fairly on the model's capacity (a tenant ingesting ten thousand files queues behind nobody's
chat but its own), metered in the ledger. Ingestion runs under the key id ``key_ingestion`` (no key of the tenant's
issued it); a search runs under the key that asked. Vectors come back as unit-length float32 rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tenantlm.inference.gate import Gate, finishing
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.models import Role, Tenant, TenantContext

INGESTION_KEY_ID = "key_ingestion"


def ingestion_context(tenant: Tenant) -> TenantContext:
    """Who ingestion acts as: the tenant, under a key id of its own (so the bill says what the usage was for)."""
    return TenantContext(tenant=tenant, key_id=INGESTION_KEY_ID, role=Role.MEMBER, permissions=frozenset())


class Embedder:
    def __init__(self, *, catalog: ModelCatalog, providers: ProviderRegistry, gate: Gate, model: str,
                 batch: int = 64) -> None:
        self.catalog = catalog
        self.providers = providers
        self.gate = gate
        self.model = model
        self.batch = batch

    async def embed(self, *, ctx: TenantContext, texts: Sequence[str], end_user: str | None = None) -> np.ndarray:
        """One unit-length row per text, embedded in batches of ``batch``, each batch one passage of the gate."""
        model = await self.catalog.resolve(ctx, self.model)
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch):
            part = list(texts[start:start + self.batch])
            passage = await self.gate.enter(ctx=ctx, model=model, end_user=end_user, prompt=part, max_tokens=0,
                                            output=False)
            async with finishing(passage):
                result = await self.providers.embed(model.config, part, on_attempt=passage.on_attempt,
                                                    prompt_estimate=passage.prompt_estimate,
                                                    residency=model.residency)
            rows.append(np.asarray(result.vectors, dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        matrix = np.vstack(rows)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1.0, norms)
