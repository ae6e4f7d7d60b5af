"""Fixtures for the keyring unit tests: a master key, a local KEK provider in a temp dir, a migrated SQLite file."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tenantlm.crypto.local import LocalKekProvider
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def local_kek(tmp_path: Path, master_key: bytes) -> LocalKekProvider:
    return LocalKekProvider(tmp_path / "keyring", master_key)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}"
    await migrate(url=url, migrate_url=None)
    db = Database.from_url(url)
    try:
        store = TenancyStore(db)
        for tid in ("ten_a", "ten_b"):
            now = time.time()
            await store.insert_tenant(tenant_id=tid, tenant=Tenant(
                id=tid, name=tid, status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now))
        yield db
    finally:
        await db.dispose()
