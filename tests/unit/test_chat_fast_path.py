"""The chat fast path's hand-off of a stream to the FastAPI route: the route gets the principal and the parsed body
from the scope, so a streaming request is authenticated and parsed once."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from route_kit import tenant_key
from tenantlm.api.deps import PREPARED, Prepared, principal
from tenantlm.api.openai.fast import ChatFastPath
from tenantlm.tenancy.models import Principal, Role

WHO = tenant_key("ten_a", Role.MEMBER)
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class CountingAuth:
    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, authorization: str | None) -> Principal:
        self.calls += 1
        assert authorization == "Bearer sk-test"
        return WHO


class Services:
    def __init__(self) -> None:
        self.auth = CountingAuth()
        self.auth_failures = None  # not reached: the key is good


def http_scope(app: Any) -> Scope:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [
        (b"authorization", b"Bearer sk-test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "app": app, "query_string": b""}


async def test_a_stream_reaches_the_route_authenticated_and_parsed_once() -> None:
    svc = Services()
    seen: dict[str, Any] = {}

    async def route(scope: Scope, receive: Receive, send: Send) -> None:  # stands in for FastAPI
        seen["scope"] = scope
        seen["body"] = (await receive())["body"]
        request = Request(scope, receive)
        seen["who"] = await principal(request)  # the route's dependency

    raw = orjson.dumps(BODY)
    messages: list[Message] = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError(f"the fast path answered a stream itself: {message}")

    fast = ChatFastPath(route, services=svc)  # type: ignore[arg-type]
    await fast(http_scope(None), receive, send)
    prepared = seen["scope"][PREPARED]
    assert isinstance(prepared, Prepared) and prepared.who is WHO and prepared.body == BODY
    assert seen["body"] == raw  # the body is still there for anything that reads it
    assert seen["who"] is WHO and svc.auth.calls == 1  # the route did not authenticate again


async def test_without_a_hand_off_the_route_authenticates_itself() -> None:
    svc = Services()

    class App:
        class state:  # mirrors FastAPI's app.state
            services = svc

    request = Request(http_scope(App()))
    assert await principal(request) is WHO and svc.auth.calls == 1
