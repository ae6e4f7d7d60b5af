"""The storage ledger through a live server on SQLite and Postgres: per tenant and UTC day the most bytes kept of
files, vector stores and stored responses, GB-days priced at the operator's rate, a day's peak kept after a delete,
admin-only reads, another tenant's 404, and the rows gone with the tenant."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from live import Live, Tenant, catalog_config, start_server
from services import PostgresDatabase, PostgresServer

PRICE = 2.5  # per GB-day


@dataclass
class Deployment:
    live: Live
    data_dir: Path
    pg: PostgresDatabase | None


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"storage-{request.param}")
    kw, pg = {}, None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed",
                       "TENANTLM_STORAGE_PRICE_PER_GB_DAY": str(PRICE)})
    proc = start_server(tmp, config, warmup=False, data_dir=tmp / "data", **kw)
    try:
        yield Deployment(Live(proc.url, proc, request.param), tmp / "data", pg)
    finally:
        proc.stop()


def _storage(dep: Deployment, tenant_id: str, key: str | None = None) -> httpx.Response:
    with dep.live.admin(*([key] if key else [])) as c:
        return c.get(f"/admin/v1/tenants/{tenant_id}/usage/storage")


def _today(dep: Deployment, tenant: Tenant) -> dict[str, Any]:
    r = _storage(dep, tenant.id)
    assert r.status_code == 200, r.text
    [day] = r.json()["data"]
    assert day["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    return dict(day)


def test_files_stores_and_responses_are_metered_per_day(dep: Deployment) -> None:
    tenant = dep.live.new_tenant(f"store-{uuid.uuid4().hex[:8]}")
    sdk = dep.live.sdk(tenant.member_key, max_retries=0)
    assert _today(dep, tenant)["bytes"] == {"files": 0, "responses": 0, "vector_stores": 0}

    text = b"Glaciers carve valleys as they move. " * 200
    store = sdk.vector_stores.create(name="geo")
    done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("geo.txt", text),
                                                   poll_interval_ms=100)
    assert done.status == "completed", done.last_error
    sdk.responses.create(model="fake-chat", input="keep this response")
    day = _today(dep, tenant)
    usage_bytes = sdk.vector_stores.retrieve(store.id).usage_bytes
    assert day["bytes"]["files"] == len(text)
    assert day["bytes"]["vector_stores"] == usage_bytes > 0
    assert day["bytes"]["responses"] > 0
    assert day["total_bytes"] == sum(day["bytes"].values())
    assert day["gb_days"] == pytest.approx(day["total_bytes"] / 1e9)
    assert day["cost_usd"] == pytest.approx(day["total_bytes"] / 1e9 * PRICE)

    sdk.files.delete(done.id)  # leaves the store too; today's peak stays what it was
    assert _today(dep, tenant)["bytes"] == day["bytes"]
    report = _storage(dep, tenant.id).json()
    assert report["price_per_gb_day"] == PRICE and report["total_gb_days"] == pytest.approx(day["gb_days"])


def test_only_admins_read_it_and_another_tenant_gets_404(dep: Deployment) -> None:
    a, b = dep.live.new_tenant(f"sa-{uuid.uuid4().hex[:8]}"), dep.live.new_tenant(f"sb-{uuid.uuid4().hex[:8]}")
    assert _storage(dep, a.id, a.admin_key).status_code == 200
    assert _storage(dep, a.id, a.member_key).status_code == 403
    assert _storage(dep, a.id, b.admin_key).status_code == 404
    assert _storage(dep, "ten_" + "0" * 16).status_code == 404


def test_deleting_the_tenant_removes_its_storage_rows(dep: Deployment) -> None:
    tenant = dep.live.new_tenant(f"sd-{uuid.uuid4().hex[:8]}")
    dep.live.sdk(tenant.member_key).files.create(file=("x.txt", b"some bytes"), purpose="assistants")
    assert _today(dep, tenant)["bytes"]["files"] == 10
    assert _raw_rows(dep, tenant.id) == 3  # files, vector stores, responses
    with dep.live.admin() as c:
        assert c.delete(f"/admin/v1/tenants/{tenant.id}", params={"confirm": tenant.id}).status_code == 200
    assert _storage(dep, tenant.id).status_code == 404
    assert _raw_rows(dep, tenant.id) == 0


def _raw_rows(dep: Deployment, tenant_id: str) -> int:
    query = f"SELECT count(*) FROM storage_usage WHERE tenant_id = '{tenant_id}'"
    if dep.pg is not None:
        return int(dep.pg.psql(query))
    db = sqlite3.connect(dep.data_dir / "tenantlm.db")
    try:
        return int(db.execute(query).fetchone()[0])
    finally:
        db.close()
