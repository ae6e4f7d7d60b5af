"""The Core table definitions used for queries match what the migrations create."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tenantlm.storage.sql.migrate import migrate
from tenantlm.storage.sql.tables import metadata


async def test_migrations_match_table_definitions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await migrate(url=url, migrate_url=None)
    await migrate(url=url, migrate_url=None)  # idempotent at head
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        inspector = sa.inspect(engine)
        for table in metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
    finally:
        engine.dispose()
