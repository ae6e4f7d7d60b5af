"""The response cache through a live server and the official SDK, on SQLite (embedded memory backend) and on
Postgres with Redis (the Redis backend): settings and their validation, plan defaults, hits and misses with their
header, metering of hits (cached_tokens in the answer and in the usage API, the hit price), what is not cacheable,
personal answers, and isolation (the same prompt from another tenant is a miss)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis as redis_client

from live import Live, Tenant, catalog_config, start_server
from services import PostgresServer, RedisServer

MODEL = "fake-chat"
HEADER = "x-tenantlm-cache"


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("cache")
    config = catalog_config(None, local=False)
    config.env["TENANTLM_CACHE_EMBEDDING_MODEL"] = "fake-embed"
    kw: dict[str, str] = {}
    if request.param == "postgres+redis":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        redis: RedisServer = request.getfixturevalue("redis_server")
        db = pg.create_database(f"cache_{uuid.uuid4().hex[:8]}")
        kw = {"database_url": db.app_url, "migrate_url": db.owner_url}
        config.env["TENANTLM_REDIS_URL"] = redis.url_for(3)
    proc = start_server(tmp, config, warmup=False, **kw)
    try:
        yield Live(proc.url, proc, request.param)
    finally:
        proc.stop()


def tenant(live: Live, cache: dict[str, Any] | None = None, **fields: Any) -> Tenant:
    t = live.new_tenant(f"cache-{uuid.uuid4().hex[:8]}", **fields)
    if cache is not None:
        set_cache(live, t, cache)
    return t


def set_cache(live: Live, t: Tenant, cache: dict[str, Any] | None) -> None:
    with live.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"cache": cache}})
    assert r.status_code == 200, r.text


def ask(live: Live, t: Tenant, text: str, *, headers: dict[str, str] | None = None, **kw: Any) -> tuple[Any, Any]:
    """(the parsed completion, the response headers)."""
    raw = live.sdk(t.member_key, max_retries=0).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **kw)
    return raw.parse(), raw.headers


def usage_by_provider(live: Live, tenant_id: str, requests: int) -> dict[str, dict[str, Any]]:
    """The tenant's chat usage per provider once the ledger has flushed ``requests`` requests (it flushes every
    second); a semantic lookup's embeddings are metered too, under the embedding model, and left out here."""
    deadline = time.monotonic() + 15
    while True:
        with live.admin() as c:
            r = c.get(f"/admin/v1/tenants/{tenant_id}/usage", params={"group_by": "provider,model"})
        assert r.status_code == 200, r.text
        rows = {row["provider"]: row for row in r.json()["data"] if row["model"] == MODEL}
        if sum(row["requests"] for row in rows.values()) >= requests or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


# --- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cache", "param"), [
    ({"exact": "yes"}, "settings.cache.exact"),
    ({"semantic_threshold": 1.5}, "settings.cache.semantic_threshold"),
    ({"semantic_threshold": 0.1}, "settings.cache.semantic_threshold"),
    ({"ttl": 5}, "settings.cache.ttl"),
    ("on", "settings.cache"),
])
def test_invalid_cache_settings_are_a_400_naming_the_field(live: Live, cache: Any, param: str) -> None:
    t = tenant(live)
    with live.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"cache": cache}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_the_settings_object_is_shown_on_the_tenant(live: Live) -> None:
    t = tenant(live, {"exact": True, "semantic": False, "semantic_threshold": 0.97, "personal": True})
    with live.admin() as c:
        shown = c.get(f"/admin/v1/tenants/{t.id}").json()["settings"]["cache"]
    assert shown == {"exact": True, "semantic": False, "semantic_threshold": 0.97, "personal": True}


def test_off_by_default_no_header(live: Live) -> None:
    t = tenant(live)
    for _ in range(2):
        _, headers = ask(live, t, "hello there, default tenant")
        assert HEADER not in headers


def test_a_plans_cache_object_is_its_tenants_default(live: Live) -> None:
    plan = f"cached-{uuid.uuid4().hex[:6]}"
    with live.admin() as c:
        r = c.put(f"/admin/v1/plans/{plan}", json={"limits": {"cache": {"exact": True}}})
        assert r.status_code == 200, r.text
        bad = c.put(f"/admin/v1/plans/{plan}-bad", json={"limits": {"cache": {"exact": 1}}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limits.cache.exact"
    t = tenant(live, plan=plan)
    assert ask(live, t, "plan default question")[1][HEADER] == "miss"
    assert ask(live, t, "plan default question")[1][HEADER] == "hit"
    set_cache(live, t, {"exact": False})  # the tenant's own setting wins over its plan's
    assert HEADER not in ask(live, t, "plan default question")[1]


# --- hits and misses ------------------------------------------------------------------------------------------
def test_a_repeat_is_a_hit_metered_as_cached_tokens_at_the_hit_price(live: Live) -> None:
    t = tenant(live, {"exact": True})
    first, h1 = ask(live, t, "what is the capital of france?", max_tokens=5)
    second, h2 = ask(live, t, "what is the capital of france?", max_tokens=5)
    assert (h1[HEADER], h2[HEADER]) == ("miss", "hit")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id != first.id and second.model == MODEL
    assert first.usage.prompt_tokens_details is None or not first.usage.prompt_tokens_details.cached_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    assert "x-ratelimit-remaining-requests" in h2 or "x-tenantlm-usage-id" in h2  # admitted like any request
    rows = usage_by_provider(live, t.id, 2)
    assert rows["fake"]["requests"] == 1 and rows["fake"]["cached_tokens"] == 0 and rows["fake"]["cost_usd"] > 0
    assert rows["cache"]["requests"] == 1
    assert rows["cache"]["cached_tokens"] == first.usage.prompt_tokens
    assert rows["cache"]["completion_tokens"] == first.usage.completion_tokens
    assert rows["cache"]["cost_usd"] == 0  # the default hit price factor


def test_anything_that_changes_the_answer_is_another_entry(live: Live) -> None:
    t = tenant(live, {"exact": True})
    assert ask(live, t, "same words", max_tokens=4)[1][HEADER] == "miss"
    assert ask(live, t, "same words", max_tokens=3)[1][HEADER] == "miss"
    assert ask(live, t, "same words", max_tokens=4, seed=7)[1][HEADER] == "miss"
    assert ask(live, t, "same words", max_tokens=4, user="someone")[1][HEADER] == "hit"  # attribution only


def test_what_is_not_cacheable_has_no_header(live: Live) -> None:
    t = tenant(live, {"exact": True})
    sdk = live.sdk(t.member_key, max_retries=0)
    messages = [{"role": "user", "content": "call a tool"}]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                            tools=[tool])  # type: ignore[list-item]
        assert HEADER not in raw.headers
        with sdk.chat.completions.with_streaming_response.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                                 tools=[tool], stream=True) as streamed:  # type: ignore[list-item]
            assert HEADER not in streamed.headers
            list(streamed.iter_lines())
        _, headers = ask(live, t, "bypassed", headers={HEADER: "bypass"})
        assert HEADER not in headers


def stream(live: Live, t: Tenant, text: str, **kw: Any) -> tuple[str, Any, list[Any]]:
    """(the streamed text, the headers, the chunks) of a streamed completion through the SDK."""
    sdk = live.sdk(t.member_key, max_retries=0)
    with sdk.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[{"role": "user", "content": text}], stream=True, **kw) as raw:
        chunks = list(raw.parse())
        headers = raw.headers
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text_out, headers, chunks


def test_streams_are_cached_and_share_entries_with_json_answers(live: Live) -> None:
    t = tenant(live, {"exact": True})
    first, h1, _ = stream(live, t, "stream me a story")
    again, h2, chunks = stream(live, t, "stream me a story", stream_options={"include_usage": True})
    assert (h1[HEADER], h2[HEADER]) == ("miss", "hit")
    assert again == first and first
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == chunks[-1].usage.prompt_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    as_json, h3 = ask(live, t, "stream me a story")
    assert h3[HEADER] == "hit" and as_json.choices[0].message.content == first
    answer, _ = ask(live, t, "first as json")
    replayed, h4, _ = stream(live, t, "first as json")
    assert h4[HEADER] == "hit" and replayed == answer.choices[0].message.content


def test_bad_cache_request_headers_are_a_400(live: Live) -> None:
    t = tenant(live, {"exact": True})
    for header, value in ((HEADER, "always"), ("x-tenantlm-cache-threshold", "high"),
                          ("x-tenantlm-cache-threshold", "1.5")):
        with pytest.raises(openai.BadRequestError) as err:
            ask(live, t, "q", headers={header: value})
        assert err.value.body["param"] == header  # type: ignore[index]


def test_personal_answers_are_kept_per_end_user(live: Live) -> None:
    shared = tenant(live, {"exact": True})
    assert ask(live, shared, "my balance?", headers={"x-tenantlm-user": "alice"})[1][HEADER] == "miss"
    assert ask(live, shared, "my balance?", headers={"x-tenantlm-user": "bob"})[1][HEADER] == "hit"
    personal = tenant(live, {"exact": True, "personal": True})
    assert ask(live, personal, "my balance?", headers={"x-tenantlm-user": "alice"})[1][HEADER] == "miss"
    assert ask(live, personal, "my balance?", headers={"x-tenantlm-user": "bob"})[1][HEADER] == "miss"
    assert ask(live, personal, "my balance?", headers={"x-tenantlm-user": "alice"})[1][HEADER] == "hit"


def test_semantic_cache_matches_within_the_tenant_and_a_request_may_raise_the_threshold(live: Live) -> None:
    t = tenant(live, {"semantic": True, "semantic_threshold": 0.95})
    assert ask(live, t, "how do I reset my password")[1][HEADER] == "miss"
    _, h = ask(live, t, "how do I reset my password")
    assert h[HEADER] == "hit" and float(h["x-tenantlm-cache-similarity"]) >= 0.95
    assert ask(live, t, "what are your opening hours")[1][HEADER] == "miss"
    assert ask(live, t, "how do I reset my password", headers={"x-tenantlm-cache-threshold": "0.5"}
               )[1][HEADER] == "hit"  # below the tenant's threshold: ignored, never lowers it


# --- isolation ---------------------------------------------------------------------------------------------------
def test_the_same_prompt_from_another_tenant_is_a_miss(live: Live) -> None:
    a = tenant(live, {"exact": True, "semantic": True})
    b = tenant(live, {"exact": True, "semantic": True})
    prompt = f"confidential roadmap question {uuid.uuid4().hex}"
    assert ask(live, a, prompt)[1][HEADER] == "miss"
    assert ask(live, a, prompt)[1][HEADER] == "hit"
    answer_b, h = ask(live, b, prompt)
    assert h[HEADER] == "miss"  # B never sees, nor times, A's entry: it went to the model
    assert answer_b.usage.prompt_tokens_details is None or not answer_b.usage.prompt_tokens_details.cached_tokens
    assert ask(live, b, prompt)[1][HEADER] == "hit"  # B's own entry, made by its own miss
    rows = usage_by_provider(live, b.id, 2)
    assert rows["fake"]["requests"] == 1 and rows["cache"]["requests"] == 1


def test_a_deleted_tenants_key_cannot_read_its_entries(live: Live) -> None:
    t = tenant(live, {"exact": True})
    assert ask(live, t, "to be erased")[1][HEADER] == "miss"
    with live.admin() as c:
        r = c.request("DELETE", f"/admin/v1/tenants/{t.id}", params={"confirm": t.id})
    assert r.status_code in (200, 204), r.text
    with pytest.raises(openai.AuthenticationError):
        ask(live, t, "to be erased")


def test_with_redis_entries_live_sealed_under_the_tenants_prefix(live: Live, request: pytest.FixtureRequest
                                                                 ) -> None:
    if live.backend != "postgres+redis":
        pytest.skip("the embedded backend keeps entries in the server's memory")
    server: RedisServer = request.getfixturevalue("redis_server")
    t = tenant(live, {"exact": True})
    answer, _ = ask(live, t, "where are entries kept?")
    with redis_client.Redis.from_url(server.url_for(3)) as r:
        names = r.keys(f"tlm:cache:{{{t.id}}}:e:*")
        assert len(names) == 1, names
        stored = r.get(names[0])
    assert stored is not None and stored.startswith(b"TLM1")  # the sealed-record format
    assert answer.choices[0].message.content.encode() not in stored
