"""Residency and adapters at the router and the catalog, over a real fake upstream: a model, alias, private model,
adapter or fallback outside the tenant's regions is never sent upstream (403 region_not_allowed, audited); an
adapter is loaded on its upstream before first use under a lora_name of its tenant's, and the least recently used
idle one is unloaded past ``max_loras``."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest, ModelNotFound, NotFound, RegionNotAllowed, UpstreamError
from tenantlm.providers.fake_server import FakeServerThread
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.models import Role, Tenant, TenantContext, TenantStatus
from tenantlm.tenancy.private_catalog import Adapter, PrivateCatalog, PrivateModel, TenantEntries
from tenantlm.tenancy.residency import check_allowed_regions


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> None:
        self.events.append({"actor": actor, "action": action, "tenant_id": tenant_id, **details})


class Entries:
    """The private catalog's store, in memory (the SQL store has its own contract tests)."""

    def __init__(self) -> None:
        self.by_tenant: dict[str, TenantEntries] = {}

    async def entries(self, *, tenant_id: str) -> TenantEntries:
        return self.by_tenant.get(tenant_id, TenantEntries())


def settings(upstream_url: str, *, max_loras: int = 8) -> Settings:
    return Settings(
        providers=[
            ProviderConfig(name="eu", type="openai_compatible", base_url=upstream_url, region="eu-west",
                           max_retries=0, max_loras=max_loras),
            ProviderConfig(name="us", type="openai_compatible", base_url=upstream_url, region="us-east",
                           max_retries=0),
            ProviderConfig(name="fake", type="fake"),
        ],
        models=[
            ModelConfig(name="eu-chat", provider="eu", upstream_model="eu-upstream", fallbacks=["us-chat"]),
            ModelConfig(name="us-chat", provider="us", upstream_model="us-upstream"),
            ModelConfig(name="us-embed", provider="us", kind="embedding", upstream_model="us-embed-upstream"),
            ModelConfig(name="eu-down", provider="eu", upstream_model="eu-down-upstream",
                        fallbacks=["us-chat", "eu-backup"]),
            ModelConfig(name="eu-backup", provider="eu", upstream_model="eu-backup-upstream"),
            ModelConfig(name="tagged", provider="fake", region="ap-south"),
        ],
    )


def tenant(tid: str = "ten_a", regions: list[str] | None = None, aliases: dict[str, str] | None = None) -> Tenant:
    return Tenant(id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=None, model_aliases=aliases or {}, created_at=0, updated_at=0,
                  allowed_regions=regions)


def ctx(t: Tenant) -> TenantContext:
    return TenantContext(tenant=t, key_id="key_x", role=Role.MEMBER, permissions=frozenset())


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "client", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
def upstream() -> Any:
    with FakeServerThread(ProviderConfig(name="upstream", type="fake", tokens=4)) as server:
        yield server


@pytest.fixture
async def world(upstream: FakeServerThread) -> AsyncIterator[tuple[ModelCatalog, ProviderRegistry, Entries, Audit]]:
    s = settings(upstream.base_url)
    entries, audit = Entries(), Audit()
    catalog = ModelCatalog(s.models, created_at=1, private=PrivateCatalog(store=entries, ttl_s=0),  # type: ignore[arg-type]
                           audit=audit)
    registry = ProviderRegistry.from_settings(s)
    yield catalog, registry, entries, audit
    await registry.aclose()


def test_a_model_takes_its_providers_region_unless_it_names_one(upstream: FakeServerThread) -> None:
    s = settings(upstream.base_url)
    regions = {m.name: m.region for m in s.models}
    assert regions["eu-chat"] == "eu-west" and regions["us-chat"] == "us-east" and regions["tagged"] == "ap-south"
    assert s.regions() == {"eu-west", "us-east", "ap-south"}


async def test_direct_and_alias_outside_the_regions_are_refused_and_audited(world: Any) -> None:
    catalog, _registry, _entries, audit = world
    eu = tenant(regions=["eu-west"], aliases={"smart": "us-chat"})
    for name, via in (("us-chat", "direct"), ("smart", "alias"), ("us-embed", "direct")):
        with pytest.raises(RegionNotAllowed) as refused:
            await catalog.resolve(ctx(eu), name)
        assert refused.value.status == 403 and refused.value.code == "region_not_allowed"
        assert refused.value.param == "model"
        assert audit.events[-1] == {"actor": "tenant:ten_a:key_x", "action": "model.region_refused",
                                    "tenant_id": "ten_a", "model": name, "deployment": name.replace("smart", "us-chat"),
                                    "region": "us-east", "allowed_regions": ["eu-west"], "via": via}
    assert (await catalog.resolve(ctx(eu), "eu-chat")).config.region == "eu-west"
    assert [m.name for m in await catalog.visible(eu)] == ["eu-backup", "eu-chat", "eu-down"]
    anywhere = tenant(aliases={"smart": "us-chat"})
    assert (await catalog.resolve(ctx(anywhere), "smart")).config.name == "us-chat"
    assert len(await catalog.visible(anywhere)) == 7


async def test_a_fallback_outside_the_regions_is_skipped_and_never_reached(world: Any,
                                                                          upstream: FakeServerThread) -> None:
    catalog, registry, _entries, audit = world
    eu = tenant(regions=["eu-west"])
    down = await catalog.resolve(ctx(eu), "eu-down")
    fail = {"fake_fail": {"key": uuid.uuid4().hex, "times": 1, "status": 500}}
    result = await registry.chat(down.config, ask(**fail), residency=down.residency)
    assert result.body["model"] == "eu-backup"  # us-chat, between them, was skipped
    primary = await catalog.resolve(ctx(eu), "eu-chat")
    fail = {"fake_fail": {"key": uuid.uuid4().hex, "times": 1, "status": 500}}
    with pytest.raises(RegionNotAllowed) as refused:
        await registry.chat(primary.config, ask(**fail), residency=primary.residency)
    assert isinstance(refused.value.__cause__, UpstreamError)
    assert audit.events[-1]["via"] == "fallback" and audit.events[-1]["deployment"] == "us-chat"
    fail = {"fake_fail": {"key": uuid.uuid4().hex, "times": 1, "status": 500}}
    with pytest.raises(RegionNotAllowed):
        _ = [c async for c in registry.stream_chat(primary.config, ask(stream=True, **fail),
                                                   residency=primary.residency)]
    assert "us-upstream" not in upstream.stats.models
    # with no region rule the same failure falls back to us-chat
    anywhere = await catalog.resolve(ctx(tenant()), "eu-chat")
    fail = {"fake_fail": {"key": uuid.uuid4().hex, "times": 1, "status": 500}}
    assert (await registry.chat(anywhere.config, ask(**fail), residency=anywhere.residency)).body["model"] == "us-chat"


async def test_private_models_and_adapters_belong_to_their_tenant(world: Any) -> None:
    catalog, _registry, entries, _audit = world
    entries.by_tenant["ten_a"] = TenantEntries(
        models={"mine": PrivateModel("ten_a", "mine", "us", "dedicated-x", "chat", "us-east", 0,
                                     input_price_per_1m=3.0)},
        adapters={"support-v1": Adapter("ten_a", "support-v1", "eu-chat", "/loras/a", "ten_a__support-v1__1", 0),
                  "us-lora": Adapter("ten_a", "us-lora", "us-chat", "/loras/u", "ten_a__us-lora__1", 0)})
    a, b = tenant("ten_a"), tenant("ten_b")
    mine = await catalog.resolve(ctx(a), "mine")
    assert mine.config.upstream == "dedicated-x" and mine.config.provider == "us"
    assert mine.config.input_price_per_1m == 3.0
    lora = await catalog.resolve(ctx(a), "support-v1")
    assert (lora.config.upstream, lora.config.lora_source, lora.config.region) == (
        "ten_a__support-v1__1", "/loras/a", "eu-west")
    assert lora.config.fallbacks == [] and lora.pool == "eu-chat"
    for name in ("mine", "support-v1"):
        with pytest.raises(ModelNotFound) as missing:
            await catalog.resolve(ctx(b), name)
        with pytest.raises(ModelNotFound) as never:
            await catalog.resolve(ctx(b), "no-such-model")
        assert missing.value.body()["error"] == {**never.value.body()["error"],
                                                 "message": never.value.message.replace("no-such-model", name)}
    assert {"mine", "support-v1", "us-lora"} <= {m.name for m in await catalog.visible(a)}
    assert not {"mine", "support-v1"} & {m.name for m in await catalog.visible(b)}
    eu = tenant("ten_a", regions=["eu-west"])
    for name, via in (("mine", "private"), ("us-lora", "adapter")):
        with pytest.raises(RegionNotAllowed):
            await catalog.resolve(ctx(eu), name)
        assert _audit.events[-1]["via"] == via
    assert {m.name for m in await catalog.visible(eu)} >= {"support-v1"}
    assert not {"mine", "us-lora"} & {m.name for m in await catalog.visible(eu)}


async def test_an_adapter_is_loaded_before_first_use_and_lru_unloaded(upstream: FakeServerThread) -> None:
    s = settings(upstream.base_url, max_loras=2)
    registry = ProviderRegistry.from_settings(s)
    base = s.model("eu-chat")
    assert base is not None

    def adapter(n: int) -> ModelConfig:
        return base.model_copy(update={"name": f"lora{n}", "upstream_model": f"ten_a__lora{n}__x",
                                       "lora_source": f"/loras/{n}", "fallbacks": []})
    try:
        for n in (1, 1, 2, 1, 3):  # 3 evicts the least recently used: lora2
            result = await registry.chat(adapter(n), ask())
            assert result.body["model"] == f"lora{n}"
        assert upstream.stats.lora_events == [["load", "ten_a__lora1__x"], ["load", "ten_a__lora2__x"],
                                              ["unload", "ten_a__lora2__x"], ["load", "ten_a__lora3__x"]]
        assert upstream.stats.loras == {"ten_a__lora1__x": "/loras/1", "ten_a__lora3__x": "/loras/3"}
        assert upstream.stats.models["ten_a__lora1__x"] == 3
        chunks = [c async for c in registry.stream_chat(adapter(2), ask(stream=True))]  # reloaded, evicts lora1
        assert chunks[-1].body["model"] == "lora2"
        assert upstream.stats.lora_events[-2:] == [["unload", "ten_a__lora1__x"], ["load", "ten_a__lora2__x"]]
        await registry.forget_adapter("eu", "ten_a__lora2__x")
        assert "ten_a__lora2__x" not in upstream.stats.loras
        # the upstream restarted and forgot lora3: that request fails, the next one loads it again
        del upstream.stats.loras["ten_a__lora3__x"]
        with pytest.raises(NotFound):
            await registry.chat(adapter(3), ask())
        assert (await registry.chat(adapter(3), ask())).body["model"] == "lora3"
        assert upstream.stats.lora_events[-1] == ["load", "ten_a__lora3__x"]
        local = adapter(4).model_copy(update={"provider": "fake"})
        with pytest.raises(InvalidRequest, match="vLLM upstream"):
            await registry.chat(local, ask())
    finally:
        await registry.aclose()


def test_allowed_regions_are_checked_against_configured_regions_and_storage() -> None:
    known = {"eu-west", "us-east"}
    assert check_allowed_regions(None, known, ["eu-west"]) is None  # any region: the storage's included
    assert check_allowed_regions(["us-east", "eu-west", "eu-west"], known, ["eu-west"]) == ["eu-west", "us-east"]
    assert check_allowed_regions(["us-east"], known, []) == ["us-east"]
    for value, fragment in ((["mars"], "unknown region(s) mars"), (["us-east"], "must include a region"),
                            ("eu-west", "must be a list"), ([""], "must be a list")):
        with pytest.raises(InvalidRequest, match=re.escape(fragment)) as bad:
            check_allowed_regions(value, known, ["eu-west"])
        assert bad.value.param == "allowed_regions"


def test_the_storage_region_is_a_configured_region(upstream: FakeServerThread) -> None:
    s = settings(upstream.base_url).model_copy(update={"storage_region": "eu-central"})
    assert s.regions() == {"eu-west", "us-east", "ap-south", "eu-central"}
