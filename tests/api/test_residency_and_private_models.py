"""Residency, private models and adapters through a live ``tenantlm serve`` (SQLite and Postgres) and the official
SDK, against the in-tree fake upstream standing in for vLLM (its runtime LoRA routes included).

A tenant held to ``eu-west`` sends requests that would reach ``us-east`` on every path (direct, alias, a fallback,
a private model, an adapter, embeddings, the Responses API, streams): each is a 403 ``region_not_allowed`` naming
``model``, each is audited, and the upstream never sees one of them. Private models and adapters are their
tenant's alone: another tenant gets the same 404 as for a model that does not exist, and two tenants' adapters of
the same name are loaded upstream under different lora names from their own sources.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from live import Live, Process, ServerConfig, Tenant, cli, start_fake_upstream, start_server
from services import PostgresServer

MSG = [{"role": "user", "content": "hello there"}]


def residency_config(upstream_url: str) -> ServerConfig:
    base = upstream_url + "/v1"
    providers: list[dict[str, Any]] = [
        {"name": "eu", "type": "openai_compatible", "base_url": base, "region": "eu-west", "max_retries": 0,
         "max_loras": 2},
        {"name": "us", "type": "openai_compatible", "base_url": base, "region": "us-east", "max_retries": 0},
        {"name": "eu-dead", "type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "region": "eu-west",
         "max_retries": 0, "connect_timeout_s": 0.5},
        {"name": "fake", "type": "fake", "tokens": 4},
    ]
    models: list[dict[str, Any]] = [
        {"name": "eu-chat", "provider": "eu", "upstream_model": "eu-model", "input_price_per_1m": 1.0},
        {"name": "us-chat", "provider": "us", "upstream_model": "us-model"},
        {"name": "eu-embed", "provider": "eu", "kind": "embedding", "upstream_model": "eu-embed-model",
         "dimensions": 8},
        {"name": "us-embed", "provider": "us", "kind": "embedding", "upstream_model": "us-embed-model",
         "dimensions": 8},
        {"name": "eu-down", "provider": "eu-dead", "fallbacks": ["us-chat"]},
        {"name": "fake-chat", "provider": "fake"},
    ]
    return ServerConfig(providers=providers, models=models, env={"TENANTLM_STORAGE_REGION": "eu-west"})


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    proc = start_fake_upstream(tmp_path_factory.mktemp("vllm"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, fake_vllm: Process, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp(f"residency-{request.param}")
    kw: dict[str, str] = {}
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        db = pg.create_database("residency")
        kw = {"database_url": db.app_url, "migrate_url": db.owner_url}
    proc = start_server(tmp, residency_config(fake_vllm.url), warmup=False, **kw)
    try:
        yield Live(proc.url, proc, request.param)
    finally:
        proc.stop()


def stats(upstream: Process) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(upstream.url + "/fake/stats", timeout=10).json()
    return data


def created(c: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(path, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def refused(call: Any) -> openai.PermissionDeniedError:
    with pytest.raises(openai.PermissionDeniedError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "region_not_allowed" and body["param"] == "model", body
    assert body["type"] == "permission_error"
    return info.value


@pytest.fixture(scope="module")
def held(live: Live) -> Tenant:
    """A tenant held to eu-west, with an alias, a private model and two adapters of its own."""
    t = live.new_tenant(f"held-{live.backend}", model_aliases={"smart": "us-chat"})
    with live.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"allowed_regions": ["eu-west"]})
        assert r.status_code == 200 and r.json()["allowed_regions"] == ["eu-west"], r.text
        created(c, f"/admin/v1/tenants/{t.id}/models",
                {"name": "mine-us", "provider": "us", "upstream_model": "private-us-model"})
        created(c, f"/admin/v1/tenants/{t.id}/models",
                {"name": "mine-eu", "provider": "eu", "upstream_model": "private-eu-model"})
        created(c, f"/admin/v1/tenants/{t.id}/adapters",
                {"name": "us-lora", "base_model": "us-chat", "source": "/loras/held-us"})
        created(c, f"/admin/v1/tenants/{t.id}/adapters",
                {"name": "support-v1", "base_model": "eu-chat", "source": "/loras/held-support"})
    return t


def test_allowed_regions_are_validated_and_shown(live: Live, held: Tenant) -> None:
    with live.admin() as c:
        assert c.get(f"/admin/v1/tenants/{held.id}").json()["allowed_regions"] == ["eu-west"]
        bad = c.patch(f"/admin/v1/tenants/{held.id}", json={"allowed_regions": ["mars-1"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "allowed_regions"
        assert "eu-west" in bad.json()["error"]["message"]
        # the deployment keeps tenant data in eu-west (TENANTLM_STORAGE_REGION): a tenant held elsewhere cannot be here
        bad = c.patch(f"/admin/v1/tenants/{held.id}", json={"allowed_regions": ["us-east"]})
        assert bad.status_code == 400 and "data is kept in region 'eu-west'" in bad.json()["error"]["message"]
        assert c.get(f"/admin/v1/tenants/{held.id}").json()["allowed_regions"] == ["eu-west"]
    with live.admin(held.admin_key) as c:  # the tenant's own admin may not widen its regions
        r = c.patch(f"/admin/v1/tenants/{held.id}", json={"allowed_regions": None})
        assert r.status_code == 403 and r.json()["error"]["param"] == "allowed_regions"
    with live.admin() as c:
        changes = [e for e in c.get(f"/admin/v1/tenants/{held.id}/audit",
                                    params={"action": "tenant.regions_changed"}).json()["data"]]
        assert changes and changes[-1]["details"] == {"before": None, "after": ["eu-west"]}


def test_a_held_back_request_is_refused_on_every_path(live: Live, held: Tenant, fake_vllm: Process) -> None:
    sdk = live.sdk(held.member_key, max_retries=0)
    before = stats(fake_vllm)
    refused(lambda: sdk.chat.completions.create(model="us-chat", messages=MSG))  # direct
    refused(lambda: sdk.chat.completions.create(model="smart", messages=MSG))  # alias
    refused(lambda: sdk.chat.completions.create(model="eu-down", messages=MSG))  # its fallback is in us-east
    refused(lambda: sdk.chat.completions.create(model="eu-down", messages=MSG, stream=True))
    refused(lambda: sdk.chat.completions.create(model="mine-us", messages=MSG))  # private model
    refused(lambda: sdk.chat.completions.create(model="us-lora", messages=MSG))  # adapter on a us-east base
    refused(lambda: sdk.chat.completions.create(model="us-lora", messages=MSG, stream=True))
    refused(lambda: sdk.embeddings.create(model="us-embed", input="hi"))
    refused(lambda: sdk.responses.create(model="smart", input="hi"))
    seen = stats(fake_vllm)  # the upstream serves every provider here: no request reached a us-east deployment
    for name in ("us-model", "private-us-model", "us-embed-model"):
        assert seen["models"].get(name) == before["models"].get(name), name
    assert not [event for event in seen["lora_events"] if held.id in event[1] and "us-lora" in event[1]]
    with live.admin() as c:
        events = c.get(f"/admin/v1/tenants/{held.id}/audit", params={"action": "model.region_refused"}).json()["data"]
    vias = {(e["details"]["model"], e["details"]["via"]) for e in events}
    assert {("us-chat", "direct"), ("smart", "alias"), ("eu-down", "fallback"), ("mine-us", "private"),
            ("us-lora", "adapter"), ("us-embed", "direct")} <= vias
    assert all(e["details"]["region"] == "us-east" and e["details"]["allowed_regions"] == ["eu-west"]
               for e in events)
    # what the tenant may use still works, and /v1/models lists only that
    assert sdk.chat.completions.create(model="eu-chat", messages=MSG).model == "eu-chat"
    assert sdk.chat.completions.create(model="mine-eu", messages=MSG).model == "mine-eu"
    assert sdk.embeddings.create(model="eu-embed", input="hi").model == "eu-embed"
    assert sorted(m.id for m in sdk.models.list()) == ["eu-chat", "eu-down", "eu-embed", "mine-eu", "support-v1"]
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("us-chat")


def test_adapters_load_per_tenant_and_usage_names_them(live: Live, held: Tenant, fake_vllm: Process) -> None:
    other = live.new_tenant(f"other-{live.backend}")
    with live.admin() as c:
        created(c, f"/admin/v1/tenants/{other.id}/adapters",
                {"name": "support-v1", "base_model": "eu-chat", "source": "/loras/other-support"})
        mine = c.get(f"/admin/v1/tenants/{held.id}/adapters/support-v1").json()
        theirs = c.get(f"/admin/v1/tenants/{other.id}/adapters/support-v1").json()
    assert mine["lora_name"] != theirs["lora_name"]
    for t in (held, other):
        reply = live.sdk(t.member_key).chat.completions.create(model="support-v1", messages=MSG)
        assert reply.model == "support-v1"
    chunks = list(live.sdk(held.member_key).chat.completions.create(model="support-v1", messages=MSG, stream=True))
    assert {c.model for c in chunks} == {"support-v1"}
    seen = stats(fake_vllm)
    assert seen["loras"][mine["lora_name"]] == "/loras/held-support"
    assert seen["loras"][theirs["lora_name"]] == "/loras/other-support"
    assert seen["models"][mine["lora_name"]] == 2 and seen["models"][theirs["lora_name"]] == 1
    deadline = time.monotonic() + 15
    while True:
        with live.admin() as c:
            rows = c.get(f"/admin/v1/tenants/{held.id}/usage", params={"group_by": "model"}).json()["data"]
        by_model = {r["model"]: r["requests"] for r in rows}
        if by_model.get("support-v1") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert by_model.get("support-v1") == 2, rows


def test_private_models_and_adapters_are_invisible_to_another_tenant(live: Live, held: Tenant) -> None:
    other = live.new_tenant(f"stranger-{live.backend}")
    sdk = live.sdk(other.member_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-model", messages=MSG)
    for name in ("mine-eu", "mine-us", "us-lora"):
        with pytest.raises(openai.NotFoundError) as foreign:
            sdk.chat.completions.create(model=name, messages=MSG)
        assert isinstance(foreign.value.body, dict) and isinstance(missing.value.body, dict)
        assert foreign.value.body == {**missing.value.body,
                                      "message": missing.value.body["message"].replace("no-such-model", name)}
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve(name)
    assert not {"mine-eu", "mine-us", "us-lora"} & {m.id for m in sdk.models.list()}
    assert sdk.chat.completions.create(model="us-chat", messages=MSG).model == "us-chat"  # no region rule here
    with live.admin(other.admin_key) as c:  # the other tenant's admin cannot read them either
        for path in (f"/admin/v1/tenants/{held.id}/models", f"/admin/v1/tenants/{held.id}/adapters/us-lora"):
            assert c.get(path).status_code == 404
        assert c.get(f"/admin/v1/tenants/{other.id}/models/mine-eu").status_code == 404
        assert c.post(f"/admin/v1/tenants/{other.id}/models",
                      json={"name": "x", "provider": "eu", "upstream_model": "y"}).status_code == 403


def test_admin_api_validates_and_audits(live: Live, fake_vllm: Process) -> None:
    t = live.new_tenant(f"admin-{live.backend}")
    base = f"/admin/v1/tenants/{t.id}"
    with live.admin() as c:
        for path, body, param in (
            ("/models", {"name": "eu-chat", "provider": "eu", "upstream_model": "x"}, "name"),
            ("/models", {"name": "ok", "provider": "nowhere", "upstream_model": "x"}, "provider"),
            ("/models", {"name": "ok", "provider": "eu", "upstream_model": "x", "region": "us-east"}, "region"),
            ("/models", {"name": "ok", "provider": "eu", "upstream_model": "x", "input_price_per_1m": -1},
             "input_price_per_1m"),
            ("/adapters", {"name": "lora", "base_model": "fake-chat", "source": "/x"}, "base_model"),
            ("/adapters", {"name": "lora", "base_model": "eu-embed", "source": "/x"}, "base_model"),
        ):
            r = c.post(base + path, json=body)
            assert r.status_code in (400, 409) and r.json()["error"]["param"] == param, r.text
        r = c.post(base + "/adapters", json={"name": "lora", "base_model": "fake-chat", "source": "/x"})
        assert "vLLM" in r.json()["error"]["message"]
        ded = created(c, base + "/models", {"name": "dedicated", "provider": "eu", "upstream_model": "ded-1",
                                            "output_price_per_1m": 4.5})
        assert (ded["region"], ded["input_price_per_1m"], ded["output_price_per_1m"]) == ("eu-west", 0.0, 4.5)
        assert c.post(base + "/models", json={"name": "dedicated", "provider": "eu",
                                              "upstream_model": "ded-1"}).status_code == 409
        created(c, base + "/adapters", {"name": "tuned", "base_model": "dedicated", "source": "/loras/tuned"})
        assert c.delete(base + "/models/dedicated").status_code == 409  # an adapter runs on it
        assert [a["id"] for a in c.get(base + "/adapters").json()["data"]] == ["tuned"]
        assert c.get(base + "/models/dedicated").json()["region"] == "eu-west"
    sdk = live.sdk(t.member_key, max_retries=0)
    assert sdk.chat.completions.create(model="tuned", messages=MSG).model == "tuned"
    with live.admin() as c:
        lora_name = c.get(base + "/adapters/tuned").json()["lora_name"]
        assert c.delete(base + "/adapters/tuned").status_code == 200
        assert c.delete(base + "/models/dedicated").status_code == 200
        assert c.get(base + "/adapters/tuned").status_code == 404
        actions = [e["action"] for e in c.get(base + "/audit").json()["data"]]
    assert lora_name not in stats(fake_vllm)["loras"]  # unloaded when deleted
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="tuned", messages=MSG)
    for action in ("tenant_model.created", "adapter.created", "adapter.deleted", "tenant_model.deleted"):
        assert action in actions


def test_cli_regions_models_and_adapters(live: Live) -> None:
    t = live.new_tenant(f"cli-{live.backend}")
    r = cli(live, "tenants", "regions", t.id, "--allow", "eu-west", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["allowed_regions"] == ["eu-west"]
    r = cli(live, "models", "create", t.id, "ded", "--provider", "eu", "--upstream-model", "ded-model")
    assert r.returncode == 0, r.stderr
    r = cli(live, "adapters", "create", t.id, "lora-a", "--base-model", "ded", "--source", "/loras/a")
    assert r.returncode == 0, r.stderr
    listed = cli(live, "adapters", "list", t.id, "--json")
    assert listed.returncode == 0
    assert [(a["id"], a["base_model"], a["source"]) for a in json.loads(listed.stdout)["data"]] == [
        ("lora-a", "ded", "/loras/a")]
    listed = cli(live, "models", "list", t.id, "--json")
    assert listed.returncode == 0
    assert [(m["id"], m["upstream_model"], m["region"]) for m in json.loads(listed.stdout)["data"]] == [
        ("ded", "ded-model", "eu-west")]
    assert cli(live, "tenants", "regions", t.id).returncode != 0  # neither --allow nor --any
    assert cli(live, "adapters", "delete", t.id, "lora-a").returncode == 0
    assert cli(live, "models", "delete", t.id, "ded").returncode == 0
    r = cli(live, "tenants", "regions", t.id, "--any", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["allowed_regions"] is None
    with live.admin() as c:
        assert c.get(f"/admin/v1/tenants/{t.id}/models").json()["data"] == []
