"""Isolation tiers through a live server on SQLite: a tenant promoted from the pool to its own silo database and
demoted back, online, while the official SDK keeps sending it chat completions, file uploads and listings: no
request fails, nothing is lost, the silo's rows leave the pool's tables, other tenants are untouched; the CLI waits
with a progress bar; erasing a silo tenant removes its database file; every move is audited."""

from __future__ import annotations

import io
import json
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from live import Live, Tenant, TenantLoad, catalog_config, cli, move_tenant, start_server
from services import PostgresDatabase, PostgresServer

CONTENT_TABLES = ("files", "file_parts", "request_log", "vector_stores", "responses", "conversations",
                  "conversation_items", "memories")


@dataclass
class Deployment:
    live: Live
    data_dir: Path
    pg: PostgresDatabase | None = None

    def silo_file(self, tenant_id: str) -> Path:
        return self.data_dir / "tenants" / tenant_id / "tenant.db"

    def _count(self, schema: str, tenant_id: str) -> dict[str, int]:
        assert self.pg is not None
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {schema}.{t} WHERE tenant_id = '{tenant_id}'"
                                 for t in CONTENT_TABLES)
        return {line.split("|")[0]: int(line.split("|")[1]) for line in self.pg.psql(sql).splitlines()}

    def pool_rows(self, tenant_id: str) -> dict[str, int]:
        if self.pg is not None:
            return self._count("public", tenant_id)
        return _sqlite_rows(self.data_dir / "tenantlm.db", tenant_id)

    def silo_rows(self, silo_tenant: str, tenant_id: str) -> dict[str, int]:
        if self.pg is not None:
            return self._count(f"silo_{silo_tenant}", tenant_id)
        return _sqlite_rows(self.silo_file(silo_tenant), tenant_id)

    def silo_exists(self, tenant_id: str) -> bool:
        if self.pg is not None:
            return self.pg.psql(f"SELECT count(*) FROM pg_namespace WHERE nspname = 'silo_{tenant_id}'") == "1"
        return self.silo_file(tenant_id).exists()


def _deploy(request: pytest.FixtureRequest, backend: str) -> tuple[PostgresDatabase | None, dict[str, str]]:
    if backend != "postgres":
        return None, {}
    server: PostgresServer = request.getfixturevalue("postgres_server")
    pg = server.create_database()
    return pg, {"database_url": pg.app_url, "migrate_url": pg.owner_url}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"tiers-{request.param}")
    pg, kw = _deploy(request, request.param)
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    proc = start_server(tmp, config, warmup=False, data_dir=tmp / "data", **kw)
    try:
        yield Deployment(Live(proc.url, proc, request.param), tmp / "data", pg)
    finally:
        proc.stop()


def _sqlite_rows(db_file: Path, tenant_id: str) -> dict[str, int]:
    with sqlite3.connect(db_file) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
                for t in CONTENT_TABLES}


def _tenant(dep: Deployment, name: str) -> Tenant:
    t = dep.live.new_tenant(f"{name}-{uuid.uuid4().hex[:8]}")
    with dep.live.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": 7}})
        assert r.status_code == 200, r.text
    return t


def _move(dep: Deployment, tenant_id: str, tier: str) -> dict[str, Any]:
    body = move_tenant(dep.live, tenant_id, {"tier": tier})
    assert body["tier_move"]["to"] == tier and body["tier"] == tier
    return body


DOCS = {"volcano.txt": "Volcanoes erupt lava and magma from the mantle. " * 20,
        "bread.md": "Bread rises when yeast ferments the dough. " * 20}


def _search(sdk: openai.OpenAI, store_id: str) -> list[tuple[str, float, str]]:
    page = sdk.vector_stores.search(store_id, query="lava magma yeast")
    return [(r.file_id, r.score, r.content[0].text) for r in page.data]


def _request_log_count(dep: Deployment, tenant_id: str) -> int:
    with dep.live.admin() as c:
        r = c.get(f"/admin/v1/tenants/{tenant_id}/requests", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return len(r.json()["data"])


def test_promote_and_demote_under_steady_load_fail_no_request(dep: Deployment) -> None:
    t, other = _tenant(dep, "mover"), _tenant(dep, "bystander")
    sdk, other_sdk = dep.live.sdk(t.member_key, max_retries=0), dep.live.sdk(other.member_key, max_retries=0)
    kept = {other_sdk.files.create(file=("mine.txt", b"bystander's"), purpose="assistants").id: b"bystander's"}
    for n in range(20):
        sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"seed {n}"}])
    store = sdk.vector_stores.create(name="docs")
    for name, text in DOCS.items():
        done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode()),
                                                       poll_interval_ms=100)
        assert done.status == "completed", done.last_error
    found_before = _search(sdk, store.id)
    kinds = ("chat", "chat", "upload", "list", "search")
    with TenantLoad([(sdk, k) for k in kinds], store.id) as load:
        while load.served < 20:
            time.sleep(0.01)
        before_move = load.served
        promoted = _move(dep, t.id, "silo")
        during_promotion = load.served - before_move
        assert dep.silo_exists(t.id)
        assert set(dep.pool_rows(t.id).values()) == {0}  # nothing of the tenant left in the pool's tables
        before_demotion = load.served
        _move(dep, t.id, "pool")
        during_demotion = load.served - before_demotion
        while load.served < before_demotion + during_demotion + 20:  # and it keeps working on the pool
            time.sleep(0.01)
    assert load.failures == [], load.failures[:5]
    assert during_promotion > 0 and during_demotion > 0  # the load really ran across both moves
    assert promoted["tier_move"]["rows_total"] > 0 and promoted["tier_move"]["fenced_ms"] is not None
    assert not dep.silo_exists(t.id)
    for file_id, data in load.uploaded.items():  # every upload acknowledged during the moves is there, intact
        assert sdk.files.content(file_id).read() == data
    listed = {f.id for f in sdk.files.list(limit=10000)}
    assert set(load.uploaded) <= listed
    assert dep.pool_rows(t.id)["files"] == len(listed)
    for file_id, data in kept.items():
        assert other_sdk.files.content(file_id).read() == data
    assert _request_log_count(dep, t.id) >= 20
    assert _search(sdk, store.id) == found_before  # same files, scores and texts after two moves


def test_silo_holds_only_its_tenant_and_the_pool_keeps_the_others(dep: Deployment) -> None:
    t, other = _tenant(dep, "silo"), _tenant(dep, "pooled")
    sdk, other_sdk = dep.live.sdk(t.member_key, max_retries=0), dep.live.sdk(other.member_key, max_retries=0)
    mine = sdk.files.create(file=("a.txt", b"silo tenant's secret"), purpose="assistants")
    theirs = other_sdk.files.create(file=("b.txt", b"pooled tenant's"), purpose="assistants")
    sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    as_u1 = dep.live.sdk(t.member_key, max_retries=0, default_headers={"X-TenantLM-User": "u1"})
    chat = as_u1.conversations.create(items=[{"type": "message", "role": "user", "content": "kept in the silo"}])
    memories = f"/admin/v1/tenants/{t.id}/end_users/u1/memories"
    with dep.live.admin() as c:
        assert c.post(memories, json={"text": "The user likes silos."}).status_code in (200, 201)
    before = dep.pool_rows(t.id)
    assert before["conversations"] == before["conversation_items"] == before["memories"] == 1
    _move(dep, t.id, "silo")
    silo = dep.silo_rows(t.id, t.id)
    assert silo["files"] == before["files"] == 1 and silo["file_parts"] == before["file_parts"]
    assert silo["conversations"] == silo["conversation_items"] == silo["memories"] == 1
    items = as_u1.conversations.items.list(chat.id).data
    assert [part.text for item in items for part in item.content] == ["kept in the silo"]  # type: ignore[union-attr]
    with dep.live.admin() as c:
        assert [m["text"] for m in c.get(memories).json()["data"]] == ["The user likes silos."]
    assert set(dep.pool_rows(t.id).values()) == {0}
    assert set(dep.silo_rows(t.id, other.id).values()) == {0}
    assert dep.pool_rows(other.id)["files"] == 1
    assert sdk.files.content(mine.id).read() == b"silo tenant's secret"
    assert other_sdk.files.content(theirs.id).read() == b"pooled tenant's"
    # a foreign id is still a 404 both ways, exactly like a missing one
    for client, foreign in ((sdk, theirs.id), (other_sdk, mine.id)):
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(foreign)
    with dep.live.admin() as c:  # the GDPR export reads the silo; the silo holds the content sealed
        archive = c.post(f"/admin/v1/tenants/{t.id}/export")
        assert archive.status_code == 200
        assert zipfile.ZipFile(io.BytesIO(archive.content)).read(f"files/{mine.id}") == b"silo tenant's secret"
    at_rest = dep.pg.pg_dump() if dep.pg is not None else b"".join(
        p.read_bytes() for p in dep.silo_file(t.id).parent.iterdir() if p.is_file())  # with the WAL
    assert b"silo tenant's secret" not in at_rest
    new = sdk.files.create(file=("c.txt", b"written in the silo"), purpose="assistants")
    assert dep.silo_rows(t.id, t.id)["files"] == 2 and dep.pool_rows(t.id)["files"] == 0
    assert sdk.files.content(new.id).read() == b"written in the silo"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_silo_survives_a_restart(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pg, kw = _deploy(request, backend)
    data, cfg = tmp_path / "data", catalog_config(None, local=False)
    proc = start_server(tmp_path, cfg, warmup=False, data_dir=data, **kw)
    try:
        dep = Deployment(Live(proc.url, proc, backend), data, pg)
        t = _tenant(dep, "restart")
        f = dep.live.sdk(t.member_key).files.create(file=("r.txt", b"before restart"), purpose="assistants")
        _move(dep, t.id, "silo")
    finally:
        proc.stop()
    proc = start_server(tmp_path, cfg, warmup=False, data_dir=data, **kw)
    try:
        dep = Deployment(Live(proc.url, proc, backend), data, pg)
        with dep.live.admin() as c:
            got = c.get(f"/admin/v1/tenants/{t.id}").json()
        assert got["tier"] == "silo" and got["tier_move"] is None
        sdk = dep.live.sdk(t.member_key)
        assert sdk.files.content(f.id).read() == b"before restart"
        sdk.files.create(file=("s.txt", b"after restart"), purpose="assistants")
        assert dep.silo_rows(t.id, t.id)["files"] == 2
        assert dep.pool_rows(t.id)["files"] == 0
    finally:
        proc.stop()


def test_cli_promote_waits_and_erasure_removes_the_silo(dep: Deployment) -> None:
    t = _tenant(dep, "cli")
    dep.live.sdk(t.member_key).files.create(file=("x.txt", b"x"), purpose="assistants")
    out = cli(dep.live, "tenants", "promote", t.id, "--tier", "silo", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["tier"] == "silo" and shown["tier_move"]["phase"] == "done"
    assert dep.silo_exists(t.id)
    with dep.live.admin() as c:
        again = c.post(f"/admin/v1/tenants/{t.id}/tier", json={"tier": "silo"})
        assert again.status_code == 202 and again.json()["tier_move"]["phase"] == "done"  # already there: no-op
        bad = c.post(f"/admin/v1/tenants/{t.id}/tier", json={"tier": "gold"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tier"
        member = c.post(f"/admin/v1/tenants/{t.id}/tier", json={"tier": "pool"},
                        headers={"authorization": f"Bearer {t.admin_key}"})
        assert member.status_code == 403  # a tenant's own admin cannot move it
        r = c.delete(f"/admin/v1/tenants/{t.id}", params={"confirm": t.id})
        assert r.status_code == 200, r.text
        assert not dep.silo_exists(t.id) and not dep.silo_file(t.id).parent.exists()
        audit = c.get("/admin/v1/audit", params={"tenant_id": t.id, "limit": 100}).json()["data"]
    actions = [e["action"] for e in audit]
    assert "tenant.tier_move_started" in actions
    changed = next(e for e in audit if e["action"] == "tenant.tier_changed")
    assert changed["details"]["from"] == "pool" and changed["details"]["to"] == "silo"
