"""Limits, budgets, the scheduler and the ledger through a live server and the official SDK: OpenAI's rate headers,
429s the SDK retries, budgets that refuse and cut streams, limits that hold under concurrency, usage that adds up,
and a ledger that survives kill -9 with every acknowledged request metered exactly once."""

from __future__ import annotations

import csv
import io
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from live import Live, Process, ServerConfig, Tenant, start_server

PROVIDERS = [{"name": "fake", "type": "fake", "tokens": 8},
             {"name": "slow", "type": "fake", "tokens": 8, "latency_ms": 300},
             {"name": "long", "type": "fake", "tokens": 120, "token_latency_ms": 2},
             {"name": "second", "type": "fake", "tokens": 8, "latency_ms": 1000}]
MODELS = [{"name": "fake-chat", "provider": "fake", "input_price_per_1m": 1.0, "output_price_per_1m": 2.0},
          {"name": "slow-chat", "provider": "slow"},
          {"name": "long-chat", "provider": "long"},
          {"name": "narrow-chat", "provider": "second", "max_in_flight": 8},  # no headroom set: the default, 1
          {"name": "fake-embed", "provider": "fake", "kind": "embedding", "dimensions": 8}]


def config() -> ServerConfig:
    return ServerConfig(providers=PROVIDERS, models=MODELS)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    proc = start_server(tmp_path_factory.mktemp("admission"), config(), warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


@pytest.fixture
def tenant(live: Live) -> Callable[..., Tenant]:
    def make(**limits: Any) -> Tenant:
        t = live.new_tenant(f"adm-{uuid.uuid4().hex[:8]}")
        if limits:
            with live.admin() as c:
                r = c.put(f"/admin/v1/tenants/{t.id}/limits", json=limits)
                assert r.status_code == 200, r.text
        return t
    return make


def chat(live: Live, key: str, model: str = "fake-chat", **kw: Any) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": "hello"}], **kw})


def test_rate_headers_and_429_with_retry_after(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(rpm=3, tpm=10_000)
    sdk = live.sdk(t.member_key, max_retries=0)
    remaining = []
    for _ in range(3):
        raw = sdk.chat.completions.with_raw_response.create(model="fake-chat",
                                                            messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-ratelimit-limit-requests"] == "3" and raw.headers["x-ratelimit-limit-tokens"] == "10000"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s") and raw.headers["x-tenantlm-usage-id"]
        assert "server" not in raw.headers  # the HTTP server software is not named to callers
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 10_000
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    err = caught.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert 1 <= int(err.response.headers["retry-after"]) <= 61
    assert 0 < int(err.response.headers["retry-after-ms"]) <= 61_000
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0" and "server" not in err.response.headers
    embed = httpx.post(f"{live.url}/v1/embeddings", headers={"authorization": f"Bearer {t.member_key}"},
                       json={"model": "fake-embed", "input": "x"})
    assert embed.status_code == 429  # one rpm for every endpoint


def test_the_sdk_retries_a_429_and_then_succeeds(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(max_concurrency=1)
    statuses: list[int] = []
    client = httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    sdk = live.sdk(t.member_key, max_retries=5, http_client=client)
    for _ in range(5):  # on a loaded machine the holder may not have its slot yet after 0.1 s: then again
        statuses.clear()
        holder = threading.Thread(target=chat, args=(live, t.member_key, "slow-chat"))
        holder.start()
        time.sleep(0.1)  # the holder has the one slot for ~300 ms
        out = sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
        holder.join()
        if statuses[0] == 429:
            break
    assert statuses[0] == 429, "the holder never held the slot first"
    assert out.choices[0].message.content and statuses[-1] == 200


def test_limits_hold_exactly_under_concurrency(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(rpm=17)
    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(lambda _: chat(live, t.member_key).status_code, range(120)))
    assert codes.count(200) == 17 and codes.count(429) == 103


def test_key_and_end_user_sub_limits(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(end_user={"rpm": 2})
    with live.admin(t.admin_key) as c:
        keys = c.get(f"/admin/v1/tenants/{t.id}/keys").json()["data"]
        member = next(k for k in keys if k["role"] == "member")
        assert c.put(f"/admin/v1/tenants/{t.id}/keys/{member['id']}/limits", json={"rpm": 4}).status_code == 200
        other = c.post(f"/admin/v1/tenants/{t.id}/keys", json={"name": "other", "role": "member"}).json()["key"]
    time.sleep(1.1)  # the key cache holds old limits for up to a second
    codes = [chat(live, t.member_key, user=f"u{i % 3}").status_code for i in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]  # the key's rpm (4) binds first
    assert [chat(live, other, user="alice").status_code for _ in range(3)] == [200, 200, 429]  # alice's 2
    assert chat(live, other, user="bob").status_code == 200


def queue_depth(live: Live, tenant_id: str, model: str) -> float:
    """The scheduler's queue depth gauge for one tenant and model, from /metrics (0 when absent)."""
    with live.admin() as c:
        text = c.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("tenantlm_scheduler_queue_depth{") and f'tenant="{tenant_id}"' in line \
                and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_newcomer_starts_at_once_next_to_a_flood(live: Live, tenant: Callable[..., Tenant]) -> None:
    """The default configuration: a model of 8 slots with no headroom set holds one back for newcomers."""
    heavy, light = tenant(), tenant()
    with ThreadPoolExecutor(max_workers=12) as pool:
        flood = [pool.submit(chat, live, heavy.member_key, "narrow-chat") for _ in range(12)]
        deadline = time.monotonic() + 0.8  # each request takes 1 s upstream; read the queue before any ends
        while queue_depth(live, heavy.id, "narrow-chat") < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue_depth(live, heavy.id, "narrow-chat") == 5  # 7 of 8 slots running, 5 waiting (4 without)
        t0 = time.monotonic()
        answer = chat(live, light.member_key, "narrow-chat")
        light_s = time.monotonic() - t0
        codes = [f.result().status_code for f in flood]
    assert answer.status_code == 200 and codes == [200] * 12
    # Served in the held slot at once: ~1 s. Without it, light would wait ~0.8 s more for a flood request to end.
    assert light_s < 1.5, light_s


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_a_client_that_leaves_gives_its_concurrency_slot_back(live: Live, tenant: Callable[..., Tenant],
                                                               stream: bool) -> None:
    """A real socket closed mid-request: the tenant's one concurrency slot comes back and the attempt is metered."""
    t = tenant(max_concurrency=1)
    url, headers = f"{live.url}/v1/chat/completions", {"authorization": f"Bearer {t.member_key}"}
    body = {"model": "long-chat" if stream else "slow-chat", "stream": stream,
            "messages": [{"role": "user", "content": "go"}]}
    if stream:  # 120 tokens at 2 ms: read the first event, then hang up
        with httpx.stream("POST", url, headers=headers, json=body, timeout=60) as r:
            assert r.status_code == 200
            assert any(line.startswith("data: ") for line in r.iter_lines())
    else:  # the upstream answers after 300 ms; the client gives up first
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, headers=headers, json=body, timeout=0.1)
    codes: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not codes or codes[-1] != 200):
        codes.append(chat(live, t.member_key).status_code)  # 429 while the slot is still held
        time.sleep(0.05)
    assert codes[-1] == 200 and set(codes) <= {200, 429}, codes
    deadline = time.monotonic() + 15
    while True:
        with live.admin() as c:
            rows = c.get(f"/admin/v1/tenants/{t.id}/usage", params={"group_by": "status"}).json()["data"]
        by_status = {row["status"]: row["requests"] for row in rows}
        if sum(by_status.values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    # the left request is metered once: cut short while streaming; served in full (nobody read it) when plain
    assert by_status == ({"cancelled": 1, "ok": 1} if stream else {"ok": 2}), by_status


def test_budget_refuses_with_insufficient_quota(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(monthly_token_budget=100, default_max_tokens=8)
    sdk = live.sdk(t.member_key, max_retries=0)
    served = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
            served += 1
    assert caught.value.code == "insufficient_quota" and 3 <= served < 20
    totals = usage(live, t.id, expect_requests=served)
    assert totals["prompt_tokens"] + totals["completion_tokens"] <= 100


def test_a_request_no_limit_could_ever_admit_is_a_400_not_a_429(live: Live, tenant: Callable[..., Tenant]) -> None:
    """A 429 tells the SDK to retry; a request larger than the whole limit would be retried for nothing."""
    t = tenant(tpm=500)
    sdk = live.sdk(t.member_key, max_retries=3)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=1000)
    err = caught.value
    assert err.status_code == 400 and err.code == "request_too_large" and err.param == "max_tokens"
    assert "never be admitted" in err.message and "limit 500" in err.message
    ok = sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert ok.choices[0].message.content
    cut_off = tenant(monthly_token_budget=0)  # a limit of zero is a tenant cut off: still insufficient_quota
    r = chat(live, cut_off.member_key, max_tokens=10)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text


def test_a_stream_is_cut_when_the_budget_runs_out(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant(monthly_token_budget=60, default_max_tokens=10)
    events = []
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers={"authorization": f"Bearer {t.member_key}"},
                      json={"model": "long-chat", "stream": True, "messages": [{"role": "user", "content": "go"}]},
                      timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] != "[DONE]"
    last = json.loads(events[-1])
    assert last["error"]["code"] == "insufficient_quota"
    content = [e for e in events[:-1] if json.loads(e).get("choices")]
    assert 20 <= len(content) < 120  # it ran, then stopped well before the model's 120 tokens
    rows = usage(live, t.id, expect_requests=1, group_by="status")
    assert rows.get("status") == "cut"


def usage(live: Live, tenant_id: str, *, expect_requests: int, group_by: str | None = None) -> dict[str, Any]:
    """The tenant's usage once the ledger has flushed ``expect_requests`` requests (it flushes every second)."""
    deadline = time.monotonic() + 15
    params = {"group_by": group_by} if group_by else {}
    while True:
        with live.admin() as c:
            r = c.get(f"/admin/v1/tenants/{tenant_id}/usage", params=params)
        assert r.status_code == 200, r.text
        rows = r.json()["data"]
        if sum(x["requests"] for x in rows) >= expect_requests or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(rows) == 1 and rows[0]["requests"] == expect_requests, rows
    return dict(rows[0])


def test_usage_adds_up_to_what_the_sdk_saw(live: Live, tenant: Callable[..., Tenant]) -> None:
    t = tenant()
    sdk = live.sdk(t.member_key)
    seen = [sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"n{i}"}],
                                        user="carol").usage for i in range(5)]
    emb = sdk.embeddings.create(model="fake-embed", input=["a", "b"])
    totals = usage(live, t.id, expect_requests=6)
    assert totals["prompt_tokens"] == sum(u.prompt_tokens for u in seen if u) + emb.usage.prompt_tokens
    assert totals["completion_tokens"] == sum(u.completion_tokens for u in seen if u)
    cost = sum(u.prompt_tokens * 1.0 / 1e6 + u.completion_tokens * 2.0 / 1e6 for u in seen if u)
    assert abs(totals["cost_usd"] - cost) < 1e-9
    with live.admin(t.admin_key) as c:
        by_model = c.get(f"/admin/v1/tenants/{t.id}/usage", params={"group_by": "model,end_user"}).json()["data"]
        assert {(r["model"], r["end_user"], r["requests"]) for r in by_model} == {("fake-chat", "carol", 5),
                                                                                  ("fake-embed", None, 1)}
        lines = c.get(f"/admin/v1/tenants/{t.id}/usage", params={"format": "cloudevents"}).text.splitlines()
        assert len(lines) == 6 and all(json.loads(x)["subject"] == t.id for x in lines)
    with live.admin(t.member_key) as c:
        assert c.get(f"/admin/v1/tenants/{t.id}/usage").status_code == 403


# --- kill -9 --------------------------------------------------------------------------------------------------
def _burst(proc: Process, key: str, n: int, acked: list[str], stop_after: int) -> None:
    """n concurrent requests; kill -9 the server once ``stop_after`` of them were acknowledged."""
    lock = threading.Lock()

    def one(_: int) -> None:
        try:
            r = httpx.post(f"{proc.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                           json={"model": "slow-chat", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            with lock:
                acked.append(r.headers["x-tenantlm-usage-id"])
                if len(acked) == stop_after:
                    proc.proc.send_signal(signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_ledger_survives_kill_9_with_nothing_lost_or_doubled(tmp_path: Path, sync: str) -> None:
    cfg = config()
    cfg.env = {**cfg.env, "TENANTLM_LEDGER_SYNC": sync}
    cfg.providers = [{**p, "latency_ms": 40} if p["name"] == "slow" else p for p in PROVIDERS]
    cfg.models = [{**m, "max_in_flight": 8} if m["name"] == "slow-chat" else m for m in MODELS]
    data = tmp_path / "data"
    proc = start_server(tmp_path, cfg, warmup=False, data_dir=data)
    live = Live(proc.url, proc, "sqlite")
    t = live.new_tenant("crash")
    acked: list[str] = []
    try:
        _burst(proc, t.member_key, 60, acked, stop_after=25)
        assert proc.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.stop()
    assert len(acked) >= 25
    again = start_server(tmp_path, cfg, warmup=False, data_dir=data)
    try:
        live = Live(again.url, again, "sqlite")
        deadline = time.monotonic() + 15
        while True:
            with live.admin() as c:
                r = c.get(f"/admin/v1/tenants/{t.id}/usage", params={"format": "csv"})
            events = list(csv.DictReader(io.StringIO(r.text)))
            if len(events) >= len(acked) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        again.stop()
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))  # nothing doubled
    uids = [i.rsplit(":", 1)[0] for i in ids]
    missing = set(acked) - set(uids)
    assert not missing, f"{len(missing)} acknowledged requests were not metered"  # nothing lost
    assert all(uids.count(u) == 1 for u in acked)  # one attempt each, metered once
