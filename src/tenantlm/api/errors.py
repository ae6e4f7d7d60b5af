"""The one place where errors become HTTP responses, always in OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenantlm.api.responses import JSONResponse
from tenantlm.errors import InvalidRequest, NotFound, TenantLMError

log = logging.getLogger("tenantlm.errors")
_STARLETTE_TYPES = {404: NotFound, 405: InvalidRequest}


def error_response(exc: TenantLMError, request: Request | None = None) -> JSONResponse:
    if request is not None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.observe_error(tenant_id=request.scope.get("state", {}).get("tenant_id"), type_=exc.type)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = _param(tuple(first.get("loc", ())))
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"{first.get('msg', 'invalid value')}{where}", param=param)


def install(app: FastAPI) -> None:
    async def on_tenantlm(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TenantLMError)
        return error_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STARLETTE_TYPES.get(exc.status_code, InvalidRequest)
        err = kind(str(exc.detail) if exc.status_code != 404 else f"no route for {request.url.path}")
        err.status = exc.status_code
        return error_response(err, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        rid = request.scope.get("state", {}).get("request_id", "")
        err = TenantLMError(f"The server had an error while processing your request (request id {rid}).")
        return error_response(err, request)

    app.add_exception_handler(TenantLMError, on_tenantlm)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
