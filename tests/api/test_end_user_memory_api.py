"""Long-term memory and end-user erasure against a live server through the official SDK and the admin API, on SQLite
and on Postgres: turns named for an end user are remembered and recalled into a later turn of that end user only; the
memories admin API (list, add, search, delete) for platform and tenant admins only, another tenant's id a 404; the
per-end-user export and the tenant export; erasing an end user leaves their canary in no API answer, their sealed
bytes in no file of the data dir (SQLite) or the database dump (Postgres), and the other end users untouched."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from live import Live, Tenant, catalog_config, start_server
from services import PostgresDatabase, PostgresServer

USER_HEADER = "X-TenantLM-User"


@dataclass
class Deployment:
    live: Live
    data_dir: Path
    pg: PostgresDatabase | None

    def raw_storage(self) -> dict[str, bytes]:
        """Every byte kept at rest: the files of the data dir and, on Postgres, a full dump of the database."""
        found = {str(p): p.read_bytes() for p in self.data_dir.rglob("*") if p.is_file()}
        if self.pg is not None:
            found["pg_dump"] = self.pg.pg_dump()
        return found

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file (what SQLite does itself as the log grows)."""
        if self.pg is None:
            with sqlite3.connect(self.data_dir / "tenantlm.db") as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def sealed_of(self, tenant_id: str, end_user: str) -> list[bytes]:
        """The sealed bytes the database holds for one end user (memories, responses, request-log entries)."""
        queries = [("memories", "sealed_text"), ("memories", "sealed_vector"), ("responses", "sealed_input"),
                   ("responses", "sealed_output"), ("request_log", "sealed")]
        found: list[bytes] = []
        for table, column in queries:
            where = f"tenant_id = '{tenant_id}' AND end_user = '{end_user}' AND {column} IS NOT NULL"
            if self.pg is None:
                with sqlite3.connect(self.data_dir / "tenantlm.db") as db:
                    found += [bytes(r[0]) for r in db.execute(f"SELECT {column} FROM {table} WHERE {where}")]
            else:
                out = self.pg.psql(f"SELECT encode({column}, 'hex') FROM {table} WHERE {where}")
                found += [bytes.fromhex(line) for line in out.splitlines() if line]
        return found


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"memory-{request.param}")
    pg: PostgresDatabase | None = None
    kw: dict[str, str] = {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    data_dir = tmp / "data"
    proc = start_server(tmp, config, warmup=False, data_dir=data_dir, **kw)
    try:
        yield Deployment(Live(proc.url, proc, request.param), data_dir, pg)
    finally:
        proc.stop()


def _tenant(dep: Deployment, *, long_term: bool = True) -> Tenant:
    t = dep.live.new_tenant(f"mem-{uuid.uuid4().hex[:8]}")
    with dep.live.admin(t.admin_key) as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}",
                    json={"settings": {"memory": {"policy": "window", "long_term": long_term},
                                       "request_log_days": 7}})
        assert r.status_code == 200, r.text
    return t


def _turn(dep: Deployment, t: Tenant, user: str, text: str, **kw: Any) -> Any:
    sdk = dep.live.sdk(t.member_key, max_retries=0)
    return sdk.responses.create(model="fake-chat", input=text, extra_headers={USER_HEADER: user}, **kw)


def _memories(dep: Deployment, key: str, tenant_id: str, user: str) -> list[dict[str, Any]]:
    with dep.live.admin(key) as c:
        r = c.get(f"/admin/v1/tenants/{tenant_id}/end_users/{user}/memories")
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data


def _systems_sent(dep: Deployment, t: Tenant) -> list[str]:
    """What the model was told in its system message, per request (oldest first), from the tenant's request log."""
    with dep.live.admin(t.admin_key) as c:
        entries = c.get(f"/admin/v1/tenants/{t.id}/requests", params={"limit": 100}).json()["data"]
        out = []
        for e in reversed(entries):
            body = c.get(f"/admin/v1/tenants/{t.id}/requests/{e['id']}").json()
            out.append("\n".join(m["content"] for m in body["request"]["messages"] if m["role"] == "system"))
    return out


def _unzipped(archive: bytes) -> str:
    """Every file of a zip archive, decompressed, as one text (a canary compressed in it would otherwise hide)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return "\n".join(zf.read(name).decode("utf-8", "replace") for name in zf.namelist())


def _hits(blobs: dict[str, bytes], needle: bytes) -> list[str]:
    forms = {needle, needle.hex().encode()}
    return sorted(name for name, data in blobs.items() if any(f in data for f in forms))


# --- remembered in one turn, recalled in a later one, for that end user only -------------------------------------
def test_a_turn_is_remembered_and_told_to_the_same_end_user_only(dep: Deployment) -> None:
    t = _tenant(dep)
    name = f"Quill{uuid.uuid4().hex[:6]}"
    first = _turn(dep, t, "u1", f"Hi there. My name is {name} and I live in Bergen.")
    found = _memories(dep, t.admin_key, t.id, "u1")
    assert sorted(m["text"] for m in found) == sorted([f"The user's name is {name}.", "The user lives in Bergen."])
    assert {m["source"] for m in found} == {first.id} and {m["end_user"] for m in found} == {"u1"}
    _turn(dep, t, "u1", "What is my name?")
    _turn(dep, t, "u2", "What is my name?")
    systems = _systems_sent(dep, t)
    assert len(systems) == 3
    assert name not in systems[0] and name in systems[1] and name not in systems[2]
    assert _memories(dep, t.admin_key, t.id, "u2") == []


def test_memory_stays_off_unless_the_tenant_turns_it_on(dep: Deployment) -> None:
    t = _tenant(dep, long_term=False)
    _turn(dep, t, "u1", "My name is Nobody.")
    assert _memories(dep, t.admin_key, t.id, "u1") == []
    with dep.live.admin(t.admin_key) as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"memory": {"long_term": "yes"}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "settings.memory.long_term"


# --- the admin API ----------------------------------------------------------------------------------------------
def test_the_memories_admin_api(dep: Deployment) -> None:
    t = _tenant(dep)
    base = f"/admin/v1/tenants/{t.id}/end_users/u1/memories"
    with dep.live.admin() as platform:
        added = platform.post(base, json={"text": "The user keeps bees."})
        assert added.status_code == 201, added.text
        memory = added.json()
        assert memory["object"] == "memory" and memory["id"].startswith("mem_") and memory["source"] == "admin"
        again = platform.post(base, json={"text": "the user keeps BEES"})
        assert again.status_code == 200 and again.json()["id"] == memory["id"]
        assert [m["id"] for m in platform.get(base).json()["data"]] == [memory["id"]]
    with dep.live.admin(t.admin_key) as admin:
        assert admin.post(base, json={"text": "The user drives a tram."}).status_code == 201
        listed = admin.get(base).json()
        assert [m["text"] for m in listed["data"]] == ["The user drives a tram.", "The user keeps bees."]
        hits = admin.post(base + "/search", json={"query": "bees", "k": 1}).json()["data"]
        assert [h["id"] for h in hits] == [memory["id"]] and 0 < hits[0]["score"] <= 1
        bad = admin.post(base + "/search", json={"query": "bees", "k": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "k"
        empty = admin.post(base, json={"text": "  "})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "text"
        # another end user of the same tenant: nothing, and this memory is not theirs to delete
        assert admin.get(f"/admin/v1/tenants/{t.id}/end_users/u2/memories").json()["data"] == []
        other = admin.delete(f"/admin/v1/tenants/{t.id}/end_users/u2/memories/{memory['id']}")
        assert other.status_code == 404
        gone = admin.delete(f"{base}/{memory['id']}")
        assert gone.status_code == 200 and gone.json() == {"id": memory["id"], "object": "memory.deleted",
                                                           "deleted": True}
        assert admin.delete(f"{base}/{memory['id']}").status_code == 404
        assert [m["text"] for m in admin.get(base).json()["data"]] == ["The user drives a tram."]
        audit = admin.get(f"/admin/v1/tenants/{t.id}/audit", params={"limit": 100}).json()["data"]
    actions = [(e["action"], e["actor"].split(":")[0]) for e in audit]
    assert actions.count(("memory.added", "platform")) == 1 and actions.count(("memory.added", "tenant")) == 1
    assert ("memories.read", "platform") in actions  # the operator reading a tenant's content is an event
    assert ("memories.read", "tenant") not in actions  # the tenant reading its own is not
    assert ("memory.deleted", "tenant") in actions


@pytest.mark.parametrize("role", ["member", "viewer", "other_admin"])
def test_only_admins_of_the_tenant_reach_an_end_users_data(dep: Deployment, role: str) -> None:
    t, other = _tenant(dep), _tenant(dep)
    key = {"member": t.member_key, "viewer": t.viewer_key, "other_admin": other.admin_key}[role]
    want = 404 if role == "other_admin" else 403
    user = f"/admin/v1/tenants/{t.id}/end_users/u1"
    with dep.live.admin(t.admin_key) as admin:
        memory_id = admin.post(user + "/memories", json={"text": "The user likes rye."}).json()["id"]
    calls = [("GET", user + "/memories", None), ("POST", user + "/memories", {"text": "x"}),
             ("POST", user + "/memories/search", {"query": "rye"}), ("DELETE", f"{user}/memories/{memory_id}", None),
             ("POST", user + "/export", None), ("DELETE", user, None)]
    with dep.live.admin(key) as c:
        for method, path, body in calls:
            r = c.request(method, path, json=body)
            assert r.status_code == want, (method, path, r.text)
    missing = f"/admin/v1/tenants/ten_{uuid.uuid4().hex[:12]}/end_users/u1/memories"
    with dep.live.admin(other.admin_key) as c:  # a foreign tenant answers exactly like a missing one
        foreign, absent = c.get(user + "/memories"), c.get(missing)
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json()["error"]["type"] == absent.json()["error"]["type"]
    assert len(_memories(dep, t.admin_key, t.id, "u1")) == 1


# --- export and erasure -----------------------------------------------------------------------------------------
def test_erasing_an_end_user_leaves_no_trace_and_spares_the_others(dep: Deployment) -> None:
    t = _tenant(dep)
    canary, control = f"CANARY{uuid.uuid4().hex}", f"KEEP{uuid.uuid4().hex}"
    first = _turn(dep, t, "u1", f"Remember that my locker code is {canary}.")
    _turn(dep, t, "u1", "What is my locker code?", previous_response_id=first.id)
    dep.live.sdk(t.member_key).chat.completions.create(model="fake-chat", user="u1",
                                                       messages=[{"role": "user", "content": f"say {canary}"}])
    _turn(dep, t, "u2", f"Remember that my locker code is {control}.")
    as_u1 = dep.live.sdk(t.member_key, max_retries=0, default_headers={"X-TenantLM-User": "u1"})
    chat = as_u1.conversations.create(items=[{"type": "message", "role": "user", "content": f"note {canary}"}])
    with dep.live.admin(t.admin_key) as admin:
        exported = admin.post(f"/admin/v1/tenants/{t.id}/end_users/u1/export")
        assert exported.status_code == 200, exported.text
        body = exported.json()
        assert body["object"] == "end_user.export" and body["end_user"] == "u1"
        assert len(body["memories"]) == 1 and len(body["responses"]) == 2 and len(body["request_log"]) == 3
        assert [c["id"] for c in body["conversations"]] == [chat.id]
        assert canary in json.dumps(body) and control not in json.dumps(body)
        archive = zipfile.ZipFile(io.BytesIO(admin.post(f"/admin/v1/tenants/{t.id}/export").content))
        in_tenant_export = archive.read("memories.jsonl").decode()
        assert canary in in_tenant_export and control in in_tenant_export
    sealed = dep.sealed_of(t.id, "u1")
    assert len(sealed) == 1 + 1 + 2 * 2 + 3  # memory text + vector, two responses, three log entries
    raw = dep.raw_storage()
    assert all(_hits(raw, s) for s in sealed), "the scan must see the sealed bytes while they are stored"
    assert _hits(raw, canary.encode()) == []  # sealed: never in clear
    dep.checkpoint()  # as SQLite does by itself every 1,000 pages: the records are in the database file now

    with dep.live.admin(t.admin_key) as admin:
        erased = admin.delete(f"/admin/v1/tenants/{t.id}/end_users/u1")
        assert erased.status_code == 200, erased.text
        assert erased.json()["erased"] == {"conversations": 1, "memories": 1, "responses": 2, "request_log": 3,
                                           "record": 1, "cache": 0}
        answers = [admin.get(f"/admin/v1/tenants/{t.id}/end_users/u1/memories").text,
                   admin.post(f"/admin/v1/tenants/{t.id}/end_users/u1/memories/search",
                              json={"query": f"locker code {canary}"}).text,
                   admin.post(f"/admin/v1/tenants/{t.id}/end_users/u1/export").text,
                   admin.get(f"/admin/v1/tenants/{t.id}/end_users").text,
                   json.dumps([admin.get(f"/admin/v1/tenants/{t.id}/requests/{e['id']}").json()
                               for e in admin.get(f"/admin/v1/tenants/{t.id}/requests").json()["data"]]),
                   _unzipped(admin.post(f"/admin/v1/tenants/{t.id}/export").content)]
        audit = admin.get(f"/admin/v1/tenants/{t.id}/audit", params={"limit": 100}).json()["data"]
    for answer in answers:
        assert canary not in answer
    assert control in answers[-1] and control in answers[-2]  # u2's content is still there
    with pytest.raises(Exception) as gone:
        dep.live.sdk(t.member_key, max_retries=0).responses.retrieve(first.id)
    assert getattr(gone.value, "status_code", None) == 404
    with pytest.raises(openai.NotFoundError):
        as_u1.conversations.retrieve(chat.id)
    assert {"end_user.erase_started", "end_user.erased"} <= {e["action"] for e in audit}
    raw = dep.raw_storage()
    for s in sealed:
        assert _hits(raw, s) == [], f"an erased record's sealed bytes are still in {_hits(raw, s)}"
    assert len(_memories(dep, t.admin_key, t.id, "u2")) == 1
