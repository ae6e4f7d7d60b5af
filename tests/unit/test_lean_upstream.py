"""``bench/lean_upstream.py``, the upstream P1 puts behind every gateway: it must answer what the fake model answers
(same words, finish reason and usage) to the official client, refuse what it does not serve with OpenAI-shaped
errors, count requests like the fake upstream, and speak plain HTTP/1.1 keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvloop

from tenantlm.providers.fake import FakeProvider
from tenantlm.settings import ProviderConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import lean_upstream  # bench scripts are not a package: imported by path

TOKENS = 16


@pytest.fixture(scope="module")
def lean() -> Iterator[int]:
    loop = uvloop.new_event_loop()  # as the script runs
    started = threading.Event()
    port: list[int] = []

    async def run() -> None:
        server, _ = await lean_upstream.open_server("127.0.0.1", 0, TOKENS)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            await server.serve_forever()

    task: list[asyncio.Task[None]] = []
    thread = threading.Thread(target=lambda: loop.run_until_complete(_keep(task, run())), daemon=True)
    thread.start()
    assert started.wait(10)
    yield port[0]
    loop.call_soon_threadsafe(task[0].cancel)
    thread.join(10)
    loop.close()


async def _keep(task: list[asyncio.Task[None]], coro: Any) -> None:
    task.append(asyncio.ensure_future(coro))
    with contextlib.suppress(asyncio.CancelledError):
        await task[0]


def _client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=10)


def _fake(body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(FakeProvider(ProviderConfig(name="fake", type="fake", tokens=TOKENS)).chat(body)).body


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16},
    {"model": "other", "messages": [{"role": "system", "content": "be brief and kind"},
                                    {"role": "user", "content": "what is the weather like today"}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "parts of text"}]}],
     "max_tokens": 3, "seed": 7},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 40},
])
def test_answers_what_the_fake_model_answers(lean: int, body: dict[str, Any]) -> None:
    raw = _client(lean).chat.completions.with_raw_response.create(**body)
    raw.parse()  # the official client accepts it
    got = raw.http_response.json()
    want = _fake(body)
    assert got["id"].startswith("chatcmpl-") and got["id"] != want["id"]
    for field in ("object", "model", "choices"):
        assert got[field] == want[field], field
    assert got["usage"] == want["usage"]


def test_refuses_what_it_does_not_serve(lean: int) -> None:
    client = _client(lean)
    for extra in ({"stream": True}, {"stop": ["x"]}, {"extra_body": {"fake_fail": {"key": "a"}}},
                  {"tools": [{"type": "function", "function": {"name": "f"}}]}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                           **extra)  # type: ignore[call-overload]
        assert "lean upstream" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[])
    assert caught.value.body["param"] == "messages"  # type: ignore[index]


def _raw(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data, resp


def test_bad_bodies_and_unknown_routes(lean: int) -> None:
    status, data, _ = _raw(lean, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and data["error"]["type"] == "invalid_request_error"
    status, data, _ = _raw(lean, "POST", "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and "JSON object" in data["error"]["message"]
    status, data, _ = _raw(lean, "GET", "/v1/nothing")
    assert status == 404 and data["error"]["code"] == "not_found"
    status, data, _ = _raw(lean, "GET", "/v1/models")
    assert status == 200 and data["data"][0]["id"] == "fake"


def test_counts_every_request_and_keeps_connections_alive(lean: int) -> None:
    before = _raw(lean, "GET", "/fake/stats")[1]["requests"]
    conn = http.client.HTTPConnection("127.0.0.1", lean, timeout=10)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(5):  # one connection, five requests: keep-alive
        conn.request("POST", "/v1/chat/completions?x=1", body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["usage"]["prompt_tokens"] == 1
    conn.request("GET", "/fake/stats", headers={"connection": "close"})
    resp = conn.getresponse()
    assert resp.getheader("connection") == "close"
    assert json.loads(resp.read())["requests"] == before + 5 + 1  # five chats and this call
    conn.close()
