"""Pure ASGI middleware (no per-request task hops): request ids, body size limit, access log, metrics."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantlm.api.errors import error_response
from tenantlm.errors import PayloadTooLarge
from tenantlm.observability.logging import request_id_var, tenant_id_var
from tenantlm.observability.metrics import Metrics

log = logging.getLogger("tenantlm.access")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_ID.match(candidate):
                return candidate
    return "req_" + os.urandom(12).hex()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, access_log: bool = True,
                 large_bodies: dict[tuple[str, str], int] | None = None) -> None:
        """``large_bodies``: (method, path) -> the body limit of a route that takes more than ``max_body_bytes``
        (file uploads), which bounds it further itself."""
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.large_bodies = large_bodies or {}
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_token, tid_token = request_id_var.set(rid), tenant_id_var.set(None)
        status = [500]
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            length = _content_length(scope)
            limit = self.large_bodies.get((scope["method"], scope["path"]), self.max_body)
            if length is not None and length > limit:
                await self._too_large(scope, receive, send_wrapper, limit)
            else:
                await self.app(scope, self._limited(receive, limit), send_wrapper)
        finally:
            self._observe(scope, state, status[0], time.perf_counter() - started)
            request_id_var.reset(rid_token)
            tenant_id_var.reset(tid_token)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
            return message

        return wrapped

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        err = PayloadTooLarge(f"request body is larger than the limit of {limit} bytes",
                              headers={"connection": "close"})
        await error_response(err, metrics=self.metrics, scope=scope)(scope, receive, send)

    def _observe(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        tenant_id = state.get("tenant_id")
        self.metrics.observe_request(route=path, method=scope["method"], status=status, tenant_id=tenant_id,
                                     seconds=seconds)
        if self.access_log:
            log.info("%s %s %d", scope["method"], scope["path"], status,
                     extra={"status": status, "duration_ms": round(seconds * 1000, 2), "route": path,
                            "tenant": tenant_id})
