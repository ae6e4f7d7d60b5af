"""Online moves with several replicas: two TenantLM replicas on one Postgres and one Redis. One replica promotes a
tenant to its silo and demotes it back while the official SDK sends that tenant chat completions, uploads and
listings through BOTH replicas: no request fails, every upload acknowledged on either replica is there afterwards,
and what the other replica writes after the switch lands in the silo (it learnt the move from the tenant's row, under
the placement lock), then back in the pool after the demotion."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client

from live import Live, Process, ServerConfig, TenantLoad, move_tenant, start_server
from services import PostgresDatabase, PostgresServer, RedisServer

TABLES = ("files", "file_parts", "request_log")


@dataclass
class Pair:
    a: Live
    b: Live
    db: PostgresDatabase
    redis_url: str

    def rows(self, schema: str, tenant_id: str) -> dict[str, int]:
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {schema}.{t} WHERE tenant_id = '{tenant_id}'"
                                 for t in TABLES)
        return {line.split("|")[0]: int(line.split("|")[1]) for line in self.db.psql(sql).splitlines()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,
         redis_server: RedisServer) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("replica-moves")
    db = postgres_server.create_database()
    shared = {"TENANTLM_REDIS_URL": redis_server.url_for(2), "TENANTLM_KEYRING_DIR": str(tmp / "keyring"),
              "TENANTLM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    cfg = ServerConfig(providers=[{"name": "fake", "type": "fake", "tokens": 8}],
                       models=[{"name": "fake-chat", "provider": "fake"}], env=shared)
    procs: list[Process] = []
    try:
        for i in range(2):
            (tmp / f"r{i}").mkdir()
            procs.append(start_server(tmp / f"r{i}", cfg, database_url=db.app_url, migrate_url=db.owner_url,
                                      warmup=False, data_dir=tmp / f"r{i}" / "data"))
        yield Pair(Live(procs[0].url, procs[0], "postgres"), Live(procs[1].url, procs[1], "postgres"), db,
                   redis_server.url_for(2))
    finally:
        for p in procs:
            p.stop()
        postgres_server.drop_database(db.database)


def _move(live: Live, tenant_id: str, tier: str) -> dict[str, Any]:
    return move_tenant(live, tenant_id, {"tier": tier})


def test_a_move_by_one_replica_fails_no_request_on_either(pair: Pair, tmp_path: Path) -> None:
    t = pair.a.new_tenant(f"mv-{uuid.uuid4().hex[:8]}")
    with pair.a.admin() as c:
        assert c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": 7}}).status_code == 200
    sdk_a, sdk_b = (live.sdk(t.member_key, max_retries=0) for live in (pair.a, pair.b))
    with TenantLoad([(sdk, kind) for sdk in (sdk_a, sdk_b) for kind in ("chat", "upload", "list")]) as load:
        while load.served < 30:
            time.sleep(0.01)
        before = load.served
        promoted = _move(pair.a, t.id, "silo")
        during_promotion = load.served - before
        # replica b learnt the move: what it writes now lands in the silo
        written_on_b = sdk_b.files.create(file=("b.txt", b"written through replica b"), purpose="assistants")
        silo = pair.rows(f"silo_{t.id}", t.id)
        assert set(pair.rows("public", t.id).values()) == {0}
        before = load.served
        _move(pair.a, t.id, "pool")
        during_demotion = load.served - before
        while load.served < before + during_demotion + 30:
            time.sleep(0.01)
    assert load.failures == [], load.failures[:5]
    assert during_promotion > 0 and during_demotion > 0
    assert promoted["tier_move"]["fenced_ms"] is not None and promoted["tier_move"]["rows_total"] > 0
    assert silo["files"] >= 1 and silo["file_parts"] >= 1
    assert pair.db.psql(f"SELECT count(*) FROM pg_namespace WHERE nspname = 'silo_{t.id}'") == "0"
    for sdk in (sdk_a, sdk_b):  # every acknowledged upload is there, through either replica
        for file_id, data in load.uploaded.items():
            assert sdk.files.content(file_id).read() == data
        assert sdk.files.content(written_on_b.id).read() == b"written through replica b"
    assert pair.rows("public", t.id)["files"] == len(load.uploaded) + 1


def _month_tokens(pair: Pair, prefix: str, tenant_id: str) -> int:
    client = redis_client.Redis.from_url(pair.redis_url)
    try:
        key = f"{prefix}{{{tenant_id}}}:b:tenant:{tenant_id}:m:{time.strftime('%Y-%m', time.gmtime())}"
        return int(client.hget(key, "tok") or 0)
    finally:
        client.close()


def test_the_month_s_budget_follows_the_tenant_to_its_new_key_prefix(pair: Pair) -> None:
    t = pair.a.new_tenant(f"bud-{uuid.uuid4().hex[:8]}")
    sdk = pair.a.sdk(t.member_key, max_retries=0)
    for n in range(5):
        sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"spend {n}"}])
    used = _month_tokens(pair, "tlm:", t.id)
    assert used > 0
    time.sleep(2.5)  # the ledger has flushed the usage the counters are raised to
    _move(pair.a, t.id, "silo")
    assert _month_tokens(pair, "tlm:silo:", t.id) >= used  # not 0: the month's budget did not restart
    _move(pair.a, t.id, "pool")
