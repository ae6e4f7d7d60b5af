"""The one place where errors become HTTP responses, always in OpenAI's error shape.

``error_response`` renders every error the server answers: the FastAPI routes' (through the exception handlers
installed here), the chat handler's (``api/openai/chat.py``) and the request context's 413 (``api/middleware.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from tenantlm.api.responses import JSONResponse
from tenantlm.errors import InvalidRequest, MalformedJSON, NotFound, TenantLMError
from tenantlm.observability.metrics import Metrics

log = logging.getLogger("tenantlm.errors")
_STARLETTE_TYPES = {404: NotFound, 405: InvalidRequest}


def error_response(exc: TenantLMError, *, metrics: Metrics | None, scope: Scope) -> JSONResponse:
    """The response for ``exc`` (status, OpenAI-shaped body, its headers), counted in the error metrics."""
    if metrics is not None:
        metrics.observe_error(tenant_id=scope.get("state", {}).get("tenant_id"), type_=exc.type)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def internal_error(exc: BaseException, scope: Scope) -> TenantLMError:
    """What the caller is told about an unexpected exception (logged here with its traceback): a 500 that names
    the request id, and nothing of the exception itself."""
    log.error("unhandled error", exc_info=exc)
    rid = scope.get("state", {}).get("request_id", "")
    return TenantLMError(f"The server had an error while processing your request (request id {rid}).")


def malformed_json() -> MalformedJSON:
    return MalformedJSON("We could not parse the JSON body of your request. Check that it is valid JSON, sent with "
                         "Content-Type: application/json.")


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(errors: list[Any]) -> InvalidRequest:
    """The first of pydantic's validation errors as OpenAI's 400, with ``param`` naming the field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return malformed_json()
    param = _param(tuple(first.get("loc", ())))
    if param is None and first.get("type") == "missing":
        return InvalidRequest("the request body is empty; send a JSON object")
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"{first.get('msg', 'invalid value')}{where}", param=param)


def install(app: FastAPI, *, metrics: Metrics | None) -> None:
    def respond(request: Request, exc: TenantLMError) -> JSONResponse:
        return error_response(exc, metrics=metrics, scope=request.scope)

    async def on_tenantlm(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TenantLMError)
        return respond(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, validation_error(list(exc.errors())))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STARLETTE_TYPES.get(exc.status_code, InvalidRequest)
        err = kind(str(exc.detail) if exc.status_code != 404 else f"no route for {request.url.path}")
        err.status = exc.status_code
        return respond(request, err)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, internal_error(exc, request.scope))

    app.add_exception_handler(TenantLMError, on_tenantlm)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
