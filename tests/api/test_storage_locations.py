"""Storage locations per region, through a live server on SQLite and on Postgres: a deployment whose home database is
in us-east and which has a second database in eu-west. A tenant held to eu-west has all its content (files and their
parts, vector stores and chunks, the request log, stored responses, conversations) in the eu-west database and
none in the home one, and the other way round for a tenant of us-east; a tenant moves between the regions online
(and into a silo of the other region) with its content intact; residency holds for storage (no move outside the
tenant's regions, no allowed_regions that exclude where its data is); routes survive a restart; deleting the tenant
deletes its content in its region."""

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

from live import Live, Tenant, catalog_config, cli, move_tenant, start_server
from services import PostgresDatabase, PostgresServer

CONTENT = ("files", "file_parts", "vector_stores", "chunks", "request_log", "responses", "conversations")
HOME, EU = "us-east", "eu-west"


@dataclass
class Regions:
    """Where each region's database is, and how to count a tenant's rows in it."""

    backend: str
    tmp: Path
    home_pg: PostgresDatabase | None = None
    eu_pg: PostgresDatabase | None = None

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def eu_file(self) -> Path:
        return self.tmp / "eu" / "tenantlm.db"

    def server_kw(self) -> dict[str, str]:
        if self.home_pg is None:
            return {}
        return {"database_url": self.home_pg.app_url, "migrate_url": self.home_pg.owner_url}

    def eu_location(self) -> dict[str, Any]:
        if self.eu_pg is None:
            return {"region": EU, "database_url": f"sqlite+aiosqlite:///{self.eu_file}"}
        return {"region": EU, "database_url": self.eu_pg.app_url, "database_migrate_url": self.eu_pg.owner_url}

    def rows(self, region: str, tenant_id: str, schema: str = "public") -> dict[str, int]:
        pg = self.home_pg if region == HOME else self.eu_pg
        if pg is not None:
            sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {schema}.{t} WHERE tenant_id = '{tenant_id}'"
                                     for t in CONTENT)
            return {line.split("|")[0]: int(line.split("|")[1]) for line in pg.psql(sql).splitlines()}
        db = self.data_dir / "tenantlm.db" if region == HOME else self.eu_file
        if schema != "public":
            db = (self.data_dir if region == HOME else self.eu_file.parent) / "tenants" / tenant_id / "tenant.db"
        with sqlite3.connect(db) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = ?", (tenant_id,)).fetchone()[0]
                    for t in CONTENT}

    def anchored(self, tenant_id: str) -> bool:
        """Whether the eu-west database holds a copy of the tenant's row."""
        if self.eu_pg is not None:
            return self.eu_pg.psql(f"SELECT count(*) FROM public.tenants WHERE id = '{tenant_id}'") == "1"
        with sqlite3.connect(self.eu_file) as conn:
            return bool(conn.execute("SELECT count(*) FROM tenants WHERE id = ?", (tenant_id,)).fetchone()[0])

    def eu_silo_exists(self, tenant_id: str) -> bool:
        if self.eu_pg is not None:
            return self.eu_pg.psql(f"SELECT count(*) FROM pg_namespace WHERE nspname = 'silo_{tenant_id}'") == "1"
        return (self.eu_file.parent / "tenants" / tenant_id / "tenant.db").exists()


def _config(regions: Regions) -> Any:
    config = catalog_config(None, local=False)
    config.providers[0]["region"] = EU  # the fake models run in eu-west: both tenants may use them
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed", "TENANTLM_STORAGE_REGION": HOME,
                       "TENANTLM_STORAGE_LOCATIONS": json.dumps([regions.eu_location()])})
    return config


@dataclass
class Deployment:
    live: Live
    regions: Regions
    config: Any


@pytest.fixture(params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    regions = Regions(request.param, tmp_path)
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        regions.home_pg, regions.eu_pg = server.create_database(), server.create_database()
    config = _config(regions)
    proc = start_server(tmp_path, config, warmup=False, data_dir=regions.data_dir, **regions.server_kw())
    deployment = Deployment(Live(proc.url, proc, request.param), regions, config)
    try:
        yield deployment
    finally:
        deployment.live.process.stop()


def _tenant(dep: Deployment, allowed_regions: list[str] | None) -> tuple[Tenant, dict[str, Any]]:
    t = dep.live.new_tenant(f"loc-{uuid.uuid4().hex[:8]}")
    with dep.live.admin() as c:
        r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": 7}})
        assert r.status_code == 200, r.text
        if allowed_regions is not None:
            r = c.patch(f"/admin/v1/tenants/{t.id}", json={"allowed_regions": allowed_regions})
        return t, r.json()


def _held_tenant(dep: Deployment) -> tuple[Tenant, dict[str, Any]]:
    """A tenant created held to eu-west (so placed there from the start)."""
    t = dep.live.new_tenant(f"eu-{uuid.uuid4().hex[:8]}", allowed_regions=[EU], settings={"request_log_days": 7})
    with dep.live.admin() as c:
        return t, c.get(f"/admin/v1/tenants/{t.id}").json()


def _use(dep: Deployment, t: Tenant) -> dict[str, Any]:
    """Content of every kind, through the official SDK; returns what to check it by afterwards."""
    sdk = dep.live.sdk(t.member_key, max_retries=0)
    f = sdk.files.create(file=("notes.txt", f"secret of {t.id}".encode()), purpose="assistants")
    sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hello"}])
    store = sdk.vector_stores.create(name="docs")
    done = sdk.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("volcano.txt", b"Volcanoes erupt lava and magma. " * 20), poll_interval_ms=50)
    assert done.status == "completed", done.last_error
    sdk.responses.create(model="fake-chat", input="remember this")
    sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "kept in my region"}])
    hits = sdk.vector_stores.search(store.id, query="lava magma")
    with dep.live.admin() as c:  # the request log is written behind the answers
        deadline = time.monotonic() + 30
        while not c.get(f"/admin/v1/tenants/{t.id}/requests").json()["data"] and time.monotonic() < deadline:
            time.sleep(0.05)
    return {"file": f.id, "data": f"secret of {t.id}".encode(), "store": store.id,
            "hits": [(h.file_id, h.score, h.content[0].text) for h in hits.data]}


def _check(dep: Deployment, t: Tenant, used: dict[str, Any]) -> None:
    sdk = dep.live.sdk(t.member_key, max_retries=0)
    assert sdk.files.content(used["file"]).read() == used["data"]
    hits = sdk.vector_stores.search(used["store"], query="lava magma")
    assert [(h.file_id, h.score, h.content[0].text) for h in hits.data] == used["hits"]


def _move(dep: Deployment, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return move_tenant(dep.live, tenant_id, body)


def _nothing(counts: dict[str, int]) -> bool:
    return set(counts.values()) == {0}


def _everything(counts: dict[str, int]) -> bool:
    assert all(counts[t] > 0 for t in CONTENT), sorted(counts.items())
    return True


def test_each_tenant_s_content_lives_in_its_region_and_moves_between_regions_online(dep: Deployment) -> None:
    regions = dep.regions
    eu, created = _held_tenant(dep)
    us, _ = _tenant(dep, None)
    assert created["storage_region"] == EU and created["allowed_regions"] == [EU]
    eu_used, us_used = _use(dep, eu), _use(dep, us)
    assert _everything(regions.rows(EU, eu.id)) and _nothing(regions.rows(HOME, eu.id))
    assert _everything(regions.rows(HOME, us.id)) and _nothing(regions.rows(EU, us.id))
    assert regions.anchored(eu.id) and not regions.anchored(us.id)
    with dep.live.admin() as c:  # the tenant's export reads its region's database
        archive = c.post(f"/admin/v1/tenants/{eu.id}/export")
        assert archive.status_code == 200, archive.text
        assert zipfile.ZipFile(io.BytesIO(archive.content)).read(f"files/{eu_used['file']}") == eu_used["data"]

    with dep.live.admin() as c:
        # residency holds for storage: no allowed_regions without the data's region, no move outside them
        r = c.patch(f"/admin/v1/tenants/{eu.id}", json={"allowed_regions": [HOME]})
        assert r.status_code == 400 and "move the data first" in r.json()["error"]["message"]
        r = c.post(f"/admin/v1/tenants/{eu.id}/tier", json={"storage_region": HOME})
        assert r.status_code == 403 and r.json()["error"]["code"] == "region_not_allowed"
        assert r.json()["error"]["param"] == "storage_region"
        r = c.post(f"/admin/v1/tenants/{us.id}/tier", json={"storage_region": "mars"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "storage_region"
        assert "eu-west" in r.json()["error"]["message"]

    moved = _move(dep, us.id, {"storage_region": EU})  # the us tenant's data goes to eu-west, its tier unchanged
    assert moved["storage_region"] == EU and moved["tier"] == "pool"
    assert moved["tier_move"]["from_storage_region"] == HOME and moved["tier_move"]["to_storage_region"] == EU
    assert _everything(regions.rows(EU, us.id)) and _nothing(regions.rows(HOME, us.id))
    _check(dep, us, us_used)
    # both tenants' content now shares the eu-west database's tables: each still sees only its own
    for mine, theirs in ((us, eu_used["file"]), (eu, us_used["file"])):
        with pytest.raises(openai.NotFoundError):
            dep.live.sdk(mine.member_key, max_retries=0).files.retrieve(theirs)
    with dep.live.admin() as c:  # now it may be held to eu-west
        assert c.patch(f"/admin/v1/tenants/{us.id}", json={"allowed_regions": [EU]}).status_code == 200

    siloed = _move(dep, us.id, {"tier": "silo"})  # a silo of its own, in its region
    assert siloed["tier"] == "silo" and siloed["storage_region"] == EU
    assert regions.eu_silo_exists(us.id)
    assert _everything(regions.rows(EU, us.id, schema=f"silo_{us.id}"))
    assert _nothing(regions.rows(EU, us.id)) and _nothing(regions.rows(HOME, us.id))
    assert not regions.anchored(us.id)  # the eu pool's copy of its row went with its rows
    _check(dep, us, us_used)

    with dep.live.admin() as c:
        assert c.patch(f"/admin/v1/tenants/{us.id}", json={"allowed_regions": None}).status_code == 200
    back = _move(dep, us.id, {"tier": "pool", "storage_region": HOME})
    assert back["tier"] == "pool" and back["storage_region"] == HOME and not regions.eu_silo_exists(us.id)
    assert _everything(regions.rows(HOME, us.id)) and _nothing(regions.rows(EU, us.id))
    _check(dep, us, us_used)
    _check(dep, eu, eu_used)  # the other tenant never moved and never saw any of it
    assert _everything(regions.rows(EU, eu.id)) and _nothing(regions.rows(HOME, eu.id))

    with dep.live.admin() as c:
        audit = c.get("/admin/v1/audit", params={"tenant_id": us.id, "limit": 100}).json()["data"]
    changes = [(e["details"]["from"], e["details"]["to"]) for e in audit
               if e["action"] == "tenant.storage_region_changed"]
    assert sorted(changes) == sorted([(HOME, EU), (EU, HOME)])

    # restart: the routes come back from the tenants' rows
    dep.live.process.stop()
    proc = start_server(regions.tmp, dep.config, warmup=False, data_dir=regions.data_dir, **regions.server_kw())
    dep.live = Live(proc.url, proc, regions.backend)
    _check(dep, eu, eu_used)
    _check(dep, us, us_used)
    sdk = dep.live.sdk(eu.member_key, max_retries=0)
    before = regions.rows(EU, eu.id)["files"]
    sdk.files.create(file=("after.txt", b"written after the restart"), purpose="assistants")
    assert regions.rows(EU, eu.id)["files"] == before + 1 and regions.rows(HOME, eu.id)["files"] == 0

    # deleting the tenant deletes its content where it lives, and the eu database's copy of its row
    with dep.live.admin() as c:
        r = c.delete(f"/admin/v1/tenants/{eu.id}", params={"confirm": eu.id})
        assert r.status_code == 200, r.text
    assert _nothing(regions.rows(EU, eu.id)) and not regions.anchored(eu.id)
    with pytest.raises(openai.AuthenticationError):
        sdk.files.list()


def test_cli_moves_a_tenant_to_another_region(dep: Deployment) -> None:
    t, _ = _tenant(dep, None)
    dep.live.sdk(t.member_key).files.create(file=("x.txt", b"x"), purpose="assistants")
    out = cli(dep.live, "tenants", "promote", t.id, "--storage-region", EU, "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["tier"] == "pool" and shown["storage_region"] == EU  # --storage-region alone keeps the tier
    assert dep.regions.rows(EU, t.id)["files"] == 1 and dep.regions.rows(HOME, t.id)["files"] == 0
