"""OpenAI's Files API per tenant, through the official SDK against a live server on SQLite and on Postgres: upload,
list, retrieve, content, delete; expiry; per-plan limits (413 / 429 insufficient_quota) that leave nothing behind;
roles; foreign ids answered exactly like missing ones; content and names sealed at rest; audit, export, erasure."""

from __future__ import annotations

import base64
import io
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from live import Live, Tenant, catalog_config, start_server
from services import PostgresDatabase, PostgresServer

PART = 1 << 20


@dataclass
class Deployment:
    live: Live
    data_dir: Path
    pg: PostgresDatabase | None

    def raw_storage(self) -> dict[str, bytes]:
        found = {str(p): p.read_bytes() for p in self.data_dir.rglob("*") if p.is_file()}
        if self.pg is not None:
            found["pg_dump"] = self.pg.pg_dump()
        return found


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"files-{request.param}")
    pg, kw = None, {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    proc = start_server(tmp, catalog_config(None, local=False), warmup=False, data_dir=tmp / "data", **kw)
    try:
        yield Deployment(Live(proc.url, proc, request.param), tmp / "data", pg)
    finally:
        proc.stop()


@pytest.fixture
def tenant(dep: Deployment) -> Tenant:
    return dep.live.new_tenant(f"files-{uuid.uuid4().hex[:8]}")


def _sdk(dep: Deployment, key: str) -> openai.OpenAI:
    return dep.live.sdk(key, max_retries=0)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()["error"]
    assert isinstance(body, dict)
    return body


def test_upload_list_retrieve_content_delete(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    small = sdk.files.create(file=("notes.txt", b"hello, files"), purpose="assistants")
    assert small.id.startswith("file-") and small.object == "file" and small.bytes == 12
    assert small.filename == "notes.txt" and small.purpose == "assistants" and small.expires_at is None
    big_bytes = os.urandom(2 * PART + 12345)  # three sealed parts
    big = sdk.files.create(file=("data.bin", big_bytes), purpose="user_data")
    assert big.bytes == len(big_bytes)
    assert sdk.files.content(big.id).read() == big_bytes
    assert sdk.files.content(small.id).read() == b"hello, files"
    assert sdk.files.retrieve(small.id).filename == "notes.txt"
    listed = sdk.files.list()
    assert [f.id for f in listed.data] == [big.id, small.id]  # newest first
    assert [f.id for f in sdk.files.list(order="asc").data] == [small.id, big.id]
    assert [f.id for f in sdk.files.list(purpose="user_data").data] == [big.id]
    page = sdk.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [small.id] and page.has_more
    assert [f.id for f in sdk.files.list(limit=1, order="asc", after=small.id).data] == [big.id]
    assert [f.id for f in sdk.files.list(order="asc")] == [small.id, big.id]  # the SDK's auto-pagination
    deleted = sdk.files.delete(small.id)
    assert deleted.id == small.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(small.id)
    assert [f.id for f in sdk.files.list().data] == [big.id]


def test_an_empty_file_and_a_named_expiry(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    empty = sdk.files.create(file=("empty.txt", b""), purpose="assistants")
    assert empty.bytes == 0 and sdk.files.content(empty.id).read() == b""
    timed = sdk.files.create(file=("t.txt", b"x"), purpose="assistants",
                             expires_after={"anchor": "created_at", "seconds": 3600})
    assert timed.expires_at == timed.created_at + 3600
    batch = sdk.files.create(file=("b.jsonl", b"{}"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 86400  # OpenAI's default for batch files


@pytest.mark.parametrize("fields, files, param", [
    ({}, {"file": ("a.txt", b"x")}, "purpose"),
    ({"purpose": "homework"}, {"file": ("a.txt", b"x")}, "purpose"),
    ({"purpose": "assistants"}, None, "file"),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
     {"file": ("a.txt", b"x")}, "expires_after.seconds"),
])
def test_bad_uploads_are_400s_that_leave_nothing(dep: Deployment, tenant: Tenant, fields: dict[str, str],
                                                   files: dict[str, Any] | None, param: str) -> None:
    with httpx.Client(base_url=dep.live.url, headers={"authorization": f"Bearer {tenant.member_key}"}) as c:
        r = c.post("/v1/files", data=fields, files=files) if files else c.post("/v1/files", data=fields,
                                                                                files={"other": "x"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.text
        r = c.post("/v1/files", content=b"not multipart", headers={"content-type": "text/plain"})
        assert r.status_code == 400
    assert _sdk(dep, tenant.member_key).files.list().data == []


def test_limits_413_and_429_and_nothing_half_stored(dep: Deployment, tenant: Tenant) -> None:
    with dep.live.admin() as c:
        r = c.put(f"/admin/v1/tenants/{tenant.id}/limits", json={"max_file_bytes": 1500, "storage_bytes": 2500})
        assert r.status_code == 200 and r.json()["max_file_bytes"] == 1500, r.text
    sdk = _sdk(dep, tenant.member_key)
    with pytest.raises(openai.APIStatusError) as too_big:
        sdk.files.create(file=("big.bin", b"x" * 2000), purpose="assistants")
    assert too_big.value.status_code == 413
    kept = sdk.files.create(file=("one.bin", b"x" * 1400), purpose="assistants")
    with pytest.raises(openai.RateLimitError) as full:
        sdk.files.create(file=("two.bin", b"y" * 1400), purpose="assistants")
    assert full.value.status_code == 429 and _error(full.value)["code"] == "insufficient_quota"
    assert [f.id for f in sdk.files.list().data] == [kept.id]  # the refused uploads left nothing behind
    sdk.files.delete(kept.id)
    assert sdk.files.create(file=("three.bin", b"z" * 1400), purpose="assistants").bytes == 1400


def test_roles(dep: Deployment, tenant: Tenant) -> None:
    made = _sdk(dep, tenant.member_key).files.create(file=("r.txt", b"read me"), purpose="assistants")
    viewer = _sdk(dep, tenant.viewer_key)
    assert [f.id for f in viewer.files.list().data] == [made.id]
    assert viewer.files.retrieve(made.id).id == made.id and viewer.files.content(made.id).read() == b"read me"
    with pytest.raises(openai.PermissionDeniedError):
        viewer.files.create(file=("v.txt", b"no"), purpose="assistants")
    with pytest.raises(openai.PermissionDeniedError):
        viewer.files.delete(made.id)


def test_a_foreign_file_answers_exactly_like_a_missing_one(dep: Deployment, tenant: Tenant) -> None:
    other = dep.live.new_tenant(f"files-b-{uuid.uuid4().hex[:8]}")
    mine = _sdk(dep, tenant.member_key).files.create(file=("a.txt", b"tenant a's"), purpose="assistants")
    missing = "file-" + "x" * 24
    theirs = _sdk(dep, other.admin_key)
    assert theirs.files.list().data == []
    with httpx.Client(base_url=dep.live.url, headers={"authorization": f"Bearer {other.admin_key}"}) as c:
        for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            foreign = c.request(method, f"/v1/files/{mine.id}{suffix}")
            absent = c.request(method, f"/v1/files/{missing}{suffix}")
            assert foreign.status_code == absent.status_code == 404
            assert foreign.json()["error"] | {"message": ""} == absent.json()["error"] | {"message": ""}
            assert foreign.json()["error"]["message"].replace(mine.id, missing) == absent.json()["error"]["message"]
        assert c.get("/v1/files", params={"after": mine.id}).status_code == \
            c.get("/v1/files", params={"after": missing}).status_code == 400
    assert _sdk(dep, tenant.member_key).files.content(mine.id).read() == b"tenant a's"  # untouched


def test_content_and_names_are_sealed_at_rest_and_the_export_has_them(dep: Deployment, tenant: Tenant) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    name = f"name-{uuid.uuid4().hex}.txt"
    sdk = _sdk(dep, tenant.member_key)
    made = sdk.files.create(file=(name, f"the secret is {canary}".encode()), purpose="assistants")
    assert canary.encode() in sdk.files.content(made.id).read()
    raw = dep.raw_storage()
    for needle in (canary, name):
        forms = {needle.encode(), needle.encode("utf-16-le"), base64.b64encode(needle.encode())[:24]}
        assert not [p for p, data in raw.items() if any(f in data for f in forms)], needle
    with dep.live.admin() as c:
        archive = c.post(f"/admin/v1/tenants/{tenant.id}/export")
        assert archive.status_code == 200
        zf = zipfile.ZipFile(io.BytesIO(archive.content))
        assert canary.encode() in zf.read(f"files/{made.id}") and name.encode() in zf.read("files.json")
        actions = [e["action"] for e in c.get(f"/admin/v1/tenants/{tenant.id}/audit").json()["data"]]
        assert "file.created" in actions
        sdk.files.delete(made.id)
        actions = [e["action"] for e in c.get(f"/admin/v1/tenants/{tenant.id}/audit").json()["data"]]
        assert "file.deleted" in actions


def test_deleting_the_tenant_removes_its_files(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    sdk.files.create(file=("gone.txt", b"soon gone"), purpose="assistants")
    with dep.live.admin() as c:
        assert c.delete(f"/admin/v1/tenants/{tenant.id}", params={"confirm": tenant.id}).status_code == 200
    if dep.pg is None:
        import sqlite3

        db = sqlite3.connect(dep.data_dir / "tenantlm.db")
        try:
            left = db.execute("SELECT count(*) FROM files WHERE tenant_id = ?", (tenant.id,)).fetchone()[0]
            parts = db.execute("SELECT count(*) FROM file_parts WHERE tenant_id = ?", (tenant.id,)).fetchone()[0]
        finally:
            db.close()
        assert left == parts == 0
    time.sleep(0)  # nothing else to wait for: erasure is synchronous
