"""Keyring contract, on every SQL backend: seal/open, rotation under traffic, KEK rotation, crypto-shredding with a
backup taken before the shred."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tenantlm.crypto import DecryptionFailed, Keyring, KeyShredded, KeyUnavailable, LocalKekProvider
from tenantlm.crypto.fake_vault import FakeVaultClient
from tenantlm.crypto.kek import KekProvider
from tenantlm.crypto.store import SHREDDED
from tenantlm.crypto.vault import VaultTransitKekProvider
from tenantlm.errors import NotFound
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.tables import tenant_keys
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore

A, B = "ten_aaaa", "ten_bbbb"


def make_tenant(tid: str) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=f"name-{tid}", status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now)


@pytest.fixture
async def db(database: Database) -> Database:
    store = TenancyStore(database)
    for tid in (A, B):
        await store.insert_tenant(tenant_id=tid, tenant=make_tenant(tid))
    return database


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def kek(tmp_path: Path, master_key: bytes) -> LocalKekProvider:
    return LocalKekProvider(tmp_path / "keyring", master_key)


async def rows(db: Database, tenant_id: str) -> list[sa.Row[tuple[int, bytes, str, str]]]:
    q = (sa.select(tenant_keys.c.version, tenant_keys.c.wrapped_dek, tenant_keys.c.kek_ref, tenant_keys.c.state)
         .where(tenant_keys.c.tenant_id == tenant_id).order_by(tenant_keys.c.version))
    async with db.tenant_tx(tenant_id=tenant_id) as conn:
        return list(await conn.execute(q))


async def seal_many(ring: Keyring, tenant_id: str, n: int) -> dict[str, bytes]:
    return {f"rec_{i}": await ring.seal(tenant_id=tenant_id, kind="item", record_id=f"rec_{i}",
                                        plaintext=f"{tenant_id} secret {i}".encode()) for i in range(n)}


async def assert_opens(ring: Keyring, tenant_id: str, sealed: dict[str, bytes]) -> None:
    for rid, ct in sealed.items():
        plain = await ring.open(tenant_id=tenant_id, kind="item", record_id=rid, ciphertext=ct)
        assert plain == f"{tenant_id} secret {rid.removeprefix('rec_')}".encode()


async def test_ensure_seal_open(db: Database, kek: LocalKekProvider) -> None:
    ring = Keyring(db, kek)
    assert await ring.ensure_tenant(A) == 1
    ct = await ring.seal(tenant_id=A, kind="file", record_id="file_1", plaintext=b"content")
    assert ct[:4] == b"TLM1" and b"content" not in ct
    assert await ring.open(tenant_id=A, kind="file", record_id="file_1", ciphertext=ct) == b"content"
    fresh = Keyring(db, kek)
    assert await fresh.open(tenant_id=A, kind="file", record_id="file_1", ciphertext=ct) == b"content"
    [row] = await rows(db, A)
    assert row.version == 1 and row.state == "active" and row.kek_ref == "local:v1"
    with pytest.raises(DecryptionFailed):
        await ring.open(tenant_id=B, kind="file", record_id="file_1", ciphertext=ct)  # B's own key, wrong binding
    with pytest.raises(DecryptionFailed):
        await ring.open(tenant_id=A, kind="file", record_id="file_2", ciphertext=ct)
    info = await ring.describe(tenant_id=A)
    assert [(k.version, k.state) for k in info] == [(1, "active")]


async def test_concurrent_ensure_across_processes_makes_one_key(db: Database, tmp_path: Path,
                                                                master_key: bytes) -> None:
    rings = [Keyring(db, LocalKekProvider(tmp_path / "keyring", master_key)) for _ in range(3)]
    versions = await asyncio.gather(*(r.ensure_tenant(A) for r in rings for _ in range(5)))
    assert set(versions) == {1}
    assert [r.version for r in await rows(db, A)] == [1]
    sealed = [await r.seal(tenant_id=A, kind="k", record_id="r", plaintext=b"x") for r in rings]
    for r in rings:
        for ct in sealed:
            assert await r.open(tenant_id=A, kind="k", record_id="r", ciphertext=ct) == b"x"


async def test_unknown_tenant_gets_no_keys(db: Database, kek: LocalKekProvider) -> None:
    ring = Keyring(db, kek)
    with pytest.raises(NotFound):
        await ring.ensure_tenant("ten_nobody")
    with pytest.raises(NotFound):
        await ring.seal(tenant_id="ten_nobody", kind="k", record_id="r", plaintext=b"x")
    assert not await kek.exists("ten_nobody")


async def test_first_seal_creates_the_keys_lazily(db: Database, kek: LocalKekProvider) -> None:
    ring = Keyring(db, kek)
    cts = await asyncio.gather(*(ring.seal(tenant_id=A, kind="k", record_id=str(i), plaintext=b"p")
                                 for i in range(50)))
    assert len(await rows(db, A)) == 1 and len(set(cts)) == 50


async def test_rotate_dek_under_concurrent_traffic(db: Database, tmp_path: Path, master_key: bytes) -> None:
    ring = Keyring(db, LocalKekProvider(tmp_path / "keyring", master_key))
    other = Keyring(db, LocalKekProvider(tmp_path / "keyring", master_key))  # another process, its own cache
    old = await seal_many(ring, A, 20)
    failures: list[BaseException] = []
    sealed_under: dict[str, set[int]] = {"ring": set(), "other": set()}
    rotated = asyncio.Event()
    done = 0

    async def traffic(i: int) -> None:
        nonlocal done
        name, r = ("ring", ring) if i % 2 else ("other", other)
        j, last = 0, False
        while not last:
            last = j >= 4 and rotated.is_set()  # one more round after the rotations finished
            rid, j = f"t{i}_{j}", j + 1
            try:
                ct = await r.seal(tenant_id=A, kind="item", record_id=rid, plaintext=rid.encode())
                sealed_under[name].add(int.from_bytes(ct[4:8], "big"))
                await asyncio.sleep(random.random() / 100)
                assert await r.open(tenant_id=A, kind="item", record_id=rid, ciphertext=ct) == rid.encode()
                old_rid, old_ct = random.choice(list(old.items()))
                await r.open(tenant_id=A, kind="item", record_id=old_rid, ciphertext=old_ct)
                done += 1
            except BaseException as exc:
                failures.append(exc)

    async def rotations() -> list[int]:
        out = []
        for _ in range(3):
            await asyncio.sleep(0.01)
            out.append(await ring.rotate_dek(tenant_id=A))
        rotated.set()
        return out

    tasks = [asyncio.create_task(traffic(i)) for i in range(200)]
    versions = await rotations()
    await asyncio.gather(*tasks)
    assert failures == [] and done >= 1000
    assert versions == [2, 3, 4]
    # this process sealed under the new versions as they came; the other kept its cached version (still valid)
    assert 4 in sealed_under["ring"] and len(sealed_under["ring"]) >= 2
    states = [(r.version, r.state) for r in await rows(db, A)]
    assert states == [(1, "retired"), (2, "retired"), (3, "retired"), (4, "active")]
    new = await ring.seal(tenant_id=A, kind="item", record_id="n", plaintext=b"n")
    assert int.from_bytes(new[4:8], "big") == 4
    await assert_opens(Keyring(db, LocalKekProvider(tmp_path / "keyring", master_key)), A, old)


async def test_rewrap_moves_records_forward(db: Database, kek: LocalKekProvider) -> None:
    ring = Keyring(db, kek)
    old = await seal_many(ring, A, 5)
    await ring.rotate_dek(tenant_id=A)
    moved = {}
    for rid, ct in old.items():
        new = await ring.rewrap_record(tenant_id=A, kind="item", record_id=rid, ciphertext=ct)
        assert new is not None and int.from_bytes(new[4:8], "big") == 2
        assert await ring.rewrap_record(tenant_id=A, kind="item", record_id=rid, ciphertext=new) is None
        moved[rid] = new
    assert await ring.drop_dek_version(tenant_id=A, version=1)
    await assert_opens(Keyring(db, kek), A, moved)
    with pytest.raises(DecryptionFailed, match="version"):
        await Keyring(db, kek).open(tenant_id=A, kind="item", record_id="rec_0", ciphertext=old["rec_0"])


def make_kek(provider: str, tmp_path: Path, master_key: bytes, vault: FakeVaultClient) -> KekProvider:
    if provider == "local":
        return LocalKekProvider(tmp_path / "keyring", master_key)
    return VaultTransitKekProvider(vault)


@pytest.mark.parametrize("provider", ["local", "vault"])
async def test_rotate_kek_rewraps_only_the_data_keys(db: Database, tmp_path: Path, master_key: bytes,
                                                     provider: str) -> None:
    vault = FakeVaultClient()
    ring = Keyring(db, make_kek(provider, tmp_path, master_key, vault))
    sealed_v1 = await seal_many(ring, A, 5)
    await ring.rotate_dek(tenant_id=A)
    sealed_v2 = await seal_many(ring, A, 5)
    b_sealed = await seal_many(ring, B, 3)
    before, b_before = await rows(db, A), await rows(db, B)
    cold = Keyring(db, make_kek(provider, tmp_path, master_key, vault), cache_ttl_s=0)
    failures: list[BaseException] = []

    async def traffic(i: int) -> None:
        rid, ct = random.choice(list(sealed_v1.items()) + list(sealed_v2.items()))
        try:
            await asyncio.sleep(random.random() / 50)
            await cold.open(tenant_id=A, kind="item", record_id=rid, ciphertext=ct)
        except BaseException as exc:
            failures.append(exc)

    tasks = [asyncio.create_task(traffic(i)) for i in range(200)]
    new_ref = await ring.rotate_kek(tenant_id=A)
    assert new_ref == ("local:v2" if provider == "local" else f"vault:tenantlm-{A}:v2")
    await asyncio.gather(*tasks)
    assert failures == []
    after = await rows(db, A)
    assert [(r.version, r.state) for r in after] == [(r.version, r.state) for r in before]
    assert all(a.wrapped_dek != b.wrapped_dek and a.kek_ref == new_ref for a, b in zip(after, before, strict=True))
    assert await rows(db, B) == b_before
    fresh = Keyring(db, make_kek(provider, tmp_path, master_key, vault))
    await assert_opens(fresh, A, sealed_v1 | sealed_v2)
    await assert_opens(fresh, B, b_sealed)


@pytest.mark.parametrize("provider", ["local", "vault"])
async def test_shred_makes_a_backup_undecryptable(db: Database, tmp_path: Path, master_key: bytes,
                                                  provider: str) -> None:
    kek = make_kek(provider, tmp_path, master_key, FakeVaultClient())
    ring = Keyring(db, kek)
    a_sealed, b_sealed = await seal_many(ring, A, 5), await seal_many(ring, B, 5)
    await ring.rotate_dek(tenant_id=A)
    a_sealed |= {"rec_9": await ring.seal(tenant_id=A, kind="item", record_id="rec_9", plaintext=b"ten_aaaa secret 9")}

    backup = await take_backup(db, tmp_path)
    await ring.shred(tenant_id=A)

    # the live database: no wrapped key left, a tombstone, and every operation says so
    assert [(r.version, r.state, r.wrapped_dek) for r in await rows(db, A)] == [(0, SHREDDED, b"")]
    for fresh in (ring, Keyring(db, kek)):
        with pytest.raises(KeyShredded) as info:
            await fresh.open(tenant_id=A, kind="item", record_id="rec_0", ciphertext=a_sealed["rec_0"])
        assert info.value.status == 404
        with pytest.raises(KeyShredded):
            await fresh.seal(tenant_id=A, kind="item", record_id="x", plaintext=b"x")
    for op in (ring.ensure_tenant(A), ring.rotate_dek(tenant_id=A), ring.rotate_kek(tenant_id=A)):
        with pytest.raises(KeyShredded):
            await op
    await ring.shred(tenant_id=A)  # idempotent

    # the backup taken before the shred, opened with the same master key and keyring: still undecryptable
    restored = await backup.restore()
    try:
        assert len(await rows(restored, A)) == 2
        from_backup = Keyring(restored, kek)
        for rid, ct in a_sealed.items():
            with pytest.raises((KeyShredded, KeyUnavailable)):
                await from_backup.open(tenant_id=A, kind="item", record_id=rid, ciphertext=ct)
        await assert_opens(from_backup, B, b_sealed)
    finally:
        await backup.close()
    await assert_opens(Keyring(db, kek), B, b_sealed)


class Backup:
    """SQLite: a copy of the database file made with SQLite's online backup. Postgres: the tenant_keys rows as a dump
    would hold them, written back after the shred (what restoring that dump would do)."""

    def __init__(self, db: Database, copy: Path | None, saved: list[dict[str, object]]) -> None:
        self.db, self.copy, self.saved = db, copy, saved
        self.opened: Database | None = None

    async def restore(self) -> Database:
        if self.copy is not None:
            self.opened = Database.from_url(f"sqlite+aiosqlite:///{self.copy}")
            return self.opened
        async with self.db.platform_tx() as conn:
            await conn.execute(tenant_keys.delete().where(tenant_keys.c.tenant_id == A))
            await conn.execute(tenant_keys.insert(), self.saved)
        return self.db

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.dispose()


async def take_backup(db: Database, tmp_path: Path) -> Backup:
    if db.is_postgres:
        async with db.platform_tx() as conn:
            saved = [dict(r._mapping) for r in await conn.execute(sa.select(tenant_keys))]
        return Backup(db, None, [s for s in saved if s["tenant_id"] == A])
    url = db.engine.url.database
    assert url is not None
    copy = tmp_path / "backup.db"

    def run() -> None:
        with contextlib.closing(sqlite3.connect(url)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)

    await asyncio.to_thread(run)
    return Backup(db, copy, [])
