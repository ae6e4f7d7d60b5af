"""``POST /v1/chat/completions`` served as plain ASGI, without Starlette's router, request object and FastAPI's
dependency solving.

Why: chat completions are the data plane's hot path, and on it the framework's layers (route matching over every
admin route, dependency solving, exception-handler wrappers, response objects) cost more CPU than the gateway's own
work of authenticating, admitting, scheduling, proxying and metering (py-spy, ``bench/p1_gateways.py``).

The same steps run in the same order as in the FastAPI route (``routes.py``), through the same functions:
authenticate (failures counted for the audit log), check the key's role, parse and validate the body, then
``InferenceService.chat``; errors get the same OpenAI-shaped bodies and headers as ``api/errors.py`` gives them.
Streams are handed to the FastAPI route with the body already read (replayed) and the principal and parsed body in
the scope (so they are not authenticated and parsed twice), and streaming keeps Starlette's client-disconnect
handling. This sits inside ``RequestContextMiddleware``, so request ids, the body size limit, the
access log and the request metrics apply here as everywhere.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantlm.api.deps import PREPARED, Prepared, authenticate, json_object
from tenantlm.api.openai.protocol import ChatCompletionRequest
from tenantlm.api.openai.routes import USER_HEADER, validate
from tenantlm.errors import TenantLMError
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission

if TYPE_CHECKING:
    from tenantlm.app import Services
    from tenantlm.inference.service import Reply

log = logging.getLogger("tenantlm.errors")
PATH = "/v1/chat/completions"
_USER = USER_HEADER.encode("latin-1")
_JSON = (b"content-type", b"application/json")


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _RouteLabel:
    """What the request middleware reads from ``scope["route"]`` to label metrics and the access log."""

    path = PATH


class ChatFastPath:
    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services
        self.route = _RouteLabel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        answered = [False]  # set once the 200 is on its way: an error after that can only be logged
        try:
            stream_body = await self._chat(scope, receive, send, answered)
        except _ClientGone:  # nobody to answer; nothing was admitted
            return
        except Exception as exc:
            if answered[0]:
                log.error("error after the response was sent", exc_info=exc)
                return
            if not isinstance(exc, TenantLMError):  # the same last resort as api/errors.py's handler
                log.error("unhandled error", exc_info=exc)
                rid = scope.get("state", {}).get("request_id", "")
                exc = TenantLMError(f"The server had an error while processing your request (request id {rid}).")
            await self._send_error(scope, send, exc)
            return
        if stream_body is not None:  # outside the try: FastAPI answers its own errors for streams
            await self.app(scope, _replay(stream_body, receive), send)

    async def _chat(self, scope: Scope, receive: Receive, send: Send, answered: list[bool]) -> bytes | None:
        """Serves a non-streaming request; for a stream, returns its body for the FastAPI route instead, with the
        principal and the parsed body in the scope (``deps.PREPARED``) so the route does not do that work again."""
        raw = await _read_body(receive)
        authorization = user = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == _USER:
                user = value.decode("latin-1")
        client = scope.get("client")
        svc = self.services
        who = await authenticate(svc, authorization, client[0] if client else None, scope)
        ctx = access.data_plane(who, Permission.INFERENCE)
        body = json_object(raw)
        validate(ChatCompletionRequest, body)
        if body.get("stream"):
            scope[PREPARED] = Prepared(who=who, body=body)
            return raw
        async def respond(reply: Reply) -> None:  # called once the usage is on disk, before the settlement
            answered[0] = True
            await _send_json(send, 200, reply.body, reply.headers)

        await svc.inference.chat(ctx=ctx, body=body, end_user_header=user, respond=respond)
        return None

    async def _send_error(self, scope: Scope, send: Send, exc: TenantLMError) -> None:
        self.services.metrics.observe_error(tenant_id=scope.get("state", {}).get("tenant_id"), type_=exc.type)
        await _send_json(send, exc.status, exc.body(), exc.headers)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body once, then whatever the client sends next (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


_NAMES: dict[str, bytes] = {}  # header names as sent: our own few (rate limits, usage id, retry-after), so bounded


def _name(name: str) -> bytes:
    raw = _NAMES.get(name)
    if raw is None:
        raw = name.lower().encode("latin-1")
        if len(_NAMES) < 256:
            _NAMES[name] = raw
    return raw


async def _send_json(send: Send, status: int, content: Any, headers: dict[str, str] | None) -> None:
    body = orjson.dumps(content)
    raw_headers = [_JSON, (b"content-length", b"%d" % len(body))]
    if headers:
        for k, v in headers.items():
            raw_headers.append((_NAMES.get(k) or _name(k), (v if type(v) is str else str(v)).encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
