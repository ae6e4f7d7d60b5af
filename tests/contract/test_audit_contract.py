"""AuditLog contract on every SQL backend: the chain, its serialization under concurrency, tenant scoping (RLS on
Postgres), checkpoints, and the verifier against a log tampered with directly in the database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services import PostgresDatabase
from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.chain import GENESIS, entry_hash, recompute
from tenantlm.audit.models import AuditEntry, TenantAuditEntry
from tenantlm.audit.service import AuditLog
from tenantlm.audit.signer import AuditSigner
from tenantlm.audit.store import AuditStore
from tenantlm.audit.verify import VerifyReport, verify, verify_tenant, verify_tenant_export
from tenantlm.audit.verify_cli import run_verify_cli, run_verify_export_cli
from tenantlm.storage.sql.engine import Database, make_engine
from tenantlm.storage.sql.migrate import MIGRATIONS, migrate
from tenantlm.storage.sql.tables import audit_checkpoints, audit_log


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
    request: pytest.FixtureRequest

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
    yield Rig(database, audit, signer, clock, tamperer(request, database), request)


def blob(data: bytes, postgres: bool) -> str:
    return f"decode('{data.hex()}', 'hex')" if postgres else f"X'{data.hex()}'"


async def test_append_and_list(rig: Rig) -> None:
    first = await rig.audit.append(actor="platform_key:adm_1", action="tenant.created", tenant_id="ten_a",
                                   request_id="req_1", details={"name": "alpha", "plan": {"id": "free", "n": 1.5}})
    second = await rig.audit.append(actor="tenant_key:k1", action="key.created", tenant_id="ten_a",
                                    request_id=None, details={"key_id": "k2", "role": "member"})
    assert (first.seq, second.seq) == (1, 2) and (first.tenant_seq, second.tenant_seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert first.tenant_prev_hash == GENESIS and second.tenant_prev_hash == first.tenant_hash
    assert await rig.audit.list_tenant(tenant_id="ten_a") == [first.tenant_view(), second.tenant_view()]
    listed = await rig.audit.list_platform(after_seq=0, limit=10)
    assert listed == [first, second]
    assert await rig.audit.list_platform(after_seq=1, limit=10) == [second]
    assert await rig.audit.list_platform(after_seq=0, limit=10, action="key.created") == [second]
    public = listed[0].public()
    assert public["object"] == "audit_entry" and public["details"]["plan"] == {"id": "free", "n": 1.5}
    assert public["hash"] == first.hash.hex() and public["ts_us"] == round(rig.clock.now * 1e6)


async def test_details_survive_the_database_exactly(rig: Rig) -> None:
    details = {"z": "ünïcødé ✓ \"quoted\" \\ 🚀", "big": 2**62, "neg": -1, "f": 0.1, "tiny": 5e-324, "e": [],
               "o": {}, "nested": {"b": [True, False, None, {"k2": "v"}], "a": 1e300}, "A": "order", "_": ""}
    rig.clock.now += 0.123457
    entry = await rig.audit.append(actor="a", action="x.y", tenant_id="ten_a", request_id="r", details=details)
    (back,) = await rig.audit.list_tenant(tenant_id="ten_a", after_seq=0, limit=10)
    assert back == entry.tenant_view() and back.details == details
    assert (await rig.verify()).ok


def assert_linked(entries: Sequence[AuditEntry | TenantAuditEntry]) -> None:
    """seq 1, 2, 3, ... with each entry linking to the one before it, from genesis."""
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert [e.prev_hash for e in entries] == [GENESIS, *(e.hash for e in entries[:-1])]


async def test_concurrent_appends_from_many_processes_form_one_chain_and_one_per_tenant(rig: Rig) -> None:
    # Four AuditLogs over four engines stand in for four replicas: only the database lock orders them.
    url = url_of(rig.db)
    replicas = [Database.from_url(url) for _ in range(4)]
    logs = [AuditLog(db, rig.signer, checkpoint_every=25) for db in replicas]
    tenants = ("ten_a", "ten_b", "ten_c", None)
    try:
        written = await asyncio.gather(*(
            logs[i % 4].append(actor=f"replica:{i % 4}", action="test.concurrent", tenant_id=tenants[i % 7 % 4],
                               request_id=None, details={"i": i}) for i in range(200)))
    finally:
        for db in replicas:
            await db.dispose()
    assert sorted(e.seq for e in written) == list(range(1, 201))
    entries = await rig.audit.list_platform(after_seq=0, limit=1000)
    assert sorted(e.details["i"] for e in entries) == list(range(200))
    assert_linked(entries)
    for tenant_id in tenants[:3]:
        chain = await rig.audit.list_tenant(tenant_id=tenant_id, limit=1000)
        assert_linked(chain)  # gapless and linked, whatever order the replicas got the lock in
        wanted = sorted(i for i in range(200) if tenants[i % 7 % 4] == tenant_id)
        assert sorted(e.details["i"] for e in chain) == wanted
        assert [e.tenant_view() for e in entries if e.tenant_id == tenant_id] == chain  # in platform order too
        assert (await verify_tenant(rig.db, tenant_id=tenant_id)).ok
    report = await rig.verify()
    assert report.ok and report.entries == 200 and report.checkpoints == 8 and report.tenant_chains == 3, report


async def test_tenant_reads_see_only_their_own_chain(rig: Rig) -> None:
    await rig.fill(9)
    a = await rig.audit.list_tenant(tenant_id="ten_a", after_seq=0, limit=100)
    assert [e.seq for e in a] == [1, 2, 3] and {e.tenant_id for e in a} == {"ten_a"}
    assert_linked(a)
    assert [e.seq for e in await rig.audit.list_tenant(tenant_id="ten_a", after_seq=2, limit=100)] == [3]
    assert len(await rig.audit.list_platform(after_seq=0, limit=100)) == 9
    lines = [json.loads(x) async for x in rig.audit.export_jsonl(tenant_id="ten_b", batch=2)]
    assert [x["seq"] for x in lines] == [1, 2, 3] and all(x["tenant_id"] == "ten_b" for x in lines)
    assert {x["chain"] for x in lines} == {"tenant"}
    if rig.db.is_postgres:  # the second wall: without any WHERE, the tenant scope shows its own rows only
        async with rig.db.tenant_tx(tenant_id="ten_a") as conn:
            rows = (await conn.execute(sa.text("SELECT tenant_seq, tenant_id FROM audit_log ORDER BY seq"))).all()
            cps = (await conn.execute(sa.text("SELECT count(*) FROM audit_checkpoints"))).scalar_one()
        assert [tuple(r) for r in rows] == [(1, "ten_a"), (2, "ten_a"), (3, "ten_a")]
        assert cps == 0


async def test_a_tenant_entry_off_its_chain_is_refused(rig: Rig) -> None:
    # what a replica of the previous version would write: the platform fields only
    with pytest.raises(sa.exc.IntegrityError, match="ck_audit_log_tenant_chain"):
        async with rig.db.platform_tx() as conn:
            await conn.execute(audit_log.insert().values(
                seq=1, ts=0.0, actor="x", tenant_id="ten_a", action="x", request_id=None, details={},
                prev_hash=GENESIS, hash=GENESIS, format_version=1))
    with pytest.raises(sa.exc.IntegrityError):  # a tenant seq is taken once
        for seq in (1, 2):
            async with rig.db.platform_tx() as conn:
                await conn.execute(audit_log.insert().values(
                    seq=seq, ts=0.0, actor="x", tenant_id="ten_a", action="x", request_id=None, details={},
                    prev_hash=GENESIS, hash=GENESIS, format_version=2, tenant_seq=1, tenant_prev_hash=GENESIS,
                    tenant_hash=GENESIS))


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
    entries = {e.seq: e for e in await rig.audit.list_platform(after_seq=0, limit=100)}
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
    e = (await rig.audit.list_platform(after_seq=11, limit=1))[0]
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
    assert len(await rig.audit.list_platform(after_seq=0, limit=10)) == 3
    await rig.audit.background_tick(aggregator=agg, force=True)  # shutdown: flush and sign what is pending
    entries = await rig.audit.list_platform(after_seq=0, limit=10)
    assert entries[-1].action == "auth.failures" and entries[-1].details["total"] == 1
    assert [c.seq for c in await rig.audit.store.platform_checkpoints()] == [4]


# --- tenant chains: tampering, isolation, verification from what a tenant can read ------------------------------
# After rig.fill(25): ten_a holds platform seqs 1, 4, 7, ... (its seq k is platform seq 3k - 2), ten_b 2, 5, 8, ...
TENANT_TAMPERS = {
    "edited": ("""UPDATE audit_log SET details = '{"n": 999}' WHERE tenant_id = 'ten_a' AND tenant_seq = 3""",
               ("edited", 3), ("edited", 7)),
    "deleted": ("DELETE FROM audit_log WHERE tenant_id = 'ten_a' AND tenant_seq = 3", ("deleted", 3), ("deleted", 7)),
    "reordered": ("UPDATE audit_log SET tenant_seq = -1 WHERE tenant_id = 'ten_a' AND tenant_seq = 2; "
                  "UPDATE audit_log SET tenant_seq = 2 WHERE tenant_id = 'ten_a' AND tenant_seq = 4; "
                  "UPDATE audit_log SET tenant_seq = 4 WHERE tenant_id = 'ten_a' AND tenant_seq = -1;",
                  ("reordered", 2), ("edited", 4)),  # the platform hash covers tenant_seq
}


@pytest.mark.parametrize("kind", sorted(TENANT_TAMPERS))
async def test_tenant_chain_tampering_is_named_and_other_chains_are_unaffected(rig: Rig, kind: str) -> None:
    await _seeded(rig)
    before_b = await rig.audit.list_tenant(tenant_id="ten_b", limit=100)
    for tenant_id, n in (("ten_a", 9), ("ten_b", 8)):
        report = await verify_tenant(rig.db, tenant_id=tenant_id)
        assert report.ok and report.entries == report.head_seq == n and report.tenant_id == tenant_id, report
    sql, tenant_finding, platform_finding = TENANT_TAMPERS[kind]
    rig.tamper(sql)
    a = await verify_tenant(rig.db, tenant_id="ten_a")
    assert (a.ok, a.problem, a.first_bad_seq) == (False, *tenant_finding), a
    assert a.line().startswith(f"audit chain of tenant ten_a TAMPERED ({tenant_finding[0]} at seq")
    b = await verify_tenant(rig.db, tenant_id="ten_b")
    assert b.ok and b.entries == 8, b
    assert await rig.audit.list_tenant(tenant_id="ten_b", limit=100) == before_b
    platform = await rig.verify()
    assert (platform.ok, platform.problem, platform.first_bad_seq) == (False, *platform_finding), platform
    # the tenant's own export shows the same, with no database access at all
    exported = [line async for line in rig.audit.export_jsonl(tenant_id="ten_a")]
    from_file = await verify_tenant_export(exported)
    assert (from_file.problem, from_file.first_bad_seq) == tenant_finding, from_file


async def test_platform_verify_names_a_tenant_field_changed_with_a_recomputed_platform_hash(rig: Rig) -> None:
    await _seeded(rig)
    e = (await rig.audit.list_platform(after_seq=6, limit=1))[0]  # ten_a's seq 3
    forged = replace(e, tenant_seq=42)
    forged = replace(forged, hash=recompute(forged))
    pg = rig.db.is_postgres
    rig.tamper(f"UPDATE audit_log SET tenant_seq = 42, hash = {blob(forged.hash, pg)} WHERE seq = 7")
    report = await rig.verify()
    assert (report.problem, report.first_bad_seq) == ("edited", 7), report  # seq 8 no longer links to seq 7


async def _interleaved(audit: AuditLog, clock: Clock, *, with_b: bool) -> None:
    """Tenant A acts at fixed times; with ``with_b``, tenant B and the platform act (ever more) in between."""
    for i in range(8):
        if with_b:
            for j in range(i % 3 + 1):
                clock.now += 0.01
                await audit.append(actor="tenant:ten_b:k1", action="key.created", tenant_id="ten_b",
                                   request_id=f"req_b{i}_{j}", details={"i": i, "j": j})
            clock.now += 0.01
            await audit.append(actor="system:x", action="plan.updated", tenant_id=None, request_id=None,
                               details={"i": i})
        clock.now = 1_700_000_500.0 + i
        await audit.append(actor="tenant:ten_a:k1", action="tenant.updated", tenant_id="ten_a",
                           request_id=f"req_a{i}", details={"i": i})


@pytest.fixture
async def other_database(request: pytest.FixtureRequest, database: Database, tmp_path: Path
                         ) -> AsyncIterator[Database]:
    """A second, empty database of the same backend as ``database``."""
    if database.is_postgres:
        server = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        url, migrate_url = pg.app_url, pg.owner_url
    else:
        url, migrate_url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}", None
    await migrate(url=url, migrate_url=migrate_url)
    db = Database.from_url(url)
    try:
        yield db
    finally:
        await db.dispose()
        if database.is_postgres:
            server.drop_database(pg.database)


async def test_a_tenants_trail_is_byte_identical_whatever_other_tenants_do(
        database: Database, other_database: Database) -> None:
    views = []
    for db, with_b in ((database, True), (other_database, False)):
        clock = Clock()
        audit = AuditLog(db, AuditSigner.generate(), checkpoint_every=3, clock=clock)
        await _interleaved(audit, clock, with_b=with_b)
        views.append(b"".join([line async for line in audit.export_jsonl(tenant_id="ten_a", batch=3)]))
    shared, alone = views
    assert shared == alone  # same seqs 1..8, same links, same bytes: nothing of B's volume or hashes shows
    assert [json.loads(x)["seq"] for x in alone.splitlines()] == list(range(1, 9))
    assert (await verify_tenant_export(alone.splitlines())).ok


async def test_verify_cli_for_one_tenant_and_for_an_export(rig: Rig, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    await rig.fill(9)
    url, nowhere = url_of(rig.db), tmp_path / "no-keys"

    async def cli(tenant_id: str) -> int:  # no signing key needed for one tenant's chain
        return await asyncio.to_thread(run_verify_cli, database_url=url, data_dir=nowhere, as_json=False,
                                       tenant_id=tenant_id)

    async def cli_export(path: Path, as_json: bool = True) -> int:
        return await asyncio.to_thread(run_verify_export_cli, path=path, as_json=as_json)

    assert await cli("ten_a") == 0
    assert capsys.readouterr().out == "audit chain of tenant ten_a intact: 3 entries, linked from genesis to seq 3\n"
    export = tmp_path / "audit-ten_a.jsonl"
    export.write_bytes(b"".join([line async for line in rig.audit.export_jsonl(tenant_id="ten_a")]))
    assert await cli_export(export) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    lines = export.read_text().splitlines()
    export.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert await cli_export(export) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["problem"], out["first_bad_seq"], out["tenant_id"]) == ("deleted", 2, "ten_a")
    assert await cli_export(tmp_path / "missing.jsonl", as_json=False) == 2
    assert "cannot read" in capsys.readouterr().err
    rig.tamper("DELETE FROM audit_log WHERE tenant_id = 'ten_b' AND tenant_seq = 1")
    assert await cli("ten_a") == 0 and await cli("ten_b") == 1
    assert "TAMPERED (deleted at seq 1)" in capsys.readouterr().out


# --- migration 0007: entries written before tenant chains are linked, and still verify --------------------------
_V1_LOG = sa.table("audit_log", *(sa.column(c) for c in ("seq", "ts", "actor", "tenant_id", "action",
                                                         "request_id", "prev_hash", "hash")),
                   sa.column("details", sa.JSON))


async def _migrate_to(url: str, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def upgrade(conn: sa.Connection) -> None:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
    finally:
        await engine.dispose()


async def _write_v1_log(db: Database, signer: AuditSigner, n: int) -> None:
    """What a server before 0007 wrote: the platform chain only, a signed checkpoint every 5 entries."""
    prev = GENESIS
    async with db.platform_tx() as conn:
        for seq in range(1, n + 1):
            fields: dict[str, Any] = {"seq": seq, "ts_us": 1_600_000_000_000_000 + seq, "actor": "system:old",
                                      "tenant_id": ("ten_a", "ten_b", None)[(seq - 1) % 3], "action": "old.event",
                                      "request_id": None, "details": {"seq": seq}}
            digest = entry_hash(prev, **fields, format_version=1)
            values = {k: v for k, v in fields.items() if k != "ts_us"}
            await conn.execute(_V1_LOG.insert().values(ts=fields["ts_us"] / 1e6, prev_hash=prev, hash=digest,
                                                       **values))
            if seq % 5 == 0:
                await conn.execute(audit_checkpoints.insert().values(
                    seq=seq, ts=fields["ts_us"] / 1e6, hash=digest, signature=signer.sign(seq, digest),
                    key_id=signer.key_id))
            prev = digest


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_links_existing_entries_into_tenant_chains(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    if backend == "sqlite":
        url = migrate_url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        pg: PostgresDatabase = request.getfixturevalue("pg_database")
        url, migrate_url = pg.app_url, pg.owner_url
    await _migrate_to(migrate_url, "0006")
    signer, old = AuditSigner.generate(), Database.from_url(migrate_url)
    try:
        await _write_v1_log(old, signer, 14)
    finally:
        await old.dispose()
    await migrate(url=url, migrate_url=None if backend == "sqlite" else migrate_url)
    db = Database.from_url(url)
    try:
        report = await verify(db, signer.public_key)
        assert report.ok and report.entries == 14 and report.checkpoints == 2 and report.tenant_chains == 2, report
        rows = await AuditStore(db).list_platform(after_seq=0, limit=100)
        assert {r.format_version for r in rows} == {1}
        a = await AuditStore(db).list_tenant(tenant_id="ten_a", after_seq=0, limit=100)
        assert [e.details["seq"] for e in a] == [1, 4, 7, 10, 13]  # in platform order, numbered 1..5
        assert_linked(a)
        audit = AuditLog(db, signer, checkpoint_every=5)
        new = await audit.append(actor="system:new", action="new.event", tenant_id="ten_a", request_id=None,
                                 details={})
        assert (new.format_version, new.tenant_seq, new.tenant_prev_hash) == (2, 6, a[-1].hash)
        assert (await verify(db, signer.public_key)).ok and (await verify_tenant(db, tenant_id="ten_a")).ok
        # a format-1 platform hash does not cover the tenant fields; the tenant chain check still catches an edit
        if backend == "sqlite":
            with sqlite3.connect(tmp_path / "old.db") as conn:
                conn.execute("UPDATE audit_log SET tenant_hash = randomblob(32) WHERE seq = 7")
            conn.close()
        else:
            pg.psql("UPDATE audit_log SET tenant_hash = decode(repeat('ab', 32), 'hex') WHERE seq = 7")
        report = await verify(db, signer.public_key)
        assert (report.ok, report.problem, report.first_bad_seq) == (False, "edited", 7), report
        assert "tenant ten_a" in report.message
        tenant = await verify_tenant(db, tenant_id="ten_a")
        assert (tenant.problem, tenant.first_bad_seq) == ("edited", 3), tenant
    finally:
        await db.dispose()


async def test_downgrading_below_0007_is_refused_once_entries_cover_tenant_fields(rig: Rig) -> None:
    migrate_url = url_of(rig.db)
    if rig.db.is_postgres:
        pg: PostgresDatabase = rig.request.getfixturevalue("pg_database")
        migrate_url = pg.owner_url
    await rig.fill(2)
    with pytest.raises(RuntimeError, match="cannot downgrade below 0007"):
        await _migrate_to(migrate_url, "0006", down=True)
    assert (await rig.verify()).ok and len(await rig.audit.list_tenant(tenant_id="ten_a")) == 1
