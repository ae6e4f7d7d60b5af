"""One error tree for the whole server, mapped to HTTP in exactly one place (``api/errors.py``).

    TenantLMError                      500 api_error
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── MalformedJSON              400 invalid_request_error  code=invalid_json
    │   └── UnsupportedFeature         400 invalid_request_error  code=unsupported_parameter
    ├── AuthenticationFailed           401 invalid_request_error  code=invalid_api_key
    ├── PermissionDenied               403 permission_error
    │   ├── TenantSuspended            403 permission_error       code=tenant_suspended
    │   └── RegionNotAllowed           403 permission_error       code=region_not_allowed
    ├── NotFound                       404 invalid_request_error  code=not_found
    │   └── ModelNotFound              404 invalid_request_error  code=model_not_found
    ├── Conflict                       409 invalid_request_error  code=conflict
    ├── PayloadTooLarge                413 invalid_request_error  code=request_too_large
    ├── RateLimited                    429 rate_limit_exceeded    (carries retry_after seconds)
    ├── UpstreamError                  502 upstream_error         (a provider answered badly)
    │   ├── UpstreamUnavailable        503 upstream_error         code=upstream_unavailable (breaker open,
    │   │                                                          connection refused)
    │   └── UpstreamTimeout            504 upstream_error         code=upstream_timeout
    └── ServiceUnavailable             503 api_error              code=service_unavailable

Every error renders as OpenAI's ``{"error": {"message", "type", "param", "code"}}``. Messages are written for the
caller and never carry secrets or another tenant's data.
"""

from __future__ import annotations

from typing import Any


class TenantLMError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(TenantLMError):
    status = 400
    type = "invalid_request_error"


class MalformedJSON(InvalidRequest):
    code = "invalid_json"


class UnsupportedFeature(InvalidRequest):
    code = "unsupported_parameter"


class AuthenticationFailed(TenantLMError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, reason: str = "missing_key", key_id: str | None = None,
                 tenant_id: str | None = None, **kw: Any) -> None:
        """``reason``, ``key_id`` and ``tenant_id`` are for the audit trail only; the caller always gets one
        message for every bad key, so nothing here is an oracle."""
        super().__init__(message, **kw)
        self.reason = reason
        self.key_id = key_id
        self.tenant_id = tenant_id


class PermissionDenied(TenantLMError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class TenantSuspended(PermissionDenied):
    code = "tenant_suspended"


class RegionNotAllowed(PermissionDenied):
    """A request would reach a model deployment outside the tenant's ``allowed_regions``."""

    code = "region_not_allowed"


class NotFound(TenantLMError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(TenantLMError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(TenantLMError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(TenantLMError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.setdefault("retry-after", str(max(1, round(retry_after))))
            self.headers.setdefault("retry-after-ms", str(int(retry_after * 1000)))


class UpstreamError(TenantLMError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(TenantLMError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
