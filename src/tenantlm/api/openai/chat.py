"""``POST /v1/chat/completions``: the one handler for JSON and streamed (SSE) chat, as plain ASGI.

Why plain ASGI: chat completions are the data plane's hot path, and on it FastAPI's layers (route matching over
every admin route, dependency solving, exception-handler wrappers) cost more CPU than the gateway's own work of
authenticating, admitting, scheduling, proxying and metering (py-spy, ``bench/p1_gateways.py``). The FastAPI route
of the same path (``routes.py``) only documents the endpoint in the OpenAPI schema; requests never reach it.

Order: match the route -> authenticate from the headers (before a byte of the body is read, so an unknown caller
cannot make the server buffer a large body) -> the key's permission -> read and parse the body -> validate it
against ``ChatCompletionRequest`` -> ``InferenceService.chat`` (JSON) or ``stream_chat`` (SSE). Every error, from any
step, is rendered by ``api.errors.error_response``, the one renderer the FastAPI routes use too. This runs inside
``RequestContextMiddleware``, so request ids, the body size limit, the access log and the request metrics apply.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantlm.api.deps import authenticate, json_object, validate
from tenantlm.api.errors import error_response, internal_error
from tenantlm.api.openai.protocol import ChatCompletionRequest
from tenantlm.api.responses import EventStreamResponse, JSONResponse
from tenantlm.errors import InvalidRequest, TenantLMError
from tenantlm.prompts.compose import chat_body
from tenantlm.respcache.policy import THRESHOLD_HEADER, request_threshold
from tenantlm.respcache.service import HEADER as CACHE_HEADER
from tenantlm.respcache.service import CacheRequest
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission

if TYPE_CHECKING:
    from tenantlm.inference.service import Reply
    from tenantlm.services import Services

log = logging.getLogger("tenantlm.errors")
PATH = "/v1/chat/completions"
USER_HEADER = "x-tenantlm-user"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ClientGone(Exception):
    """The client disconnected before its request body was complete: there is nobody to answer."""


class _RouteLabel:
    """What the request middleware reads from ``scope["route"]`` to label metrics and the access log."""

    path = PATH


class ChatCompletions:
    """Serves ``POST /v1/chat/completions``; passes every other request on to ``app``."""

    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services
        self.route = _RouteLabel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        started = [False]  # set once the response has begun: an error after that can only be logged
        try:
            await self._serve(scope, receive, _noting_start(send, started))
        except ClientGone:
            return
        except Exception as exc:
            if started[0]:
                log.error("error after the response started", exc_info=exc)
                return
            error = exc if isinstance(exc, TenantLMError) else internal_error(exc, scope)
            await error_response(error, metrics=self.services.metrics, scope=scope)(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = self.services
        headers = dict(scope["headers"])  # the last of a repeated header wins, as Starlette's Headers.get
        authorization = headers.get(b"authorization")
        client = scope.get("client")
        who = await authenticate(svc, None if authorization is None else authorization.decode("latin-1"),
                                 client[0] if client else None, scope)
        ctx = access.data_plane(who, Permission.INFERENCE)
        body = json_object(await read_body(receive))
        rendered = None
        if body.get("prompt") is not None:  # a prompt template (the SDK's extra_body), rendered for this tenant
            rendered = await svc.prompts.render(tenant_id=ctx.tenant_id, prompt=body["prompt"])
            body = chat_body(body, rendered)
        validate(ChatCompletionRequest, body)
        user_header = headers.get(USER_HEADER.encode())
        end_user = None if user_header is None else user_header.decode("latin-1")
        cache = cache_request(headers)
        use = None if rendered is None else rendered.use
        if body.get("stream"):
            stream = await svc.inference.stream_chat(ctx=ctx, body=body, end_user_header=end_user, cache=cache,
                                                     prompt_use=use)
            await EventStreamResponse(stream.events, headers={**SSE_HEADERS, **stream.headers})(scope, receive, send)
            return
        echo = None if rendered is None else rendered.echo

        async def respond(reply: Reply) -> None:  # called once the usage is on disk, before the settlement
            out = reply.body if echo is None else {**reply.body, "prompt": echo}
            await JSONResponse(out, headers=reply.headers)(scope, receive, send)

        await svc.inference.chat(ctx=ctx, body=body, end_user_header=end_user, respond=respond, cache=cache,
                                 prompt_use=use)


def cache_request(headers: dict[bytes, bytes]) -> CacheRequest:
    """``x-tenantlm-cache: bypass`` (skip the cache) and ``x-tenantlm-cache-threshold: 0.97`` (raise the semantic
    threshold for this request)."""
    mode = headers.get(CACHE_HEADER.encode())
    if mode is not None and mode.decode("latin-1").strip().lower() != "bypass":
        raise InvalidRequest(f"the {CACHE_HEADER} request header accepts only 'bypass'", param=CACHE_HEADER)
    threshold = headers.get(THRESHOLD_HEADER.encode())
    return CacheRequest(bypass=mode is not None,
                        min_similarity=request_threshold(None if threshold is None else threshold.decode("latin-1")))


def _noting_start(send: Send, started: list[bool]) -> Send:
    async def noting(message: Message) -> None:
        if message["type"] == "http.response.start":
            started[0] = True
        await send(message)

    return noting


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
