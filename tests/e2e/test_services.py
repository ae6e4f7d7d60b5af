"""The throwaway servers of tests/conftest.py: roles, isolation and cleanup."""

from __future__ import annotations

import subprocess
import uuid

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from services import APP_ROLE, OWNER_ROLE, PostgresDatabase, PostgresServer, RedisServer

# ------------------------------------------------------------------------------------------------ Postgres


def test_app_role_answers_select_1(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("select 1", user=APP_ROLE) == "1"
    assert postgres_server.psql("select current_user, current_database()", user=APP_ROLE) == "tenantlm_app|tenantlm"


def test_urls_are_sqlalchemy_asyncpg_urls(postgres_server: PostgresServer) -> None:
    port = postgres_server.port
    assert postgres_server.host == "127.0.0.1"
    assert postgres_server.app_url == f"postgresql+asyncpg://tenantlm_app@127.0.0.1:{port}/tenantlm"
    assert postgres_server.owner_url == f"postgresql+asyncpg://tenantlm_owner@127.0.0.1:{port}/tenantlm"
    assert postgres_server.superuser_url == f"postgresql+asyncpg://postgres@127.0.0.1:{port}/tenantlm"


async def test_app_role_connects_with_asyncpg(postgres_server: PostgresServer) -> None:
    url = make_url(postgres_server.app_url)
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        APP_ROLE,
        "127.0.0.1",
        postgres_server.port,
        "tenantlm",
    )
    conn = await asyncpg.connect(postgres_server.dsn(APP_ROLE))
    try:
        row = await conn.fetchrow("select 1 as one, current_user as who")
    finally:
        await conn.close()
    assert (row["one"], row["who"]) == (1, APP_ROLE)


async def test_app_url_connects_through_sqlalchemy(postgres_server: PostgresServer) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio needs greenlet (sqlalchemy[asyncio])")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_server.app_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("select 1, current_user"))).one()
    finally:
        await engine.dispose()
    assert tuple(row) == (1, APP_ROLE)


def test_role_attributes(postgres_server: PostgresServer) -> None:
    rows = postgres_server.psql(
        "select rolname, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolcanlogin from pg_roles "
        "where rolname like 'tenantlm%' order by rolname"
    ).splitlines()
    assert rows == [
        "tenantlm_app|f|f|f|f|t",
        "tenantlm_owner|f|f|f|f|t",
    ]


def test_owner_owns_database_and_schema_app_owns_nothing(postgres_server: PostgresServer) -> None:
    db_owner = postgres_server.psql("select pg_get_userbyid(datdba) from pg_database where datname = 'tenantlm'")
    schema_owner = postgres_server.psql("select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'public'")
    assert (db_owner, schema_owner) == (OWNER_ROLE, OWNER_ROLE)
    owned_by_app = postgres_server.psql(
        "select count(*) from pg_class where relowner = (select oid from pg_roles where rolname = 'tenantlm_app')"
    )
    assert owned_by_app == "0"
    assert (
        postgres_server.psql(
            "select has_database_privilege('tenantlm_app', 'tenantlm', 'CONNECT'), "
            "has_schema_privilege('tenantlm_app', 'public', 'USAGE'), "
            "has_schema_privilege('tenantlm_app', 'public', 'CREATE')"
        )
        == "t|t|f"
    )


def test_app_role_cannot_create_tables(pg_database: PostgresDatabase) -> None:
    with pytest.raises(RuntimeError, match="permission denied for schema public"):
        pg_database.psql("create table sneaky (id int)", user=APP_ROLE)


_first_db: dict[str, str] = {}


def test_fresh_database_is_empty_and_writable_by_owner(pg_database: PostgresDatabase) -> None:
    assert pg_database.database != "tenantlm"
    assert pg_database.app_url.endswith(f"/{pg_database.database}")
    assert pg_database.psql("select count(*) from pg_tables where schemaname = 'public'") == "0"
    # what a migration does: the owner creates a table and grants the app role rights on it
    pg_database.psql(
        "create table marker (id int primary key, note text); insert into marker values (1, 'first test'); "
        f"grant select, insert on marker to {APP_ROLE};",
        user=OWNER_ROLE,
    )
    assert pg_database.psql("select note from marker", user=APP_ROLE) == "first test"
    assert pg_database.psql("select tableowner from pg_tables where tablename = 'marker'") == OWNER_ROLE
    assert b"CREATE TABLE public.marker" in pg_database.pg_dump()
    _first_db["name"] = pg_database.database


def test_next_test_gets_another_database_and_the_last_one_is_dropped(
    postgres_server: PostgresServer, pg_database: PostgresDatabase
) -> None:
    if "name" not in _first_db:
        pytest.skip("runs after test_fresh_database_is_empty_and_writable_by_owner")
    assert pg_database.database != _first_db["name"]
    assert pg_database.psql("select count(*) from pg_tables where schemaname = 'public'") == "0"
    gone = postgres_server.psql(f"select count(*) from pg_database where datname = '{_first_db['name']}'")
    assert gone == "0"


def test_pg_dump_of_session_database(postgres_server: PostgresServer) -> None:
    dump = postgres_server.pg_dump()
    assert dump.startswith(b"--") and b"PostgreSQL database dump" in dump


def test_server_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    assert postgres_server.psql("show listen_addresses") == "127.0.0.1"
    pid_cmdline = subprocess.run(
        ["cat", f"/proc/{postgres_server.pid}/cmdline"], capture_output=True, check=True
    ).stdout
    assert b"postgres" in pid_cmdline


# ------------------------------------------------------------------------------------------------ Redis


def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        key = f"test:{uuid.uuid4().hex}"
        assert client.set(key, "value", ex=60) is True
        assert client.get(key) == b"value"
        assert client.delete(key) == 1
    finally:
        client.close()


def test_redis_clean_starts_empty(redis_clean: RedisServer) -> None:
    client = redis.Redis.from_url(redis_clean.url)
    try:
        assert client.dbsize() == 0
        client.set("left-behind", "1")
    finally:
        client.close()
    assert redis_clean.command("PING") == b"+PONG"
