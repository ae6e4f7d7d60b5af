"""The response cache in a real app (in-process, SQLite, the real keyring, the deterministic fake model and fake
embedder): partitioned per tenant for exact and semantic lookups, keys that follow the tenant's data key, erasure
of a tenant and of an end user, the hit price, a backend that fails, and the paths that never use the cache."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tenantlm.app import TenantLMApp, create_app
from tenantlm.inference.service import Reply
from tenantlm.respcache.memory import MemoryCacheBackend
from tenantlm.respcache.port import CacheUnavailable
from tenantlm.respcache.service import HEADER, CacheRequest
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.models import TenantContext

ASK = CacheRequest()


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        data_dir=tmp_path, warmup=False, access_log=False, cache_embedding_model="embed",
        providers=[ProviderConfig(name="fake", type="fake", tokens=6)],
        models=[ModelConfig(name="chat", provider="fake", input_price_per_1m=1.0, output_price_per_1m=2.0),
                ModelConfig(name="embed", provider="fake", kind="embedding", dimensions=8)], **kw)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    application = create_app(make_settings(tmp_path))
    async with application.router.lifespan_context(application):
        yield application


def services(app: TenantLMApp) -> Services:
    svc: Services = app.state.services
    return svc


def backend(app: TenantLMApp) -> MemoryCacheBackend:
    store = services(app).cache.backend
    assert isinstance(store, MemoryCacheBackend)
    return store


async def member(app: TenantLMApp, cache: dict[str, Any] | None, **fields: Any) -> TenantContext:
    svc = services(app)
    settings = {"cache": cache} if cache is not None else {}
    name = f"t-{uuid.uuid4().hex[:8]}"
    tenant = await svc.tenancy.create_tenant({"name": name, "settings": settings, **fields}, actor="test")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="test")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    return ctx


async def chat(app: TenantLMApp, ctx: TenantContext, text: str, *, user: str | None = None,
               cache: CacheRequest | None = ASK, **body: Any) -> Reply:
    return await services(app).inference.chat(
        ctx=ctx, body={"model": "chat", "messages": [{"role": "user", "content": text}], **body},
        end_user_header=user, cache=cache)


async def test_exact_entries_are_never_shared_between_tenants(app: TenantLMApp) -> None:
    a, b = await member(app, {"exact": True}), await member(app, {"exact": True})
    assert (await chat(app, a, "same prompt")).headers[HEADER] == "miss"
    assert (await chat(app, a, "same prompt")).headers[HEADER] == "hit"
    assert (await chat(app, b, "same prompt")).headers[HEADER] == "miss"
    assert {slot[0] for slot in backend(app)._items} == {a.tenant_id, b.tenant_id}
    assert len(backend(app)) == 2  # one entry each, never one shared
    metrics = services(app).metrics.render().decode()
    assert f'tenantlm_cache_lookups_total{{model="chat",result="hit",tenant="{a.tenant_id}"}} 1.0' in metrics
    assert f'tenantlm_cache_lookups_total{{model="chat",result="miss",tenant="{b.tenant_id}"}} 1.0' in metrics


async def test_semantic_lookups_scan_only_the_tenants_own_space(app: TenantLMApp) -> None:
    a = await member(app, {"semantic": True, "semantic_threshold": 0.9})
    b = await member(app, {"semantic": True, "semantic_threshold": 0.9})
    await chat(app, a, "how do I reset my password")
    hit = await chat(app, a, "how do I reset my password")  # the fake embedder: same text, same vector
    assert hit.headers[HEADER] == "hit" and float(hit.headers[HEADER + "-similarity"]) > 0.999
    # B's embedding of the same text is identical (cosine 1.0 against A's vector), and still a miss
    assert (await chat(app, b, "how do I reset my password")).headers[HEADER] == "miss"
    spaces = {key[0] for key in backend(app)._spaces}
    assert spaces == {a.tenant_id, b.tenant_id}


async def test_semantic_threshold_floor_and_request(app: TenantLMApp) -> None:
    cache = services(app).cache
    policy = await cache.policy((await member(app, {"semantic": True, "semantic_threshold": 0.5})).tenant)
    assert cache.threshold(policy, ASK) == 0.9  # the operator's floor (cache_semantic_floor)
    assert cache.threshold(policy, CacheRequest(min_similarity=0.97)) == 0.97
    assert cache.threshold(policy, CacheRequest(min_similarity=0.2)) == 0.9


async def test_a_semantic_miss_below_the_threshold(app: TenantLMApp) -> None:
    a = await member(app, {"semantic": True, "semantic_threshold": 1.0})
    await chat(app, a, "first question")
    assert (await chat(app, a, "a different question")).headers[HEADER] == "miss"


async def test_keys_follow_the_tenants_data_key(app: TenantLMApp) -> None:
    svc = services(app)
    a, b = await member(app, {"exact": True}), await member(app, {"exact": True})
    ka = await svc.keyring.derive_key(tenant_id=a.tenant_id, purpose="response-cache")
    kb = await svc.keyring.derive_key(tenant_id=b.tenant_id, purpose="response-cache")
    assert len(ka) == 32 and ka != kb
    assert await svc.keyring.derive_key(tenant_id=a.tenant_id, purpose="other") != ka
    await chat(app, a, "before rotation")
    assert (await chat(app, a, "before rotation")).headers[HEADER] == "hit"
    await svc.keyring.rotate_dek(tenant_id=a.tenant_id)
    assert await svc.keyring.derive_key(tenant_id=a.tenant_id, purpose="response-cache") != ka
    assert (await chat(app, a, "before rotation")).headers[HEADER] == "miss"  # a rotation starts afresh


async def test_deleting_a_tenant_purges_its_entries(app: TenantLMApp) -> None:
    svc = services(app)
    a, b = await member(app, {"exact": True, "semantic": True}), await member(app, {"exact": True})
    await chat(app, a, "kept until deleted")
    await chat(app, b, "kept")
    assert any(slot[0] == a.tenant_id for slot in backend(app)._items)
    await svc.eraser.erase(tenant_id=a.tenant_id, confirm=True, actor="test")
    assert {slot[0] for slot in backend(app)._items} == {b.tenant_id}
    assert (await chat(app, b, "kept")).headers[HEADER] == "hit"


async def test_erasing_an_end_user_purges_theirs(app: TenantLMApp) -> None:
    svc = services(app)
    a = await member(app, {"exact": True, "personal": True})
    await chat(app, a, "q1", user="alice")
    await chat(app, a, "q2", user="alice")
    await chat(app, a, "q1", user="bob")
    assert await svc.cache.erase_end_user(tenant_id=a.tenant_id, end_user="alice") == 2
    assert (await chat(app, a, "q1", user="alice")).headers[HEADER] == "miss"
    assert (await chat(app, a, "q1", user="bob")).headers[HEADER] == "hit"


async def test_a_hit_is_metered_at_the_hit_price_factor(tmp_path: Path) -> None:
    application = create_app(make_settings(tmp_path, cache_hit_price_factor=0.25))
    async with application.router.lifespan_context(application):
        svc = services(application)
        a = await member(application, {"exact": True})
        miss = await chat(application, a, "priced question")
        hit = await chat(application, a, "priced question")
        assert hit.body["usage"]["prompt_tokens_details"] == {"cached_tokens": miss.body["usage"]["prompt_tokens"]}
        await svc.ledger.flush()
        rows = {r.group["provider"]: r.totals for r in await svc.ledger.usage(
            tenant_id=a.tenant_id, start=0, end=time.time() + 60, group_by=["provider"])}
        assert rows["cache"].cached_tokens == miss.body["usage"]["prompt_tokens"]
        assert rows["cache"].cost_nanousd == round(rows["fake"].cost_nanousd * 0.25)


async def test_a_backend_that_fails_never_fails_the_request(app: TenantLMApp) -> None:
    class Down(MemoryCacheBackend):
        async def get(self, *, tenant_id: str, key: str) -> bytes | None:
            raise CacheUnavailable("down")

        async def put(self, *, tenant_id: str, key: str, value: bytes, end_user: str | None, ttl_s: float) -> None:
            raise CacheUnavailable("down")

    services(app).cache.backend = Down()
    a = await member(app, {"exact": True})
    reply = await chat(app, a, "served anyway")
    assert reply.body["choices"][0]["message"]["content"] and HEADER not in reply.headers


async def test_a_refused_embedding_leaves_an_exact_only_lookup(app: TenantLMApp) -> None:
    a = await member(app, {"exact": True, "semantic": True}, allowed_models=["chat"])  # "embed" not allowed
    assert (await chat(app, a, "no embedding for me")).headers[HEADER] == "miss"
    assert (await chat(app, a, "no embedding for me")).headers[HEADER] == "hit"
    assert not backend(app)._spaces


async def test_no_cache_argument_no_cache(app: TenantLMApp) -> None:
    """Only the chat completions route passes a cache request; other callers of ``chat`` (the Responses API, with
    its conversations and file search) never read nor write the cache."""
    a = await member(app, {"exact": True, "semantic": True})
    for _ in range(2):
        assert HEADER not in (await chat(app, a, "via another use case", cache=None)).headers
    assert len(backend(app)) == 0
    assert HEADER not in (await chat(app, a, "bypassed", cache=CacheRequest(bypass=True))).headers
    assert len(backend(app)) == 0


async def test_a_tenants_requests_touch_only_its_own_partition(app: TenantLMApp) -> None:
    """What a request's time can depend on: every backend call made while serving tenant B names B, so nothing of
    A's (its entries, its vectors, whether A asked the same thing a moment ago) is read on B's path."""
    calls: list[tuple[str, str]] = []

    class Recording(MemoryCacheBackend):
        async def get(self, *, tenant_id: str, key: str) -> bytes | None:
            calls.append(("get", tenant_id))
            return await super().get(tenant_id=tenant_id, key=key)

        async def vectors(self, *, tenant_id: str, space: str) -> list[tuple[str, bytes]]:
            calls.append(("vectors", tenant_id))
            return await super().vectors(tenant_id=tenant_id, space=space)

    services(app).cache.backend = Recording()
    a = await member(app, {"exact": True, "semantic": True})
    b = await member(app, {"exact": True, "semantic": True})
    for _ in range(2):
        await chat(app, a, "shared question")
    calls.clear()
    assert (await chat(app, b, "shared question")).headers[HEADER] == "miss"
    assert calls and {tenant for _, tenant in calls} == {b.tenant_id}
    assert {kind for kind, _ in calls} == {"get", "vectors"}


async def test_an_entry_that_no_longer_opens_is_a_miss(app: TenantLMApp) -> None:
    a = await member(app, {"exact": True})
    await chat(app, a, "tampered")
    store = backend(app)
    (slot,) = [slot for slot in store._items if slot[0] == a.tenant_id]
    item = store._items[slot]
    item.value = item.value[:-1] + bytes([item.value[-1] ^ 1])  # no longer authenticates
    assert (await chat(app, a, "tampered")).headers[HEADER] == "miss"
    assert (await chat(app, a, "tampered")).headers[HEADER] == "hit"  # the miss stored a fresh entry
