"""The OpenAPI description documents every admin request body (the wire schemas of api/admin/protocol.py), and the
chat endpoint, which the front door serves, is described too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenantlm.api.admin.protocol import SubLimitsBody, TenantLimitsBody, TenantLimitsPut
from tenantlm.app import create_app
from tenantlm.settings import Settings
from tenantlm.tenancy.limits import SUB_FIELDS, TENANT_FIELDS

BODILESS = {("post", "/admin/v1/tenants/{tenant_id}/export"),  # actions with nothing to send
            ("post", "/admin/v1/tenants/{tenant_id}/end_users/{end_user}/export")}


def _openapi(tmp_path: Path) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path, warmup=False)
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def test_every_admin_body_is_documented(tmp_path: Path) -> None:
    schema = _openapi(tmp_path)
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/admin/v1"):
            continue
        for method, op in operations.items():
            if method not in ("post", "put", "patch") or (method, path) in BODILESS:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            assert body is not None, f"{method.upper()} {path} documents no request body"
            ref = body.get("$ref") or next(s.get("$ref") for s in body.get("anyOf", []) if "$ref" in s)
            name = ref.rsplit("/", 1)[-1]
            assert schema["components"]["schemas"][name]["additionalProperties"] is False, name
            checked += 1
    assert checked >= 8


def test_chat_completions_is_described(tmp_path: Path) -> None:
    op = _openapi(tmp_path)["paths"]["/v1/chat/completions"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ChatCompletionRequest")


def test_the_limit_bodies_name_exactly_the_limit_fields() -> None:
    """The wire schemas list the limit fields for the OpenAPI description; a field added to the limits and not
    here would be refused as unknown, so the two lists must stay one."""
    assert set(SubLimitsBody.model_fields) == SUB_FIELDS
    assert set(TenantLimitsBody.model_fields) == TENANT_FIELDS
    assert set(TenantLimitsPut.model_fields) == TENANT_FIELDS | {"end_user"}
