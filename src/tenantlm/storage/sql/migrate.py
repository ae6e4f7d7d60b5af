"""Apply Alembic migrations at start, and check that the server's Postgres role cannot defeat row-level security.

SQLite: migrations run over the server's own URL. Postgres: they run as the owner role
(``TENANTLM_DATABASE_MIGRATE_URL``), then the owner grants the app role DML on every table except Alembic's own.
The server then refuses to start if its role is a superuser, has BYPASSRLS, or owns a tenant-owned table, because
any of those would switch row-level security off.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantlm.storage.sql.engine import make_engine
from tenantlm.storage.sql.tables import APPEND_ONLY, TENANT_OWNED

MIGRATIONS = Path(__file__).with_name("migrations")


class UnsafeDatabaseRole(RuntimeError):
    """The server's database role could read across tenants; starting would void the RLS wall."""


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection, app_role: str | None, schema: str | None = None) -> None:
    if schema is not None:  # a tenant's silo: its own schema, and nothing else visible while migrating it
        quoted = _quote_ident(connection, schema)
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        connection.exec_driver_sql(f"SET LOCAL search_path TO {quoted}")
    cfg = _config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
    if connection.dialect.name == "postgresql" and app_role:
        role = _quote_ident(connection, app_role)
        where = _quote_ident(connection, schema or "public")
        connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {where} TO {role}")
        connection.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {role}")
        connection.exec_driver_sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {where} TO {role}")  # chunk ids
        for table in APPEND_ONLY:
            connection.exec_driver_sql(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}")
        connection.exec_driver_sql(f"REVOKE ALL ON alembic_version FROM {role}")
        connection.exec_driver_sql(f"GRANT SELECT ON alembic_version TO {role}")


def _quote_ident(connection: Connection, name: str) -> str:
    return str(connection.execute(sa.text("SELECT quote_ident(:n)"), {"n": name}).scalar_one())


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(*, url: str, migrate_url: str | None, schema: str | None = None) -> None:
    """Bring the schema to head. On Postgres without a migrate URL, only verify it is already at head. ``schema``
    (Postgres, with a migrate URL): create that schema and migrate the tables inside it (a tenant's silo)."""
    is_pg = url.startswith("postgresql")
    if schema is not None and not (is_pg and migrate_url):
        raise ValueError("a schema of its own needs Postgres and the owner role's migrate URL")
    if is_pg and not migrate_url:
        await _require_head(url)
        return
    engine = make_engine(migrate_url or url)
    app_role = sa.engine.make_url(url).username if is_pg else None
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, app_role, schema)
    finally:
        await engine.dispose()


async def drop_schema(*, migrate_url: str, schema: str) -> None:
    """Drop a silo schema and everything in it (as the owner role)."""
    engine = make_engine(migrate_url)
    try:
        async with engine.begin() as conn:
            quoted = await conn.run_sync(_quote_ident, schema)
            await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
    finally:
        await engine.dispose()


async def _require_head(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    if current != head_revision():
        raise UnsafeDatabaseRole(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}; set "
            "TENANTLM_DATABASE_MIGRATE_URL to the owner role so the server can migrate it"
        )


async def check_app_role(engine: AsyncEngine) -> None:
    """Refuse a Postgres role that is superuser, BYPASSRLS, or owner of a tenant-owned table."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as conn:
        row = (await conn.execute(sa.text(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ))).one()
        owned = (await conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user "
                    "AND tablename = ANY(:t)"),
            {"t": list(TENANT_OWNED)},
        )).scalars().all()
    if row.rolsuper or row.rolbypassrls:
        raise UnsafeDatabaseRole(
            f"database role {row.rolname!r} is a superuser or has BYPASSRLS: row-level security would not apply. "
            "Connect the server as a plain role (see docs/operations.md)"
        )
    if owned:
        raise UnsafeDatabaseRole(
            f"database role {row.rolname!r} owns {sorted(owned)}: owners can disable row-level security. "
            "Run migrations as the owner (TENANTLM_DATABASE_MIGRATE_URL) and serve as another role"
        )
