"""Catalog resolution per tenant, settings loading, log redaction, bounded metric labels, end-user naming."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tenantlm.errors import InvalidRequest, ModelNotFound
from tenantlm.observability.logging import JsonFormatter, redact, request_id_var, tenant_id_var
from tenantlm.observability.metrics import LATENCY_BUCKETS, Metrics, TenantLabels
from tenantlm.settings import ModelConfig, load_settings
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.end_users import pick_end_user
from tenantlm.tenancy.models import Role, Tenant, TenantContext, TenantStatus


def _tenant(allowed: list[str] | None = None, aliases: dict[str, str] | None = None) -> Tenant:
    return Tenant(id="ten_a", name="a", status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=allowed, model_aliases=aliases or {}, created_at=0, updated_at=0)


CATALOG = ModelCatalog([ModelConfig(name="m1", provider="p"), ModelConfig(name="m2", provider="p"),
                        ModelConfig(name="e1", provider="p", kind="embedding")], created_at=1)


def _ctx(tenant: Tenant) -> TenantContext:
    return TenantContext(tenant=tenant, key_id="key_1", role=Role.MEMBER, permissions=frozenset())


async def test_catalog_allow_list_and_aliases() -> None:
    assert [m.name for m in await CATALOG.visible(_tenant())] == ["e1", "m1", "m2"]
    t = _tenant(allowed=["m1"], aliases={"house": "m1", "sneaky": "m2"})
    assert [m.name for m in await CATALOG.visible(t)] == ["house", "m1"]
    house = await CATALOG.resolve(_ctx(t), "house")
    assert house.config.name == "m1" and house.name == "house"
    for name in ("m2", "sneaky", "nope", ""):
        with pytest.raises(ModelNotFound):
            await CATALOG.resolve(_ctx(t), name)


async def test_alias_cannot_shadow_a_catalog_model() -> None:
    t = _tenant(aliases={"m1": "m2"})
    assert (await CATALOG.resolve(_ctx(t), "m1")).config.name == "m1"


def test_settings_from_yaml_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 9000\nproviders:\n  - {name: f, type: fake}\nmodels:\n  - {name: x, provider: f}\n")
    monkeypatch.setenv("TENANTLM_PORT", "9100")
    monkeypatch.setenv("TENANTLM_ADMIN_KEY", "s3cret-value-xyz")
    s = load_settings(cfg, data_dir=tmp_path / "d")
    assert s.port == 9100 and s.data_dir == (tmp_path / "d").resolve()
    assert [m.name for m in s.models] == ["x"] and "s3cret" not in repr(s)
    assert s.sql_url.startswith("sqlite+aiosqlite:///") and not s.is_postgres


@pytest.mark.parametrize("text, message", [
    ("models:\n  - {name: x, provider: missing}\n", "unknown provider"),
    ("providers:\n  - {name: u, type: openai_compatible}\n", "base_url"),
    ("models:\n  - {name: x, provider: local, fallbacks: [y]}\n", "unknown model"),
    ("- a list\n", "mapping"),
])
def test_bad_config_is_explained(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_settings(cfg)


def test_redaction_masks_keys_and_bearer_tokens() -> None:
    tenant_key = "tlm_0123456789abcdef" + "A" * 43
    out = redact(f"key={tenant_key} header=Bearer abc.def admin=tlmadmin_0123456789abcdefXYZ")
    assert "A" * 43 not in out and "abc.def" not in out and "XYZ" not in out
    assert "tlm_01234567***" in out


def test_json_log_line_carries_request_and_tenant() -> None:
    rid, tid = request_id_var.set("req_1"), tenant_id_var.set("ten_a")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "used %s", ("tlm_0123456789abcdef" + "z" * 43,),
                                   None)
        doc = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(rid)
        tenant_id_var.reset(tid)
    assert doc["request_id"] == "req_1" and doc["tenant_id"] == "ten_a" and "z" * 43 not in doc["msg"]


def test_tenant_label_cardinality_is_bounded() -> None:
    labels = TenantLabels(3)
    assert [labels(f"t{i}") for i in range(5)] == ["t0", "t1", "t2", "other", "other"]
    assert labels("t1") == "t1" and labels(None) == "none"
    m = Metrics(max_tenants=2)
    for i in range(50):
        m.observe_request(route="/v1/x", method="GET", status=200, tenant_id=f"ten_{i}", seconds=0.01)
    text = m.render().decode()
    assert 'tenant="ten_0"' in text and 'tenant="other"' in text and 'tenant="ten_9"' not in text


def test_end_user_precedence_and_validation() -> None:
    assert pick_end_user(header="h", body_user="u", body_safety_id="s") == "h"
    assert pick_end_user(header=None, body_user="u", body_safety_id="s") == "s"
    assert pick_end_user(header="", body_user="u", body_safety_id=None) == "u"
    assert pick_end_user(header=None, body_user=None, body_safety_id=None) is None
    for bad in ("x" * 300, "tab\there", 42):
        with pytest.raises(InvalidRequest):
            pick_end_user(header=None, body_user=bad, body_safety_id=None)


def test_model_headroom_must_leave_a_slot_for_the_queue() -> None:
    assert ModelConfig(name="m", provider="p", max_in_flight=8, headroom=2).headroom == 2
    assert ModelConfig(name="m", provider="p", max_in_flight=8, headroom=0).headroom == 0  # work-conserving
    assert ModelConfig(name="m", provider="p").headroom is None  # the scheduler's default, per replica
    with pytest.raises(ValueError, match=r"headroom \(8\) must be less than max_in_flight \(8\)"):
        ModelConfig(name="m", provider="p", max_in_flight=8, headroom=8)


def test_request_tally_exposes_what_prometheus_clients_own_metrics_would() -> None:
    """The request path's plain-number tally renders the same samples as prometheus_client's Counter and Histogram
    fed the same observations (bucket edges included), apart from the histograms' ``_created`` line."""
    metrics = Metrics()
    ref = CollectorRegistry()
    requests = Counter("tenantlm_requests", "HTTP requests served", ["route", "method", "status", "tenant"],
                       registry=ref)
    latency = Histogram("tenantlm_request_duration_seconds", "Time to the end of the response", ["route", "tenant"],
                        buckets=LATENCY_BUCKETS, registry=ref)
    tokens = Counter("tenantlm_tokens", "Tokens processed", ["tenant", "model", "kind"], registry=ref)
    chat = "/v1/chat/completions"
    seen = [(chat, "POST", 200, "ten_a", 0.0004), (chat, "POST", 200, "ten_a", 0.001),
            (chat, "POST", 429, "ten_b", 0.0025000001), ("/v1/embeddings", "POST", 200, None, 75.0),
            (chat, "POST", 200, "ten_a", 60.0), ("/metrics", "GET", 200, None, 0.0)]
    for route, method, status, tenant, seconds in seen:
        metrics.observe_request(route=route, method=method, status=status, tenant_id=tenant, seconds=seconds)
        label = metrics.tenant_label(tenant)
        requests.labels(route, method, str(status), label).inc()
        latency.labels(route, label).observe(seconds)
    for tenant, prompt, completion in [("ten_a", 5, 7), ("ten_a", 0, 3), ("ten_b", 11, 0)]:
        metrics.observe_tokens(tenant_id=tenant, model="m", prompt=prompt, completion=completion)
        if prompt:
            tokens.labels(tenant, "m", "prompt").inc(prompt)
        if completion:
            tokens.labels(tenant, "m", "completion").inc(completion)

    def samples(text: bytes) -> set[str]:
        return {line for line in text.decode().splitlines()
                if line.startswith(("tenantlm_requests", "tenantlm_request_duration", "tenantlm_tokens"))
                and "_created" not in line}

    ours, theirs = metrics.render(), generate_latest(ref)
    assert samples(ours) == samples(theirs) and len(samples(ours)) > 40
    assert b'tenantlm_requests_created{method="POST",route="/v1/chat/completions",status="200",tenant="ten_a"}' in ours
    assert b'tenantlm_tokens_created{kind="prompt",model="m",tenant="ten_a"}' in ours
