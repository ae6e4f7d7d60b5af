"""The response cache: an exact cache and an opt-in semantic cache, partitioned by tenant by construction.

    probe = await cache.probe(ctx=ctx, model=name, body=body, end_user=user, request=options)
    probe is None            -> not cacheable (or off for this tenant): no header, nothing stored
    probe.record is not None -> a hit: answer from it (the caller admits and meters it)
    otherwise                -> a miss: call the model, then ``await cache.store(probe=probe, body=..., usage=...)``

Partitioned by construction: every key is an HMAC under a secret derived from the tenant's own data key, every
backend call names the tenant, and a semantic lookup scans only the tenant's own space for that request shape (see
``keys``). No entry, key or index is shared, so one tenant's entries cannot answer, or time, another's requests.
Entries and vectors are sealed with the tenant's data key (kind ``response_cache``, the entry key as record id).

Semantic lookups embed the last user message as the tenant (admitted and metered like any embedding). If that
embedding is refused or fails, the request goes on as an exact-only lookup: the cache never turns a request that
would have been served into an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from tenantlm.crypto.errors import DecryptionFailed
from tenantlm.errors import TenantLMError
from tenantlm.providers.base import Usage
from tenantlm.respcache import keys
from tenantlm.respcache.policy import CachePolicy, effective_policy
from tenantlm.respcache.port import CacheBackend, CacheUnavailable
from tenantlm.tenancy.limits_service import Effective
from tenantlm.tenancy.models import Tenant, TenantContext

log = logging.getLogger("tenantlm.respcache")
JSON = dict[str, Any]
KIND = "response_cache"
VECTOR_KIND = "response_cache_vector"
PURPOSE = "response-cache"
HEADER = "x-tenantlm-cache"


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...

    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...

    async def derive_key(self, *, tenant_id: str, purpose: str) -> bytes: ...


class PromptEmbedder(Protocol):
    async def embed(self, *, ctx: TenantContext, texts: list[str], end_user: str | None = None) -> np.ndarray: ...


class PlanLimits(Protocol):
    async def effective(self, tenant: Tenant) -> Effective: ...


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_s: float = 3600.0
    semantic_floor: float = 0.9
    hit_price_factor: float = 0.0
    semantic_max_entries: int = 1000


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What the request itself says: ``x-tenantlm-cache: bypass`` skips the cache (neither read nor written);
    ``x-tenantlm-cache-threshold`` raises the semantic threshold (never lowers it)."""

    bypass: bool = False
    min_similarity: float | None = None


@dataclass(slots=True)
class Probe:
    tenant_id: str
    key: str
    end_user: str | None
    policy: CachePolicy
    record: JSON | None = None  # the stored answer on a hit: {"body": ..., "usage": {...}}
    similarity: float | None = None  # a semantic hit's cosine similarity
    space: str | None = None  # the semantic space to index a new entry in
    vector: np.ndarray | None = None

    @property
    def hit(self) -> bool:
        return self.record is not None

    @property
    def semantic(self) -> bool:
        return self.similarity is not None


class ResponseCache:
    def __init__(self, *, backend: CacheBackend, sealer: Sealer, limits: PlanLimits,
                 embedder: PromptEmbedder | None = None, config: CacheConfig | None = None) -> None:
        self.backend = backend
        self.sealer = sealer
        self.limits = limits
        self.embedder = embedder
        self.config = config or CacheConfig()

    async def policy(self, tenant: Tenant) -> CachePolicy:
        plan = (await self.limits.effective(tenant)).tenant.cache
        return effective_policy(plan, tenant.settings)

    def threshold(self, policy: CachePolicy, request: CacheRequest) -> float:
        return max(self.config.semantic_floor, policy.semantic_threshold, request.min_similarity or 0.0)

    # --- the request path -------------------------------------------------------------------------------------
    async def probe(self, *, ctx: TenantContext, model: str, body: JSON, end_user: str | None,
                    request: CacheRequest) -> Probe | None:
        if request.bypass or not keys.cacheable(body):
            return None
        policy = await self.policy(ctx.tenant)
        if not policy.enabled:
            return None
        tid = ctx.tenant_id
        secret = await self.sealer.derive_key(tenant_id=tid, purpose=PURPOSE)
        partition = end_user if policy.personal else None
        normal = keys.normalised(body, model)
        probe = Probe(tid, keys.entry_key(secret, tenant_id=tid, partition=partition, request=normal), end_user,
                      policy)
        try:
            if policy.exact:
                probe.record = await self._read(tid, probe.key)
            if probe.record is None and policy.semantic:
                await self._semantic(ctx, probe, secret, partition, normal, self.threshold(policy, request))
        except CacheUnavailable as exc:
            log.warning("response cache unavailable, request served without it: %s", exc)
            return None
        return probe

    async def store(self, *, probe: Probe, body: JSON, usage: Usage) -> None:
        """Keep a miss's answer (and index it for the semantic cache when the tenant uses it); called before the
        answer is sent, so the client's next request finds it. A backend that cannot be reached is logged, never
        raised: the answer is served either way."""
        try:
            await self._store(probe, body, usage)
        except CacheUnavailable as exc:
            log.warning("response cache unavailable, answer not stored: %s", exc)

    async def _store(self, probe: Probe, body: JSON, usage: Usage) -> None:
        record = orjson.dumps({"body": body, "usage": {"prompt_tokens": usage.prompt_tokens,
                                                       "completion_tokens": usage.completion_tokens}})
        tid, cfg = probe.tenant_id, self.config
        sealed = await self.sealer.seal(tenant_id=tid, kind=KIND, record_id=probe.key, plaintext=record)
        await self.backend.put(tenant_id=tid, key=probe.key, value=sealed, end_user=probe.end_user, ttl_s=cfg.ttl_s)
        if probe.space is not None and probe.vector is not None:
            vector = await self.sealer.seal(tenant_id=tid, kind=VECTOR_KIND, record_id=f"{probe.space}:{probe.key}",
                                            plaintext=probe.vector.astype("<f4").tobytes())
            await self.backend.add_vector(tenant_id=tid, space=probe.space, key=probe.key, vector=vector,
                                          end_user=probe.end_user, ttl_s=cfg.ttl_s,
                                          max_entries=cfg.semantic_max_entries)

    def answer(self, probe: Probe, *, model: str, completion_id: str, prompt_tokens: int) -> JSON:
        """The stored answer as this request's reply: its own id, time and model name; usage says every prompt
        token came from the cache."""
        assert probe.record is not None
        completion = int(probe.record["usage"]["completion_tokens"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion,
                 "prompt_tokens_details": {"cached_tokens": prompt_tokens}}
        return {**probe.record["body"], "id": completion_id, "created": int(time.time()), "model": model,
                "usage": usage}

    # --- erasure ----------------------------------------------------------------------------------------------
    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.backend.purge_tenant(tenant_id=tenant_id)

    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Drop the entries made from ``end_user``'s requests (personal or not); returns how many."""
        return await self.backend.purge_end_user(tenant_id=tenant_id, end_user=end_user)

    async def aclose(self) -> None:
        await self.backend.aclose()

    # --- internals --------------------------------------------------------------------------------------------
    async def _read(self, tenant_id: str, key: str) -> JSON | None:
        sealed = await self.backend.get(tenant_id=tenant_id, key=key)
        if sealed is None:
            return None
        plain = await self._open(tenant_id, KIND, key, sealed)
        record: JSON | None = None if plain is None else orjson.loads(plain)
        return record

    async def _open(self, tenant_id: str, kind: str, record_id: str, sealed: bytes) -> bytes | None:
        """The entry's plaintext, or None when it cannot be opened any more (sealed under a data-key version
        dropped since, as after a rotation another replica has not noticed yet): a miss, not an error."""
        try:
            return await self.sealer.open(tenant_id=tenant_id, kind=kind, record_id=record_id, ciphertext=sealed)
        except DecryptionFailed:
            log.warning("a response-cache entry could not be opened; treated as a miss")
            return None

    async def _semantic(self, ctx: TenantContext, probe: Probe, secret: bytes, partition: str | None,
                        normal: JSON, threshold: float) -> None:
        text = keys.semantic_text(normal)
        if text is None or self.embedder is None:
            return
        try:
            query = (await self.embedder.embed(ctx=ctx, texts=[text], end_user=probe.end_user))[0]
        except TenantLMError as exc:
            log.info("semantic cache lookup skipped: %s", exc.code or type(exc).__name__)
            return
        space = keys.space_key(secret, tenant_id=probe.tenant_id, partition=partition, request=normal)
        probe.space, probe.vector = space, query
        key, score = await self._nearest(probe.tenant_id, space, query)
        if key is None or score < threshold:
            return
        probe.record = await self._read(probe.tenant_id, key)
        if probe.record is not None:
            probe.similarity = score

    async def _nearest(self, tenant_id: str, space: str, query: np.ndarray) -> tuple[str | None, float]:
        best: tuple[str | None, float] = (None, -1.0)
        for key, sealed in await self.backend.vectors(tenant_id=tenant_id, space=space):
            plain = await self._open(tenant_id, VECTOR_KIND, f"{space}:{key}", sealed)
            if plain is None:
                continue
            vector = np.frombuffer(plain, dtype="<f4")
            if vector.shape != query.shape:
                continue
            score = float(np.dot(vector, query))
            if score > best[1]:
                best = (key, score)
        return best
