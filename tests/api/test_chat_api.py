"""Chat completions through a live server with the official SDK: fake, proxied upstream and the local model."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest

from live import Live, Tenant

MSG = [{"role": "user", "content": "Say hello to the tenant"}]


@pytest.fixture(scope="module")
def tenant(sqlite_server: Live) -> Tenant:
    return sqlite_server.new_tenant("chat-suite")


def test_chat_non_stream_reports_usage(sqlite_server: Live, tenant: Tenant) -> None:
    reply = sqlite_server.sdk(tenant.member_key).chat.completions.create(model="fake-chat", messages=MSG)
    assert reply.model == "fake-chat" and reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = sqlite_server.sdk(tenant.member_key).chat.completions.create(model="fake-chat", messages=MSG)
    assert again.choices[0].message.content == reply.choices[0].message.content


@pytest.mark.parametrize("model", ["fake-chat", "proxied-chat"])
def test_chat_stream_with_usage_chunk(sqlite_server: Live, tenant: Tenant, model: str) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    stream = sdk.chat.completions.create(model=model, messages=MSG, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.model == model for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.usage is not None) == 1
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"] or finish == ["length"]


def test_stream_without_include_usage_has_no_usage_chunk(sqlite_server: Live, tenant: Tenant) -> None:
    chunks = list(sqlite_server.sdk(tenant.member_key).chat.completions.create(
        model="proxied-chat", messages=MSG, stream=True))
    assert chunks and all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


@pytest.mark.parametrize("model", ["fake-chat", "proxied-chat"])
def test_max_tokens_and_stop(sqlite_server: Live, tenant: Tenant, model: str) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    short = sdk.chat.completions.create(model=model, messages=MSG, max_tokens=2)
    assert short.usage is not None and short.usage.completion_tokens == 2
    assert short.choices[0].finish_reason == "length"
    newer = sdk.chat.completions.create(model=model, messages=MSG, max_completion_tokens=3)
    assert newer.usage is not None and newer.usage.completion_tokens == 3
    full = sdk.chat.completions.create(model=model, messages=MSG, seed=7, temperature=0.5, top_p=0.9)
    words = (full.choices[0].message.content or "").split()
    assert len(words) > 3
    cut = sdk.chat.completions.create(model=model, messages=MSG, stop=[words[2]])
    assert cut.choices[0].finish_reason == "stop"
    assert words[2] not in (cut.choices[0].message.content or "").split()


def test_tools_pass_through_to_upstream(sqlite_server: Live, tenant: Tenant) -> None:
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
    reply = sqlite_server.sdk(tenant.member_key).chat.completions.create(model="proxied-chat", messages=MSG,
                                                                          tools=tools)  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and call and call[0].function.name == "lookup_order"


def test_fallback_to_next_model_when_upstream_is_down(sqlite_server: Live, tenant: Tenant) -> None:
    reply = sqlite_server.sdk(tenant.member_key).chat.completions.create(model="dead-chat", messages=MSG)
    assert reply.model == "dead-chat" and reply.choices[0].message.content


@pytest.mark.local_models
def test_local_model_chat_and_stream(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]
    reply = sdk.chat.completions.create(model="smollm2-135m-instruct", messages=msgs, max_tokens=24, seed=1,
                                        temperature=0)
    assert reply.choices[0].message.content and reply.choices[0].message.content.strip()
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 24 and reply.usage.prompt_tokens > 5
    chunks = list(sdk.chat.completions.create(model="smollm2-135m-instruct", messages=msgs, max_tokens=16,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 16


ERROR_CASES: list[tuple[str, bytes, int, str | None]] = [
    ("malformed json", b'{"model": "fake-chat", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("empty body", b"", 400, None),
    ("no messages", json.dumps({"model": "fake-chat"}).encode(), 400, "messages"),
    ("empty messages", json.dumps({"model": "fake-chat", "messages": []}).encode(), 400, "messages"),
    ("bad role", json.dumps({"model": "fake-chat", "messages": [{"role": "robot", "content": "x"}]}).encode(), 400,
     "messages.0.role"),
    ("bad temperature", json.dumps({"model": "fake-chat", "messages": MSG, "temperature": 9}).encode(), 400,
     "temperature"),
    ("bad max_tokens", json.dumps({"model": "fake-chat", "messages": MSG, "max_tokens": 0}).encode(), 400,
     "max_tokens"),
    ("unknown model", json.dumps({"model": "gpt-17", "messages": MSG}).encode(), 404, "model"),
    ("embedding model", json.dumps({"model": "fake-embed", "messages": MSG}).encode(), 400, "model"),
    ("too many stops", json.dumps({"model": "fake-chat", "messages": MSG, "stop": list("abcde")}).encode(), 400,
     "stop"),
]


@pytest.mark.parametrize("case, body, status, param", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_paths_are_openai_shaped(sqlite_server: Live, tenant: Tenant, case: str, body: bytes, status: int,
                                       param: str | None) -> None:
    r = httpx.post(sqlite_server.url + "/v1/chat/completions", content=body,
                   headers={"authorization": f"Bearer {tenant.member_key}", "content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param:
        assert err["param"] == param


def test_sdk_raises_typed_errors(sqlite_server: Live, tenant: Tenant) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.chat.completions.create(model="nope", messages=MSG)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="fake-chat", messages=[])


def test_body_over_limit_gets_413(sqlite_server: Live, tenant: Tenant) -> None:
    big = {"model": "fake-chat", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    headers = {"authorization": f"Bearer {tenant.member_key}"}
    r = httpx.post(sqlite_server.url + "/v1/chat/completions", json=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> object:
        yield b'{"model": "fake-chat", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    r = httpx.post(sqlite_server.url + "/v1/chat/completions", content=chunks(), headers=headers)  # type: ignore[arg-type]
    assert r.status_code == 413


def test_unknown_route_and_method(sqlite_server: Live, tenant: Tenant) -> None:
    headers = {"authorization": f"Bearer {tenant.member_key}"}
    r = httpx.get(sqlite_server.url + "/v1/nothing-here", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.put(sqlite_server.url + "/v1/chat/completions", headers=headers)
    assert r.status_code == 405 and "error" in r.json()


def test_models_list_and_get(sqlite_server: Live, tenant: Tenant, unique: Callable[[str], str]) -> None:
    sdk = sqlite_server.sdk(tenant.member_key)
    ids = {m.id for m in sdk.models.list()}
    assert {"fake-chat", "fake-embed", "proxied-chat"} <= ids
    assert sdk.models.retrieve("fake-chat").id == "fake-chat"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
