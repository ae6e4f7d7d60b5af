"""A stream whose client leaves before the first event was sent still finishes its passage: the scheduler slot, the
tenant's concurrency slot and the reservation come back, and the next request is served.

The app runs in-process on SQLite and is driven at the ASGI level, so the client can leave at an exact point: right
after the request, before the response has started (the window a real socket cannot hit on purpose)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.types import Message

from tenantlm.app import TenantLMApp, create_app
from tenantlm.settings import ModelConfig, ProviderConfig, Settings

ONE = {"rpm": None, "tpm": None, "max_concurrency": 1, "monthly_token_budget": None}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False,
        providers=[ProviderConfig(name="fake", type="fake", tokens=4)],
        models=[ModelConfig(name="chat", provider="fake", max_in_flight=1)],
        plans={"free": {"description": "one at a time", "limits": ONE}})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def tenant_key(app: TenantLMApp) -> str:
    tenancy = app.state.services.tenancy
    tenant = await tenancy.create_tenant({"name": "t"}, actor="test")
    created = await tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="test")
    return str(created.secret)


def scope(key: str, spec: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
            "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")]}


def body(stream: bool) -> bytes:
    return orjson.dumps({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


async def chat(app: TenantLMApp, key: str) -> tuple[int, bytes]:
    """A plain request that stays to the end."""
    sent: list[Message] = []
    request: list[Message] = [{"type": "http.request", "body": body(False), "more_body": False}]

    async def receive() -> Message:
        if request:
            return request.pop()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope(key, "2.4"), receive, send), timeout=10)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def leave_early(app: TenantLMApp, key: str, spec: str) -> list[Message]:
    """A stream whose client is gone before the first byte of the response: with ASGI spec 2.4 the server's send
    fails at the response start; before 2.4, Starlette sees the disconnect first and cancels the sender."""
    sent: list[Message] = []
    request: list[Message] = [{"type": "http.request", "body": body(True), "more_body": False}]

    async def receive() -> Message:
        return request.pop() if request else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if spec == "2.4":
            raise OSError("connection reset by peer")
        await asyncio.sleep(0)  # a socket write yields to the loop, where Starlette's cancellation lands
        sent.append(message)

    await asyncio.wait_for(app(scope(key, spec), receive, send), timeout=10)  # a client leaving is no error
    return sent


@pytest.mark.parametrize("spec", ["2.4", "2.3"])
async def test_a_client_gone_before_the_first_event_frees_its_slots(app: TenantLMApp, spec: str) -> None:
    key = await tenant_key(app)
    gate = app.state.services.inference.gate
    sent = await leave_early(app, key, spec)
    assert not any(m.get("body") for m in sent)  # the client got no event
    assert gate.open == 0  # the passage was finished
    status, _ = await chat(app, key)  # one slot in the scheduler and one for the tenant: both free again
    assert status == 200
    ledger = app.state.services.ledger
    await ledger.flush()
    statuses = sorted([e.status async for page in ledger.platform_events(start=0, end=4e9) for e in page])
    assert statuses == ["cancelled", "ok"]  # the stream's upstream attempt is metered once, as cancelled
