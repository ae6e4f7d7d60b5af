"""AuditLog contract on every SQL backend: the chain, its serialization under concurrency, tenant scoping (RLS on
Postgres), checkpoints, and the verifier against a log tampered with directly in the database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from services import PostgresDatabase
from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.chain import GENESIS, entry_hash
from tenantlm.audit.service import AuditLog
from tenantlm.audit.signer import AuditSigner
from tenantlm.audit.verify import VerifyReport, run_verify_cli, verify
from tenantlm.storage.sql.engine import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    db: Database
    audit: AuditLog
    signer: AuditSigner
    clock: Clock
    tamper: Callable[[str], None]

    async def fill(self, n: int, *, step: float = 1.0) -> None:
        for i in range(n):
            self.clock.now += step
            await self.audit.append(actor="platform_key:adm_1", action="test.event", request_id=f"req_{i}",
                                    tenant_id=("ten_a", "ten_b", None)[i % 3], details={"n": i, "tag": "x"})

    async def verify(self) -> VerifyReport:
        return await verify(self.db, self.signer.public_key)


def url_of(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def tamperer(request: pytest.FixtureRequest, db: Database) -> Callable[[str], None]:
    """Runs SQL on the stored log outside the server: sqlite3 on the file, or psql as the Postgres superuser."""
    if db.is_postgres:
        pg: PostgresDatabase = request.getfixturevalue("pg_database")

        def run_pg(sql: str) -> None:
            pg.psql(sql)

        return run_pg
    path = db.engine.url.database
    assert path

    def run(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.executescript(sql)
        conn.close()

    return run


@pytest.fixture
async def rig(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[Rig]:
    clock, signer = Clock(), AuditSigner.generate()
    audit = AuditLog(database, signer, checkpoint_every=10, checkpoint_interval_s=3600, clock=clock)
    yield Rig(database, audit, signer, clock, tamperer(request, database))


def blob(data: bytes, postgres: bool) -> str:
    return f"decode('{data.hex()}', 'hex')" if postgres else f"X'{data.hex()}'"


async def test_append_and_list(rig: Rig) -> None:
    first = await rig.audit.append(actor="platform_key:adm_1", action="tenant.created", tenant_id="ten_a",
                                   request_id="req_1", details={"name": "alpha", "plan": {"id": "free", "n": 1.5}})
    second = await rig.audit.append(actor="tenant_key:k1", action="key.created", tenant_id="ten_a",
                                    request_id=None, details={"key_id": "k2", "role": "member"})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    listed = await rig.audit.list(tenant_id=None, after_seq=0, limit=10)
    assert listed == [first, second]
    assert await rig.audit.list(tenant_id=None, after_seq=1, limit=10) == [second]
    assert await rig.audit.list(tenant_id=None, after_seq=0, limit=10, action="key.created") == [second]
    public = listed[0].public()
    assert public["object"] == "audit_entry" and public["details"]["plan"] == {"id": "free", "n": 1.5}
    assert public["hash"] == first.hash.hex() and public["ts_us"] == round(rig.clock.now * 1e6)


async def test_details_survive_the_database_exactly(rig: Rig) -> None:
    details = {"z": "ünïcødé ✓ \"quoted\" \\ 🚀", "big": 2**62, "neg": -1, "f": 0.1, "tiny": 5e-324, "e": [],
               "o": {}, "nested": {"b": [True, False, None, {"k2": "v"}], "a": 1e300}, "A": "order", "_": ""}
    rig.clock.now += 0.123457
    entry = await rig.audit.append(actor="a", action="x.y", tenant_id="ten_a", request_id="r", details=details)
    (back,) = await rig.audit.list(tenant_id="ten_a", after_seq=0, limit=10)
    assert back == entry and back.details == details
    assert (await rig.verify()).ok


async def test_concurrent_appends_from_many_processes_form_one_chain(rig: Rig) -> None:
    # Four AuditLogs over four engines stand in for four replicas: only the database lock orders them.
    url = url_of(rig.db)
    replicas = [Database.from_url(url) for _ in range(4)]
    logs = [AuditLog(db, rig.signer, checkpoint_every=25) for db in replicas]
    try:
        written = await asyncio.gather(*(
            logs[i % 4].append(actor=f"replica:{i % 4}", action="test.concurrent", tenant_id=None,
                               request_id=None, details={"i": i}) for i in range(200)))
    finally:
        for db in replicas:
            await db.dispose()
    assert sorted(e.seq for e in written) == list(range(1, 201))
    entries = await rig.audit.list(tenant_id=None, after_seq=0, limit=1000)
    assert [e.seq for e in entries] == list(range(1, 201))
    assert sorted(e.details["i"] for e in entries) == list(range(200))
    prev = GENESIS
    for e in entries:
        assert e.prev_hash == prev
        prev = e.hash
    report = await rig.verify()
    assert report.ok and report.entries == 200 and report.checkpoints == 8, report


async def test_tenant_reads_see_only_their_entries(rig: Rig) -> None:
    await rig.fill(9)
    a = await rig.audit.list(tenant_id="ten_a", after_seq=0, limit=100)
    assert [e.seq for e in a] == [1, 4, 7] and {e.tenant_id for e in a} == {"ten_a"}
    assert [e.seq for e in await rig.audit.list(tenant_id="ten_a", after_seq=4, limit=100)] == [7]
    assert len(await rig.audit.list(tenant_id=None, after_seq=0, limit=100)) == 9
    lines = [json.loads(x) async for x in rig.audit.export_jsonl(tenant_id="ten_b", batch=2)]
    assert [x["seq"] for x in lines] == [2, 5, 8] and all(x["tenant_id"] == "ten_b" for x in lines)
    if rig.db.is_postgres:  # the second wall: without any WHERE, the tenant scope shows its own rows only
        async with rig.db.tenant_tx(tenant_id="ten_a") as conn:
            rows = (await conn.execute(sa.text("SELECT seq, tenant_id FROM audit_log ORDER BY seq"))).all()
            cps = (await conn.execute(sa.text("SELECT count(*) FROM audit_checkpoints"))).scalar_one()
        assert [tuple(r) for r in rows] == [(1, "ten_a"), (4, "ten_a"), (7, "ten_a")]
        assert cps == 0


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # grants and RLS are Postgres features
async def test_server_role_cannot_rewrite_or_insert_outside_platform_scope(rig: Rig, database: Database) -> None:
    assert rig.db.is_postgres
    await rig.fill(3)
    for sql in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "DELETE FROM audit_checkpoints"):
        with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
            async with rig.db.platform_tx() as conn:
                await conn.execute(sa.text(sql))
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with rig.db.tenant_tx(tenant_id="ten_a") as conn:
            await conn.execute(sa.text(
                "INSERT INTO audit_log (seq, ts, actor, tenant_id, action, details, prev_hash, hash) "
                "VALUES (99, 0, 'x', 'ten_a', 'x', '{}', '\\x00', '\\x00')"))


async def test_checkpoints_every_n_and_every_t(rig: Rig) -> None:
    await rig.fill(25)
    cps = await rig.audit.store.platform_checkpoints()
    assert [c.seq for c in cps] == [10, 20] and all(c.key_id == rig.signer.key_id for c in cps)
    entries = {e.seq: e for e in await rig.audit.list(tenant_id=None, after_seq=0, limit=100)}
    assert all(c.hash == entries[c.seq].hash for c in cps)
    assert await rig.audit.maybe_checkpoint() is None  # 5 uncovered entries, the oldest well under an hour old
    rig.clock.now += 3600
    cp = await rig.audit.maybe_checkpoint()
    assert cp is not None and cp.seq == 25
    assert await rig.audit.maybe_checkpoint(force=True) is None  # nothing uncovered
    await rig.fill(1)
    rig.clock.now += 3600
    await rig.fill(1)  # the time rule is also checked on append
    assert [c.seq for c in await rig.audit.store.platform_checkpoints()] == [10, 20, 25, 27]
    await rig.fill(1)
    assert (await rig.audit.maybe_checkpoint(force=True)) is not None
    assert (await rig.verify()).ok


async def _seeded(rig: Rig) -> None:
    await rig.fill(25)
    report = await rig.verify()
    assert report.ok and report.entries == 25 and report.checkpoints == 2 and report.head_seq == 25, report


async def test_verify_names_an_edited_entry(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("""UPDATE audit_log SET details = '{"n": 999, "tag": "x"}' WHERE seq = 12""")
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "edited", 12), report


async def test_verify_names_an_edit_with_a_recomputed_hash(rig: Rig) -> None:
    await _seeded(rig)
    e = (await rig.audit.list(tenant_id=None, after_seq=11, limit=1))[0]
    forged = entry_hash(e.prev_hash, seq=e.seq, ts_us=e.ts_us, actor=e.actor, tenant_id=e.tenant_id,
                        action="forged", request_id=e.request_id, details=e.details)
    rig.tamper(f"UPDATE audit_log SET action = 'forged', hash = {blob(forged, rig.db.is_postgres)} WHERE seq = 12")
    report = await rig.verify()
    assert (report.problem, report.first_bad_seq) == ("edited", 12), report


async def test_verify_names_a_deleted_entry(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("DELETE FROM audit_log WHERE seq = 7")
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "deleted", 7), report
    assert "jumps from seq 6 to 8" in report.message


async def test_verify_names_reordered_entries(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("UPDATE audit_log SET seq = -1 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 8; "
               "UPDATE audit_log SET seq = 8 WHERE seq = -1;")
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "reordered", 5), report


async def test_verify_names_a_moved_entry(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("UPDATE audit_log SET seq = 1000 WHERE seq = 3")
    report = await rig.verify()
    assert (report.problem, report.first_bad_seq) == ("reordered", 3), report


async def test_verify_names_a_truncated_tail(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("DELETE FROM audit_log WHERE seq >= 15")
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "truncated", 15), report
    assert report.head_seq == 14


async def test_verify_names_a_truncation_the_log_went_on_from(rig: Rig) -> None:
    await _seeded(rig)
    rig.tamper("DELETE FROM audit_log WHERE seq >= 15")
    await rig.fill(12)  # the server keeps appending from the cut head: a valid chain, but not the signed one
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "truncated", 15), report


async def test_verify_catches_a_forged_checkpoint(rig: Rig) -> None:
    await _seeded(rig)
    forger = AuditSigner.generate()
    cp = (await rig.audit.store.platform_checkpoints())[1]
    sig = blob(forger.sign(cp.seq, cp.hash), rig.db.is_postgres)
    rig.tamper(f"UPDATE audit_checkpoints SET signature = {sig} WHERE seq = 20")
    report = await rig.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "bad_signature", 20), report
    other = await verify(rig.db, forger.public_key)  # a verifier holding a different key trusts no checkpoint
    assert (other.problem, other.first_bad_seq) == ("bad_signature", 10)


async def test_verify_cli(rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    signer = AuditSigner.load_or_create(data_dir)
    audit = AuditLog(rig.db, signer, checkpoint_every=5)
    for i in range(12):
        await audit.append(actor="system", action="test.cli", tenant_id=None, request_id=None, details={"i": i})
    url = url_of(rig.db)

    async def cli(as_json: bool, where: Path = data_dir) -> int:
        return await asyncio.to_thread(run_verify_cli, database_url=url, data_dir=where, as_json=as_json)

    assert await cli(False) == 0
    assert capsys.readouterr().out.startswith("audit log intact: 12 entries, 2 signed checkpoints")
    rig.tamper("DELETE FROM audit_log WHERE seq = 4")
    assert await cli(True) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["problem"] == "deleted" and out["first_bad_seq"] == 4
    assert await cli(False) == 1 and "TAMPERED (deleted at seq 4)" in capsys.readouterr().out
    assert await cli(False, tmp_path / "nowhere") == 2
    assert "no audit public key" in capsys.readouterr().err
    missing = await asyncio.to_thread(run_verify_cli, database_url=f"sqlite+aiosqlite:///{tmp_path / 'none.db'}",
                                      data_dir=data_dir, as_json=False)
    assert missing == 2 and "no database" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


async def test_background_tick_flushes_failures_and_covers_the_head(rig: Rig) -> None:
    agg = AuthFailureAggregator(rig.audit, window_s=60, clock=rig.clock)
    await rig.fill(3)
    agg.record(reason="invalid_key", client="192.0.2.10", key_id="0123456789abcdef")
    await rig.audit.background_tick(aggregator=agg)  # window not over, checkpoint not due
    assert len(await rig.audit.list(tenant_id=None, after_seq=0, limit=10)) == 3
    await rig.audit.background_tick(aggregator=agg, force=True)  # shutdown: flush and sign what is pending
    entries = await rig.audit.list(tenant_id=None, after_seq=0, limit=10)
    assert entries[-1].action == "auth.failures" and entries[-1].details["total"] == 1
    assert [c.seq for c in await rig.audit.store.platform_checkpoints()] == [4]
