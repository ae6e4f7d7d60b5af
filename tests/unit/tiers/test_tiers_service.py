"""The tier service in a real app (in-process, SQLite, the fake model): stored responses keep their chain across a
promotion and a demotion; a move whose fence cannot drain fails before the switch and leaves the tenant where it was,
its rows in the pool and no silo file, audited; a deployment of several replicas refuses moves; a second move while
one runs is a conflict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tenantlm.app import TenantLMApp, create_app
from tenantlm.errors import Conflict, InvalidRequest
from tenantlm.inference.service import Reply
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.storage.sql import tenant_copy
from tenantlm.storage.sql.tables import responses
from tenantlm.tenancy.models import TenantContext


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(data_dir=tmp_path, warmup=False, access_log=False,
                        providers=[ProviderConfig(name="fake", type="fake", tokens=4)],
                        models=[ModelConfig(name="chat", provider="fake")])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def services(app: TenantLMApp) -> Services:
    svc: Services = app.state.services
    return svc


async def member(svc: Services, name: str) -> TenantContext:
    tenant = await svc.tenancy.create_tenant({"name": name}, actor="test")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="test")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    return ctx


async def respond(svc: Services, ctx: TenantContext, text: str, previous: str | None) -> str:
    body = {"model": "chat", "input": text, **({"previous_response_id": previous} if previous else {})}
    reply = await svc.responses.create(ctx=ctx, body=body, end_user_header=None)
    assert isinstance(reply, Reply)
    return str(reply.body["id"])


async def moved(svc: Services, tenant_id: str, tier: str) -> dict[str, object]:
    await svc.tiers.start_move(tenant_id=tenant_id, tier=tier, actor="test")
    move = await svc.tiers.wait(tenant_id)
    assert move is not None
    return move.public()


async def test_a_response_chain_survives_promotion_and_demotion(app: TenantLMApp, tmp_path: Path) -> None:
    svc = services(app)
    ctx, other = await member(svc, "chain"), await member(svc, "other")
    first = await respond(svc, ctx, "one two", None)
    second = await respond(svc, ctx, "three", first)
    theirs = await respond(svc, other, "not yours", None)
    assert (await moved(svc, ctx.tenant_id, "silo"))["phase"] == "done"
    assert (tmp_path / "tenants" / ctx.tenant_id / "tenant.db").exists()
    third = await respond(svc, ctx, "four", second)  # continues the chain stored before the move
    got = await svc.responses.get(tenant_id=ctx.tenant_id, response_id=third, include=[])
    assert got["previous_response_id"] == second
    async with svc.router.pool().tenant_tx(tenant_id=ctx.tenant_id) as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(responses)
                                   .where(responses.c.tenant_id == ctx.tenant_id))).scalar_one() == 0
    assert (await svc.responses.get(tenant_id=other.tenant_id, response_id=theirs, include=[]))["id"] == theirs
    assert (await moved(svc, ctx.tenant_id, "pool"))["phase"] == "done"
    assert not (tmp_path / "tenants" / ctx.tenant_id / "tenant.db").exists()
    for rid in (first, second, third):
        assert (await svc.responses.get(tenant_id=ctx.tenant_id, response_id=rid, include=[]))["id"] == rid
    assert (await svc.tenancy.get_tenant(tenant_id=ctx.tenant_id)).tier == "pool"


async def test_a_fence_that_cannot_drain_fails_the_move_before_the_switch(app: TenantLMApp, tmp_path: Path) -> None:
    svc = services(app)
    ctx = await member(svc, "stuck")
    await respond(svc, ctx, "kept", None)
    before = await tenant_copy.fingerprint(svc.router.pool(), ctx.tenant_id)
    svc.tiers.drain_timeout_s = 0.05
    release, holding = asyncio.Event(), asyncio.Event()

    async def long_transaction() -> None:
        async with svc.router.tenant_tx(tenant_id=ctx.tenant_id):
            holding.set()
            await release.wait()

    held = asyncio.create_task(long_transaction())
    await holding.wait()
    move = await moved(svc, ctx.tenant_id, "silo")
    release.set()
    await held
    assert move["phase"] == "failed" and "FenceTimeout" in str(move["error"])
    assert (await svc.tenancy.get_tenant(tenant_id=ctx.tenant_id)).tier == "pool"
    assert svc.router.silo(ctx.tenant_id) is None
    assert not (tmp_path / "tenants" / ctx.tenant_id / "tenant.db").exists()
    assert await tenant_copy.fingerprint(svc.router.pool(), ctx.tenant_id) == before
    await respond(svc, ctx, "still served", None)
    audit = await svc.audit.read(tenant_id=ctx.tenant_id, after_seq=0, limit=100, action=None)
    assert "tenant.tier_move_failed" in [e["action"] for e in audit]


async def test_moves_are_refused_with_several_replicas_and_while_one_runs(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(svc, "refused")
    svc.tiers.one_replica = False
    with pytest.raises(InvalidRequest) as err:
        await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="silo", actor="test")
    assert err.value.code == "tier_unavailable" and err.value.param == "tier"
    svc.tiers.one_replica = True
    await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="silo", actor="test")
    with pytest.raises(Conflict):
        await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="pool", actor="test")
    await svc.tiers.wait(ctx.tenant_id)


async def test_a_reserved_share_comes_with_the_silo_and_reaches_the_scheduler(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(svc, "reserved")
    for tier, share, param in (("pool", 0.2, "reserved_share"), ("silo", 0.0, "reserved_share"),
                               ("silo", 0.95, "reserved_share"), ("silo", True, "reserved_share"),
                               ("gold", None, "tier")):
        with pytest.raises(InvalidRequest) as err:
            await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier=tier, reserved_share=share, actor="test")
        assert err.value.param == param
    await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="silo", reserved_share=0.25, actor="test")
    await svc.tiers.wait(ctx.tenant_id)
    tenant = await svc.tenancy.get_tenant(tenant_id=ctx.tenant_id)
    assert tenant.tier == "silo" and tenant.reserved_share == 0.25 and tenant.public()["reserved_share"] == 0.25
    ctx = await svc.auth.authenticate(f"Bearer {await _key(svc, ctx.tenant_id)}")
    assert isinstance(ctx, TenantContext)
    await respond(svc, ctx, "hello", None)
    assert svc.schedulers.get("chat").reserved_shares == {ctx.tenant_id: 0.25}
    same_tier = await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="silo", reserved_share=0.5, actor="test")
    assert same_tier.phase == "done"  # no move: only the share changed
    assert (await svc.tenancy.get_tenant(tenant_id=ctx.tenant_id)).reserved_share == 0.5
    await svc.tiers.start_move(tenant_id=ctx.tenant_id, tier="pool", actor="test")
    await svc.tiers.wait(ctx.tenant_id)
    tenant = await svc.tenancy.get_tenant(tenant_id=ctx.tenant_id)
    assert tenant.tier == "pool" and tenant.reserved_share is None
    ctx = await svc.auth.authenticate(f"Bearer {await _key(svc, ctx.tenant_id)}")
    assert isinstance(ctx, TenantContext)
    await respond(svc, ctx, "hello again", None)
    assert svc.schedulers.get("chat").reserved_shares == {}
    audit = await svc.audit.read(tenant_id=ctx.tenant_id, after_seq=0, limit=100, action=None)
    assert "tenant.reserved_share_changed" in [e["action"] for e in audit]


async def _key(svc: Services, tenant_id: str) -> str:
    created = await svc.tenancy.create_key(tenant_id=tenant_id, body={"role": "member"}, actor="test")
    return created.secret
