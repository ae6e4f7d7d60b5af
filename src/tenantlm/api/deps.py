"""Request dependencies: the services container, the authenticated principal, JSON body parsing and validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from tenantlm.api.errors import malformed_json, validation_error
from tenantlm.errors import AuthenticationFailed, InvalidRequest
from tenantlm.observability.logging import tenant_id_var
from tenantlm.tenancy.models import Principal, TenantContext

if TYPE_CHECKING:
    from tenantlm.services import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def principal(request: Request) -> Principal:
    return await authenticate(services(request), request.headers.get("authorization"),
                              request.client.host if request.client else None, request.scope)


async def authenticate(svc: Services, authorization: str | None, client: str | None, scope: Scope) -> Principal:
    """The caller's principal from its ``authorization`` header; a failure is counted for the audit log's
    aggregate and raised. A tenant's id is noted on the request (metrics, logs)."""
    try:
        found = await svc.auth.authenticate(authorization)
    except AuthenticationFailed as exc:
        svc.auth_failures.record(reason=exc.reason, client=client, key_id=exc.key_id, tenant_id=exc.tenant_id)
        raise
    if isinstance(found, TenantContext):
        scope.setdefault("state", {})["tenant_id"] = found.tenant_id
        tenant_id_var.set(found.tenant_id)
    return found


async def json_body(request: Request) -> dict[str, Any]:
    return json_object(await request.body())


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, with OpenAI's error for anything else."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed_json() from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return data


def validate(schema: type[BaseModel], body: dict[str, Any]) -> None:
    """Check ``body`` against a wire schema; the first problem becomes OpenAI's 400 naming the field."""
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from None
