"""Tenant content end to end, on SQLite and on Postgres: the opt-in request log (sealed with the tenant's key),
canary scans of raw storage, crypto-shredding against a pre-delete backup, GDPR export, key rotation under load,
the tenant-scoped audit trail and ``tenantlm audit verify`` on a live deployment."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from live import ADMIN_KEY, Live, Process, Tenant, catalog_config, start_server
from services import PostgresDatabase, PostgresServer
from tenantlm.crypto import Keyring, KeyShredded, LocalKekProvider, load_or_create_master_key
from tenantlm.storage.sql.engine import Database

AUDIT_WINDOW_S = 1.0


@dataclass
class Deployment:
    live: Live
    data_dir: Path
    pg: PostgresDatabase | None

    @property
    def backend(self) -> str:
        return self.live.backend

    def env(self) -> dict[str, str]:
        """The environment a CLI run against this deployment's storage needs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
        if self.pg is not None:
            env["TENANTLM_DATABASE_URL"] = self.pg.app_url
            env["TENANTLM_DATABASE_MIGRATE_URL"] = self.pg.owner_url
        return env

    def raw_storage(self) -> dict[str, bytes]:
        """Every byte the deployment keeps at rest: all files under the data dir and, on Postgres, a full pg_dump
        (plain SQL) plus the database's heap files."""
        found = {str(p): p.read_bytes() for p in self.data_dir.rglob("*") if p.is_file()}
        if self.pg is not None:
            found["pg_dump"] = self.pg.pg_dump()
        return found


def _start(tmp: Path, backend: str, request: pytest.FixtureRequest, env: dict[str, str] | None = None
           ) -> tuple[Process, Deployment]:
    pg: PostgresDatabase | None = None
    kw: dict[str, str] = {}
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_AUDIT_AUTH_FAILURE_WINDOW_S": str(AUDIT_WINDOW_S),
                       "TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed", **(env or {})})
    data_dir = tmp / "data"
    proc = start_server(tmp, config, warmup=False, data_dir=data_dir, **kw)
    return proc, Deployment(Live(proc.url, proc, backend), data_dir, pg)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    proc, deployment = _start(tmp_path_factory.mktemp(f"data-{request.param}"), request.param, request)
    try:
        yield deployment
    finally:
        proc.stop()


@pytest.fixture
def tenant(dep: Deployment) -> Callable[..., Tenant]:
    def make(prefix: str = "t", *, log_days: int | None = 7, **fields: Any) -> Tenant:
        t = dep.live.new_tenant(f"{prefix}-{uuid.uuid4().hex[:8]}", **fields)
        if log_days is not None:
            with dep.live.admin(t.admin_key) as c:  # the tenant's own admin turns its log on
                r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": log_days}})
                assert r.status_code == 200, r.text
                assert r.json()["settings"]["request_log_days"] == log_days
        return t
    return make


def canary() -> str:
    return f"CANARY-{uuid.uuid4().hex}"


def _chat(live: Live, key: str, text: str, *, stream: bool = False) -> str:
    sdk = live.sdk(key)
    if stream:
        parts = []
        for chunk in sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": text}],
                                                 stream=True, stream_options={"include_usage": True}):
            parts.extend(c.delta.content or "" for c in chunk.choices)
        return "".join(parts)
    out = sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": text}])
    return out.choices[0].message.content or ""


def _entries(live: Live, key: str, tenant_id: str, **params: Any) -> list[dict[str, Any]]:
    with live.admin(key) as c:
        r = c.get(f"/admin/v1/tenants/{tenant_id}/requests", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data


def _hits(blobs: dict[str, bytes], needle: str) -> list[str]:
    forms = {needle.encode(), needle.encode("utf-16-le"), base64.b64encode(needle.encode())[:24]}
    return sorted(name for name, data in blobs.items() if any(f in data for f in forms))


# --- the request log ------------------------------------------------------------------------------------------
def test_request_log_is_opt_in_and_tenant_scoped(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a, b = tenant("a"), tenant("b", log_days=None)
    secret_a, secret_b = canary(), canary()
    reply = _chat(dep.live, a.member_key, f"hello {secret_a}")
    streamed = _chat(dep.live, a.member_key, f"stream {secret_a}", stream=True)
    dep.live.sdk(a.member_key).embeddings.create(model="fake-embed", input=[f"embed {secret_a}"])
    _chat(dep.live, b.member_key, f"hello {secret_b}")

    listed = _entries(dep.live, a.admin_key, a.id)
    assert sorted(e["endpoint"] for e in listed) == ["chat.completions", "chat.completions", "embeddings"]
    assert all(e["model"] in {"fake-chat", "fake-embed"} and e["status"] == 200 for e in listed)
    assert all(secret_a not in json.dumps(e) for e in listed)  # the listing is metadata only
    with dep.live.admin(a.admin_key) as c:
        full = [c.get(f"/admin/v1/tenants/{a.id}/requests/{e['id']}").json() for e in listed]
    by_kind = {(f["endpoint"], bool((f["response"] or {}).get("stream"))): f for f in full}
    plain = by_kind[("chat.completions", False)]
    assert plain["request"]["messages"][0]["content"] == f"hello {secret_a}"
    assert plain["response"]["choices"][0]["message"]["content"] == reply
    assert plain["response"]["usage"]["total_tokens"] > 0 and plain["request_id"]
    stream = by_kind[("chat.completions", True)]
    assert stream["request"]["messages"][0]["content"] == f"stream {secret_a}"
    assert stream["response"]["content"] == streamed and stream["response"]["finish_reason"] == "stop"
    assert by_kind[("embeddings", False)]["request"]["input"] == [f"embed {secret_a}"]

    assert _entries(dep.live, b.admin_key, b.id) == []  # off by default: nothing was kept for B
    with dep.live.admin(b.admin_key) as c:  # B's admin: A's log does not exist for it
        assert c.get(f"/admin/v1/tenants/{a.id}/requests").status_code == 404
        assert c.get(f"/admin/v1/tenants/{a.id}/requests/{listed[0]['id']}").status_code == 404
        assert c.get(f"/admin/v1/tenants/{b.id}/requests/{listed[0]['id']}").status_code == 404
    for key in (a.member_key, a.viewer_key):  # inside A, only admins read the log
        with dep.live.admin(key) as c:
            assert c.get(f"/admin/v1/tenants/{a.id}/requests").status_code == 403
    with dep.live.admin() as c:  # the operator may, and that read is itself audited
        assert c.get(f"/admin/v1/tenants/{a.id}/requests/{listed[0]['id']}").status_code == 200
        actions = [e["action"] for e in c.get(f"/admin/v1/tenants/{a.id}/audit", params={"limit": 1000})
                   .json()["data"]]
    assert "request_log.read" in actions


def test_turning_the_log_off_erases_it(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a = tenant("off")
    _chat(dep.live, a.member_key, "one")
    assert len(_entries(dep.live, a.admin_key, a.id)) == 1
    with dep.live.admin(a.admin_key) as c:
        assert c.patch(f"/admin/v1/tenants/{a.id}", json={"settings": {"request_log_days": 0}}).status_code == 200
    _chat(dep.live, a.member_key, "two")
    assert _entries(dep.live, a.admin_key, a.id) == []


@pytest.mark.parametrize("value", [-1, 3651, "7", 1.5, True])
def test_retention_setting_is_validated(dep: Deployment, tenant: Callable[..., Tenant], value: Any) -> None:
    a = tenant("bad", log_days=None)
    with dep.live.admin(a.admin_key) as c:
        r = c.patch(f"/admin/v1/tenants/{a.id}", json={"settings": {"request_log_days": value}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "settings.request_log_days"
        r = c.patch(f"/admin/v1/tenants/{a.id}", json={"settings": {"no_such_setting": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "settings.no_such_setting"


# --- raw storage ----------------------------------------------------------------------------------------------
def test_canaries_never_reach_raw_storage(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a = tenant("canary")
    secrets = [canary() for _ in range(4)]
    _chat(dep.live, a.member_key, f"non-stream {secrets[0]}")
    _chat(dep.live, a.member_key, f"stream {secrets[1]}", stream=True)
    dep.live.sdk(a.member_key).embeddings.create(model="fake-embed", input=f"embed {secrets[2]}")
    dep.live.sdk(a.member_key).chat.completions.create(
        model="fake-chat", messages=[{"role": "system", "content": secrets[3]}, {"role": "user", "content": "hi"}],
        user=f"user-{uuid.uuid4().hex[:6]}")
    # Positive control: tenant metadata is stored in clear (documented), so the scan must find this one.
    control = canary()
    with dep.live.admin() as c:
        assert c.patch(f"/admin/v1/tenants/{a.id}", json={"metadata": {"note": control}}).status_code == 200
    entries = _entries(dep.live, a.admin_key, a.id)  # reading the list flushes the buffer to the database
    assert len(entries) == 4
    with dep.live.admin(a.admin_key) as c:  # the content is there, readable through the API...
        bodies = json.dumps([c.get(f"/admin/v1/tenants/{a.id}/requests/{e['id']}").json() for e in entries])
    assert all(s in bodies for s in secrets)
    raw = dep.raw_storage()
    assert _hits(raw, control), f"the scan missed the clear-text control in {sorted(raw)}"
    for s in secrets:  # ...and nowhere in what is kept at rest
        assert _hits(raw, s) == [], f"canary found in raw storage: {_hits(raw, s)}"


# --- crypto-shredding -----------------------------------------------------------------------------------------
@dataclass
class Backup:
    url: str
    cleanup: Callable[[], None]


def _backup(dep: Deployment, tmp: Path) -> Backup:
    """A copy of the database taken while the server runs, as an operator's backup job would."""
    if dep.pg is None:
        copy = tmp / "backup.db"
        src = sqlite3.connect(dep.data_dir / "tenantlm.db")
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        return Backup(f"sqlite+aiosqlite:///{copy}", lambda: copy.unlink())
    pg = dep.pg
    dump = pg.pg_dump()
    name = f"backup_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE DATABASE {name}", database="postgres")
    pg.psql(dump.decode(), database=name)
    backup = PostgresDatabase.on(pg.host, pg.port, name, pg.bindir)
    return Backup(backup.superuser_url,
                  lambda: pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres"))


async def _decrypt_all(url: str, data_dir: Path, tenant_id: str) -> list[bytes]:
    """What an attacker holding the backup, the master key and the live keyring dir can read of one tenant."""
    db = Database.from_url(url)
    try:
        kek = LocalKekProvider(data_dir / "keyring", load_or_create_master_key(data_dir, None))
        keyring = Keyring(db, kek)
        async with db.platform_tx() as conn:
            rows = (await conn.execute(sa.text("SELECT id, sealed FROM request_log WHERE tenant_id = :t"),
                                       {"t": tenant_id})).all()
        assert rows, "the backup holds the tenant's sealed entries"
        return [await keyring.open(tenant_id=tenant_id, kind="request_log", record_id=r.id,
                                   ciphertext=bytes(r.sealed)) for r in rows]
    finally:
        await db.dispose()


def test_shredded_tenant_cannot_be_read_from_a_backup(dep: Deployment, tenant: Callable[..., Tenant],
                                                       tmp_path: Path) -> None:
    a, b = tenant("shred"), tenant("bystander")
    secret = canary()
    _chat(dep.live, a.member_key, f"keep {secret}")
    _chat(dep.live, b.member_key, "b stays")
    assert len(_entries(dep.live, a.admin_key, a.id)) == 1
    assert len(_entries(dep.live, b.admin_key, b.id)) == 1
    backup = _backup(dep, tmp_path)
    try:
        before = asyncio.run(_decrypt_all(backup.url, dep.data_dir, a.id))
        assert any(secret.encode() in p for p in before)  # control: before the delete the backup is readable
        with dep.live.admin() as c:
            r = c.delete(f"/admin/v1/tenants/{a.id}", params={"confirm": a.id})
            assert r.status_code == 200 and r.json()["keys_shredded"] is True
            assert c.get(f"/admin/v1/tenants/{a.id}").status_code == 404
            audit = [e["action"] for e in c.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
                     if e["tenant_id"] == a.id]
        assert audit[-3:] == ["tenant.delete_started", "tenant.keys_shredded", "tenant.deleted"]
        assert not (dep.data_dir / "keyring" / f"{a.id}.json").exists()
        with pytest.raises(KeyShredded):
            asyncio.run(_decrypt_all(backup.url, dep.data_dir, a.id))
        with dep.live.admin(a.admin_key) as c:  # the tenant's keys stop working at once
            assert c.get(f"/admin/v1/tenants/{a.id}").status_code == 401
        assert len(_entries(dep.live, b.admin_key, b.id)) == 1  # nobody else is touched
        assert b"b stays" in asyncio.run(_decrypt_all(backup.url, dep.data_dir, b.id))[0]
    finally:
        backup.cleanup()


# --- knowledge ------------------------------------------------------------------------------------------------
LEXICAL = {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}


def _knowledge(live: Live, key: str, text: str) -> tuple[str, str]:
    """A file holding ``text`` in a new vector store, ingested: (store id, file id)."""
    sdk = live.sdk(key)
    store = sdk.vector_stores.create(name="canary-store")
    done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("notes.txt", text.encode()),
                                                   poll_interval_ms=100)
    assert done.status == "completed", done.last_error
    return store.id, done.id


def _found(live: Live, key: str, store_id: str, needle: str) -> bool:
    page = live.sdk(key).vector_stores.search(store_id, query=needle, ranking_options=LEXICAL)  # type: ignore[arg-type]
    return any(needle in part.text for result in page.data for part in result.content)


def test_a_knowledge_canary_is_searchable_sealed_and_gone_when_deleted(dep: Deployment,
                                                                      tenant: Callable[..., Tenant]) -> None:
    a, b = tenant("kcanary", log_days=None), tenant("kother", log_days=None)
    secret = canary()
    store_id, file_id = _knowledge(dep.live, a.member_key, f"the launch code is {secret} today")
    assert _found(dep.live, a.member_key, store_id, secret)
    other_store = dep.live.sdk(b.member_key).vector_stores.create(name="b-store")
    assert not _found(dep.live, b.member_key, other_store.id, secret)  # B's search never reaches A's chunks
    raw = dep.raw_storage()
    assert _hits(raw, secret) == [], f"canary found in raw storage: {_hits(raw, secret)}"
    dep.live.sdk(a.member_key).files.delete(file_id)
    assert not _found(dep.live, a.member_key, store_id, secret)


def test_a_shredded_tenant_s_knowledge_cannot_be_read_from_a_backup(dep: Deployment, tenant: Callable[..., Tenant],
                                                                   tmp_path: Path) -> None:
    a = tenant("kshred", log_days=None)
    secret = canary()
    _knowledge(dep.live, a.member_key, f"remember {secret}")
    backup = _backup(dep, tmp_path)
    try:
        before = asyncio.run(_open_knowledge(backup.url, dep.data_dir, a.id))
        assert any(secret.encode() in p for p in before)  # control: the backup is readable before the delete
        with dep.live.admin() as c:
            assert c.delete(f"/admin/v1/tenants/{a.id}", params={"confirm": a.id}).status_code == 200
        with pytest.raises(KeyShredded):
            asyncio.run(_open_knowledge(backup.url, dep.data_dir, a.id))
    finally:
        backup.cleanup()


async def _open_knowledge(url: str, data_dir: Path, tenant_id: str) -> list[bytes]:
    """What the backup, the master key and the live keyring dir reveal of a tenant's file parts and chunks."""
    db = Database.from_url(url)
    try:
        keyring = Keyring(db, LocalKekProvider(data_dir / "keyring", load_or_create_master_key(data_dir, None)))
        async with db.platform_tx() as conn:
            parts = (await conn.execute(sa.text("SELECT file_id, part, sealed FROM file_parts WHERE tenant_id = :t"),
                                        {"t": tenant_id})).all()
            chunk_rows = (await conn.execute(sa.text(
                "SELECT vector_store_id, file_id, seq, sealed_text FROM chunks WHERE tenant_id = :t"),
                {"t": tenant_id})).all()
        assert parts and chunk_rows, "the backup holds the tenant's sealed file and chunks"
        out = [await keyring.open(tenant_id=tenant_id, kind="file_part", record_id=f"{r.file_id}:{r.part}",
                                  ciphertext=bytes(r.sealed)) for r in parts]
        out += [await keyring.open(tenant_id=tenant_id, kind="chunk_text",
                                   record_id=f"{r.vector_store_id}:{r.file_id}:{r.seq}",
                                   ciphertext=bytes(r.sealed_text)) for r in chunk_rows]
        return out
    finally:
        await db.dispose()


# --- export ---------------------------------------------------------------------------------------------------
def test_export_is_complete_decrypted_and_audited(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a, b = tenant("export"), tenant("other")
    secret = canary()
    _chat(dep.live, a.member_key, f"export me {secret}")
    dep.live.sdk(a.member_key).chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "who"}], user="alice@example.com")
    with dep.live.admin(b.admin_key) as c:
        assert c.post(f"/admin/v1/tenants/{a.id}/export").status_code == 404
    with dep.live.admin(a.member_key) as c:
        assert c.post(f"/admin/v1/tenants/{a.id}/export").status_code == 403
    with dep.live.admin(a.admin_key) as c:
        r = c.post(f"/admin/v1/tenants/{a.id}/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["tenant_id"] == a.id and manifest["format"] == "tenantlm-export/1"
    for name, meta in manifest["files"].items():
        data = zf.read(name)
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    assert json.loads(zf.read("tenant.json"))["id"] == a.id
    keys = json.loads(zf.read("keys.json"))
    assert len(keys) == 3 and all("key" not in k and "secret_hash" not in k for k in keys)
    assert not any(t.encode() in r.content for t in (a.admin_key, a.member_key, a.viewer_key))
    log_lines = [json.loads(x) for x in zf.read("request_log.jsonl").splitlines()]
    assert len(log_lines) == 2 and manifest["files"]["request_log.jsonl"]["entries"] == 2
    assert any(x["request"]["messages"][0]["content"] == f"export me {secret}" for x in log_lines)
    users = json.loads(zf.read("end_users.json"))
    assert [u["user"] for u in users] == ["alice@example.com"] and users[0]["requests"] == 1
    audit = [json.loads(x) for x in zf.read("audit.jsonl").splitlines()]
    assert audit and {e["tenant_id"] for e in audit} == {a.id}
    assert {"tenant.created", "key.created", "tenant.updated"} <= {e["action"] for e in audit}
    with dep.live.admin(a.admin_key) as c:
        mine = c.get(f"/admin/v1/tenants/{a.id}/audit", params={"limit": 1000}).json()["data"]
    assert mine[-1]["action"] == "tenant.exported" and mine[-1]["actor"] == f"tenant:{a.id}:key_{a.admin_key[4:20]}"


# --- rotation -------------------------------------------------------------------------------------------------
def test_rotation_under_load_fails_no_request(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a = tenant("rotate")
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def traffic(i: int) -> None:
        with httpx.Client(base_url=dep.live.url, timeout=30,
                          headers={"authorization": f"Bearer {a.member_key}"}) as c, \
                dep.live.admin(a.admin_key) as admin:
            n = 0
            while not stop.is_set():
                n += 1
                r = c.post("/v1/chat/completions", json={"model": "fake-chat", "messages": [
                    {"role": "user", "content": f"worker {i} request {n}"}]})
                if r.status_code != 200:
                    failures.append(f"chat {r.status_code} {r.text[:200]}")
                if n % 5 == 0:  # readers too: old versions must keep opening while new ones appear
                    listed = admin.get(f"/admin/v1/tenants/{a.id}/requests", params={"limit": 3})
                    for e in listed.json().get("data", []) if listed.status_code == 200 else []:
                        got = admin.get(f"/admin/v1/tenants/{a.id}/requests/{e['id']}")
                        if got.status_code != 200:
                            failures.append(f"read {got.status_code} {got.text[:200]}")
                    if listed.status_code != 200:
                        failures.append(f"list {listed.status_code}")
                done[0] += 1

    workers = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    try:
        with dep.live.admin(a.admin_key) as c:
            for target in ["data_key", "key_encryption_key", "data_key", "data_key", "key_encryption_key"]:
                time.sleep(0.4)
                r = c.post(f"/admin/v1/tenants/{a.id}/encryption/rotate", json={"target": target})
                assert r.status_code == 200, r.text
            time.sleep(0.4)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    assert failures == [] and done[0] > 20
    with dep.live.admin(a.admin_key) as c:
        status = c.get(f"/admin/v1/tenants/{a.id}/encryption").json()
        assert status["active_version"] == 4 and status["provider"] == "local"
        assert len({v["kek_ref"] for v in status["versions"]}) == 1  # every data key rewrapped by the newest KEK
        c.post(f"/admin/v1/tenants/{a.id}/encryption/rotate", json={"target": "data_key", "rewrap": True})
        deadline = time.monotonic() + 30
        while True:  # the background rewrap moves every entry onto the active version
            entries = _entries(dep.live, a.admin_key, a.id)
            if {e["key_version"] for e in entries} == {5} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {e["key_version"] for e in entries} == {5} and len(entries) >= done[0]
        for e in entries[:50]:
            assert c.get(f"/admin/v1/tenants/{a.id}/requests/{e['id']}").status_code == 200
        actions = [e["action"] for e in c.get(f"/admin/v1/tenants/{a.id}/audit", params={"limit": 1000})
                   .json()["data"]]
    assert actions.count("encryption.dek_rotated") == 4 and actions.count("encryption.kek_rotated") == 2
    assert "encryption.rewrapped" in actions


def test_a_rotation_rewraps_files_stores_and_chunks(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a = tenant("krotate", log_days=None)
    secret = canary()
    store_id, file_id = _knowledge(dep.live, a.member_key, f"rotate me {secret}")
    sdk = dep.live.sdk(a.member_key)
    sdk.vector_stores.files.update(file_id, vector_store_id=store_id, attributes={"k": "v"})
    with dep.live.admin(a.admin_key) as c:
        assert c.post(f"/admin/v1/tenants/{a.id}/encryption/rotate", json={"target": "data_key"}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "encryption.rewrapped" not in [
                e["action"] for e in c.get(f"/admin/v1/tenants/{a.id}/audit", params={"limit": 1000}).json()["data"]]:
            time.sleep(0.2)
        versions = asyncio.run(_sealed_versions(dep, a.id))
        assert versions == {2}, versions  # every sealed name, part, meta, attribute, chunk text and vector moved
    assert _found(dep.live, a.member_key, store_id, secret)  # and still opens
    assert secret.encode() in sdk.files.content(file_id).read()


async def _sealed_versions(dep: Deployment, tenant_id: str) -> set[int]:
    from tenantlm.crypto import aead

    db = Database.from_url(dep.pg.app_url if dep.pg is not None else f"sqlite+aiosqlite:///{dep.data_dir}/tenantlm.db")
    queries = ["SELECT sealed_name FROM files", "SELECT sealed FROM file_parts",
               "SELECT sealed_meta FROM vector_stores",
               "SELECT sealed_attributes FROM vector_store_files WHERE sealed_attributes IS NOT NULL",
               "SELECT sealed_text FROM chunks", "SELECT sealed_vector FROM chunks"]
    try:
        async with db.tenant_tx(tenant_id=tenant_id) as conn:
            found: set[int] = set()
            for q in queries:
                rows = (await conn.execute(sa.text(f"{q} {'AND' if 'WHERE' in q else 'WHERE'} tenant_id = :t"),
                                           {"t": tenant_id})).scalars()
                found |= {aead.key_version(bytes(r)) for r in rows}
        return found
    finally:
        await db.dispose()


# --- audit ----------------------------------------------------------------------------------------------------
def test_tenant_admins_see_only_their_own_audit(dep: Deployment, tenant: Callable[..., Tenant]) -> None:
    a, b = tenant("audit-a"), tenant("audit-b")
    with dep.live.admin() as c:
        assert c.patch(f"/admin/v1/tenants/{a.id}", json={"status": "suspended"}).status_code == 200
        assert c.patch(f"/admin/v1/tenants/{a.id}", json={"status": "active"}).status_code == 200
        key = c.post(f"/admin/v1/tenants/{a.id}/keys", json={"name": "temp", "role": "member"}).json()
        assert c.delete(f"/admin/v1/tenants/{a.id}/keys/{key['id']}").status_code == 200
    wrong = key["key"][:-4] + ("aaaa" if not key["key"].endswith("aaaa") else "bbbb")
    for _ in range(3):  # failed logins against A's key id, aggregated into one entry for A
        assert httpx.get(f"{dep.live.url}/v1/models", headers={"authorization": f"Bearer {wrong}"}
                         ).status_code == 401
    deadline = time.monotonic() + 15
    while True:
        with dep.live.admin(a.admin_key) as c:
            mine = c.get(f"/admin/v1/tenants/{a.id}/audit", params={"limit": 1000}).json()["data"]
        if "auth.failures" in {e["action"] for e in mine} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    actions = [e["action"] for e in mine]
    assert {"tenant.created", "key.created", "tenant.updated", "tenant.suspended", "tenant.resumed", "key.revoked",
            "auth.failures"} <= set(actions)
    assert {e["tenant_id"] for e in mine} == {a.id}
    failed = next(e for e in mine if e["action"] == "auth.failures")
    assert failed["details"]["total"] == 3 and failed["details"]["buckets"][0]["reason"] == "wrong_secret"
    serialized = json.dumps(mine)
    assert key["key"] not in serialized and wrong not in serialized  # no secrets in the trail
    assert all(e["request_id"] for e in mine if e["action"] in {"tenant.suspended", "key.revoked"})
    with dep.live.admin(b.admin_key) as c:
        assert c.get(f"/admin/v1/tenants/{a.id}/audit").status_code == 404
        assert c.get(f"/admin/v1/tenants/{a.id}/audit/export").status_code == 404
        assert c.get("/admin/v1/audit").status_code in (403, 404)
        theirs = c.get(f"/admin/v1/tenants/{b.id}/audit", params={"limit": 1000}).json()["data"]
        assert theirs and {e["tenant_id"] for e in theirs} == {b.id}
    with dep.live.admin(a.member_key) as c:
        assert c.get(f"/admin/v1/tenants/{a.id}/audit").status_code == 403
    with dep.live.admin() as c:
        r = c.get(f"/admin/v1/tenants/{a.id}/audit/export")
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["seq"] for x in lines][:len(mine)] == [e["seq"] for e in mine]
        assert lines[-1]["action"] == "audit.exported" and all(len(x["hash"]) == 64 for x in lines)
        everyone = c.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
        assert {a.id, b.id} <= {e["tenant_id"] for e in everyone}


def _verify(dep: Deployment) -> tuple[int, dict[str, Any]]:
    cmd = [sys.executable, "-m", "tenantlm.cli", "audit", "verify", "--data-dir", str(dep.data_dir), "--json"]
    out = subprocess.run(cmd, capture_output=True, env=dep.env(), timeout=60, check=False)
    return out.returncode, json.loads(out.stdout.decode().strip().splitlines()[-1])


def test_audit_verify_passes_on_live_data_then_names_an_edited_entry(
        dep: Deployment, tenant: Callable[..., Tenant], request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tenant("verify")
    rc, report = _verify(dep)
    assert rc == 0 and report["ok"] is True and report["entries"] > 5, report
    # Tampering is shown on a deployment of its own so the shared one stays intact for other tests.
    proc, own = _start(tmp_path, dep.backend, request)
    try:
        t = own.live.new_tenant(f"victim-{uuid.uuid4().hex[:6]}")
        with own.live.admin() as c:
            c.patch(f"/admin/v1/tenants/{t.id}", json={"plan": "pro"})
            entries = c.get("/admin/v1/audit", params={"limit": 1000}).json()["data"]
        target = next(e["seq"] for e in entries if e["action"] == "key.created")
        sql = f"UPDATE audit_log SET actor = 'platform_key:someone_else' WHERE seq = {target}"
        if own.pg is None:
            with sqlite3.connect(own.data_dir / "tenantlm.db") as conn:
                conn.execute(sql)
        else:
            own.pg.psql(sql)
        rc, report = _verify(own)
        assert rc == 1 and report["ok"] is False and report["first_bad_seq"] == target, report
    finally:
        proc.stop()
        shutil.rmtree(own.data_dir, ignore_errors=True)


def test_admin_key_shows_in_no_audit_entry(dep: Deployment) -> None:
    with dep.live.admin() as c:
        body = c.get("/admin/v1/audit/export").text
    assert body and ADMIN_KEY not in body
