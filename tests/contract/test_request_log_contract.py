"""Request log contract on every SQL backend: opt-in capture, sealing, retention (the sweeper and a shortened
setting), rewrap after a data-key rotation, erasure, and tenant scoping."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tenantlm.crypto import Keyring, LocalKekProvider
from tenantlm.crypto.aead import key_version
from tenantlm.errors import NotFound
from tenantlm.requestlog.service import RequestLogService
from tenantlm.requestlog.store import RequestLogStore
from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore

A, B = "ten_aaaa", "ten_bbbb"
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def tenant(tid: str, days: int) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=f"name-{tid}", status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={"request_log_days": days} if days else {}, allowed_models=None, model_aliases={},
                  created_at=now, updated_at=now)


@pytest.fixture
async def rig(database: Database, tmp_path: Path) -> tuple[RequestLogService, Keyring, Clock]:
    store = TenancyStore(database)
    for tid in (A, B):
        await store.insert_tenant(tenant_id=tid, tenant=tenant(tid, 0))
    keyring = Keyring(database, LocalKekProvider(tmp_path / "keyring", os.urandom(32)))
    clock = Clock()
    return RequestLogService(store=RequestLogStore(database), sealer=keyring, clock=clock), keyring, clock


def capture(svc: RequestLogService, tid: str, days: int, text: str) -> None:
    svc.capture(tenant=tenant(tid, days), key_id="key_1", request_id="req_1", model="m", endpoint="chat.completions",
                status=200, request={"messages": [{"role": "user", "content": text}]}, response={"ok": text})


async def sealed_rows(db: Database) -> list[tuple[str, bytes]]:
    async with db.platform_tx() as conn:
        return [(r.id, bytes(r.sealed)) for r in await conn.execute(sa.text("SELECT id, sealed FROM request_log"))]


async def test_off_by_default_and_sealed_when_on(rig: tuple[RequestLogService, Keyring, Clock],
                                                 database: Database) -> None:
    svc, _, _ = rig
    capture(svc, A, 0, "never kept")
    capture(svc, A, 3, "kept for A")
    capture(svc, B, 3, "kept for B")
    await svc.flush()
    rows = await sealed_rows(database)
    assert len(rows) == 2 and not any(b"kept" in blob for _, blob in rows)
    [a_entry] = await svc.list(tenant_id=A, before=None, limit=10)
    read = await svc.read(tenant_id=A, entry_id=a_entry["id"])
    assert read["request"]["messages"][0]["content"] == "kept for A" and read["response"] == {"ok": "kept for A"}
    [b_entry] = await svc.list(tenant_id=B, before=None, limit=10)
    with pytest.raises(NotFound):  # B's entry does not exist for A
        await svc.read(tenant_id=A, entry_id=b_entry["id"])


async def test_sweeper_removes_only_what_expired(rig: tuple[RequestLogService, Keyring, Clock]) -> None:
    svc, _, clock = rig
    capture(svc, A, 1, "one day")
    capture(svc, B, 30, "thirty days")
    await svc.flush()
    clock.now += 1 * DAY - 1
    assert await svc.sweep() == 0
    clock.now += 2
    assert await svc.sweep() == 1
    assert await svc.list(tenant_id=A, before=None, limit=10) == []
    assert len(await svc.list(tenant_id=B, before=None, limit=10)) == 1
    clock.now += 30 * DAY
    assert await svc.sweep() == 1 and await svc.list(tenant_id=B, before=None, limit=10) == []


async def test_shortening_retention_applies_to_old_entries(rig: tuple[RequestLogService, Keyring, Clock]) -> None:
    svc, _, clock = rig
    capture(svc, A, 30, "old")
    await svc.flush()
    [entry] = await svc.list(tenant_id=A, before=None, limit=10)
    assert entry["expires_at"] == int(clock.now + 30 * DAY)
    await svc.retention_changed(tenant_id=A, days=2)
    [entry] = await svc.list(tenant_id=A, before=None, limit=10)
    assert entry["expires_at"] == int(clock.now + 2 * DAY)
    capture(svc, A, 2, "pending while switched off")
    await svc.retention_changed(tenant_id=A, days=0)
    await svc.flush()
    assert await svc.list(tenant_id=A, before=None, limit=10) == []


async def test_rewrap_moves_entries_to_the_active_key(rig: tuple[RequestLogService, Keyring, Clock],
                                                      database: Database) -> None:
    svc, keyring, _ = rig
    for i in range(3):
        capture(svc, A, 5, f"entry {i}")
    await svc.flush()
    assert {key_version(b) for _, b in await sealed_rows(database)} == {1}
    assert await keyring.rotate_dek(tenant_id=A) == 2
    capture(svc, A, 5, "after rotation")
    await svc.flush()
    assert sorted(key_version(b) for _, b in await sealed_rows(database)) == [1, 1, 1, 2]
    assert await svc.rewrap(tenant_id=A) == 3
    assert {key_version(b) for _, b in await sealed_rows(database)} == {2}
    texts = sorted([e["response"]["ok"] async for e in svc.export(tenant_id=A)])
    assert texts == ["after rotation", "entry 0", "entry 1", "entry 2"]
    assert await keyring.drop_dek_version(tenant_id=A, version=1)


async def test_a_shredded_tenant_loses_pending_entries_and_rows(rig: tuple[RequestLogService, Keyring, Clock],
                                                                database: Database) -> None:
    svc, keyring, _ = rig
    capture(svc, A, 5, "written")
    await svc.flush()
    capture(svc, A, 5, "still buffered")
    capture(svc, B, 5, "B's")
    await keyring.shred(tenant_id=A)
    await svc.flush()  # A's buffered entry cannot be sealed any more and is dropped, B's is written
    await svc.forget_tenant(tenant_id=A)
    rows = await sealed_rows(database)
    assert len(rows) == 1
    [b_entry] = await svc.list(tenant_id=B, before=None, limit=10)
    assert (await svc.read(tenant_id=B, entry_id=b_entry["id"]))["response"] == {"ok": "B's"}


async def test_a_full_buffer_drops_and_counts(rig: tuple[RequestLogService, Keyring, Clock]) -> None:
    svc, _, _ = rig
    small = RequestLogService(store=svc.store, sealer=svc.sealer, clock=svc.clock, max_pending=2)
    for i in range(5):
        capture(small, A, 1, f"n{i}")
    await small.flush()
    assert small.dropped == 3 and len(await small.list(tenant_id=A, before=None, limit=10)) == 2
