"""OpenAI's Files API (``/v1/files``) for a tenant key: upload, list, retrieve, content, delete.

Viewer keys may list and read; uploading and deleting need ``knowledge:write`` (member and admin keys). A file id of
another tenant answers exactly as a missing one (404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from tenantlm.api.deps import principal, services
from tenantlm.api.responses import JSONResponse
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, Principal

router = APIRouter(prefix="/v1", default_response_class=JSONResponse)
PrincipalDep = Annotated[Principal, Depends(principal)]
UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": ["assistants", "batch", "fine-tune", "vision", "user_data",
                                                          "evals"]},
                   "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                   "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000}}}}}}}


@router.post("/files", openapi_extra=UPLOAD_SCHEMA)
async def upload_file(request: Request, who: PrincipalDep) -> Any:
    """Multipart upload; the content is sealed as it arrives and counts against the tenant's storage."""
    ctx = access.data_plane(who, Permission.KNOWLEDGE_WRITE)
    stored = await services(request).files.upload(tenant=ctx.tenant, content_type=request.headers.get("content-type"),
                                                  body=request.stream(), actor=access.actor(who))
    return stored.public()


@router.get("/files")
async def list_files(request: Request, who: PrincipalDep, purpose: Annotated[str | None, Query(max_length=32)] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                     order: Literal["asc", "desc"] = "desc",
                     after: Annotated[str | None, Query(max_length=64)] = None) -> Any:
    ctx = access.data_plane(who, Permission.KNOWLEDGE_READ)
    page, more = await services(request).files.list(tenant_id=ctx.tenant_id, purpose=purpose, after=after,
                                                    limit=limit, order=order)
    data = [f.public() for f in page]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.KNOWLEDGE_READ)
    return (await services(request).files.get(tenant_id=ctx.tenant_id, file_id=file_id)).public()


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request, who: PrincipalDep) -> StreamingResponse:
    ctx = access.data_plane(who, Permission.KNOWLEDGE_READ)
    stored, chunks = await services(request).files.content(tenant_id=ctx.tenant_id, file_id=file_id)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"content-length": str(stored.size)})


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request, who: PrincipalDep) -> Any:
    ctx = access.data_plane(who, Permission.KNOWLEDGE_WRITE)
    return await services(request).files.delete(tenant_id=ctx.tenant_id, file_id=file_id, actor=access.actor(who))
