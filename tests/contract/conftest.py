"""Backends for the contract suites: every store test runs on SQLite and on Postgres (as the non-owner app role)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services import PostgresDatabase
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import check_app_role, migrate


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url, migrate_url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}", None
    else:
        pg: PostgresDatabase = request.getfixturevalue("pg_database")
        url, migrate_url = pg.app_url, pg.owner_url
    await migrate(url=url, migrate_url=migrate_url)
    db = Database.from_url(url)
    await check_app_role(db.engine)
    try:
        yield db
    finally:
        await db.dispose()
