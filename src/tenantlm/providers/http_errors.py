"""Turning an upstream's HTTP answer into the gateway's error tree, and the retry rules that go with it.

The caller sees the upstream's own message for request errors (it describes *their* request) but never the
upstream's headers, and an upstream 401/403 is the gateway's credential problem, not the tenant's: it maps to
:class:`UpstreamError`, so a tenant is never told that its key is wrong when the operator's is.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import orjson

from tenantlm.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TenantLMError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

MAX_MESSAGE_CHARS = 500
RETRYABLE_STATUSES = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def is_health_failure(status: int) -> bool:
    """Statuses that count against the upstream's circuit breaker (overload and rate limits do not)."""
    return status >= 500


def retry_after_s(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (OpenAI's), else ``retry-after`` in seconds or as an HTTP date; ``None`` if absent."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_fields(content: bytes) -> tuple[str, str | None, str | None]:
    """(message, param, code) from OpenAI's ``{"error": {...}}``, ``{"error": "..."}`` or ``{"detail": ...}``."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace").strip(), None, None
    error = body.get("error", body.get("detail")) if isinstance(body, dict) else None
    if isinstance(error, dict):
        param, code = error.get("param"), error.get("code")
        return (str(error.get("message", "")), param if isinstance(param, str) else None,
                code if isinstance(code, str) else None)
    if error is not None:
        return str(error), None, None
    return content.decode("utf-8", "replace").strip(), None, None


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def error_from_response(provider: str, status: int, headers: httpx.Headers, content: bytes) -> TenantLMError:
    message, param, code = _error_fields(content)
    message = _clip(message) or f"HTTP {status}"
    if status in (401, 403):
        return UpstreamError(f"upstream {provider!r} rejected the gateway's credentials (HTTP {status})")
    if status == 429:
        return RateLimited(f"upstream {provider!r} is rate limiting: {message}", retry_after=retry_after_s(headers))
    if status >= 500:
        return _server_error(provider, status, message)
    return _request_error(status, message, param, code)


def _server_error(provider: str, status: int, message: str) -> TenantLMError:
    text = f"upstream {provider!r} failed (HTTP {status}): {message}"
    if status == 503:
        return UpstreamUnavailable(text)
    if status == 504:
        return UpstreamTimeout(text)
    return UpstreamError(text)


def _request_error(status: int, message: str, param: str | None, code: str | None) -> TenantLMError:
    if status == 404:
        return NotFound(message, param=param, code=code)
    if status == 409:
        return Conflict(message, param=param, code=code)
    if status == 413:
        return PayloadTooLarge(message, param=param, code=code)
    return InvalidRequest(message, param=param, code=code)


def transport_error(provider: str, exc: httpx.TransportError) -> TenantLMError:
    """Map an httpx exception: timeouts -> :class:`UpstreamTimeout`, the rest -> :class:`UpstreamUnavailable`."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream {provider!r} timed out ({type(exc).__name__})")
    return UpstreamUnavailable(f"upstream {provider!r} is unreachable ({type(exc).__name__})")
