"""Suite-wide fixtures: throwaway Postgres and Redis servers (see tests/services.py).

- `postgres_server` (session): a PostgresServer — host, port, superuser_url, owner_url, app_url (SQLAlchemy asyncpg
  URLs of the `tenantlm` database), psql(sql), pg_dump(), create_database(), dsn(role).
- `pg_database` (function): a PostgresDatabase — a FRESH database for one test, owned by tenantlm_owner, CONNECT for
  tenantlm_app; same fields and helpers; dropped after the test.
- `redis_server` (session): a RedisServer — host, port, url (redis://127.0.0.1:P/0), command(...), flushall().
- `redis_clean` (function): the same server, FLUSHALLed before the test.

A missing server binary skips the test, except with CI=true or TENANTLM_REQUIRE_SERVICES=1, where it fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

# `import services` must work under any --import-mode and whether or not tests/ is a package
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from services import (  # noqa: E402
    PostgresDatabase,
    PostgresServer,
    RedisServer,
    ServiceUnavailable,
    services_required,
    start_postgres,
    start_redis,
)

T = TypeVar("T")


def _start_or_skip(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except ServiceUnavailable as e:
        if services_required():
            pytest.fail(f"{what} is required here (CI=true or TENANTLM_REQUIRE_SERVICES=1) but unavailable: {e}",
                        pytrace=False)  # fmt: skip
        pytest.skip(f"{what} unavailable: {e}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = _start_or_skip("PostgreSQL", start_postgres)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    db = postgres_server.create_database()
    try:
        yield db
    finally:
        postgres_server.drop_database(db.database)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _start_or_skip("Redis", start_redis)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_clean(redis_server: RedisServer) -> RedisServer:
    redis_server.flushall()
    return redis_server


_FIXTURE_MARKERS = {"postgres_server": "postgres", "pg_database": "postgres", "redis_server": "redis",
                    "redis_clean": "redis"}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a server fixture get its marker, so `-m "not postgres"` / `-m "not redis"` deselect them."""
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            marker = _FIXTURE_MARKERS.get(name)
            if marker and marker not in {m.name for m in item.iter_markers()}:
                item.add_marker(marker)
