"""Live servers for the API suites: ``tenantlm serve`` in a subprocess, driven over HTTP with httpx and the official
``openai`` SDK. ``server`` runs once on SQLite and once on Postgres (as a non-owner role under row-level security)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from live import Live, Process, catalog_config, start_fake_upstream, start_server
from services import PostgresServer


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    proc = start_fake_upstream(tmp_path_factory.mktemp("upstream"))
    try:
        yield proc
    finally:
        proc.stop()


def _pg_server(request: pytest.FixtureRequest) -> PostgresServer:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, upstream: Process, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    kw: dict[str, str] = {}
    if request.param == "postgres":
        db = _pg_server(request).create_database("api_suite")
        kw = {"database_url": db.app_url, "migrate_url": db.owner_url}
    proc = start_server(tmp, catalog_config(upstream.url), **kw)
    try:
        yield Live(proc.url, proc, request.param)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def sqlite_server(request: pytest.FixtureRequest, upstream: Process, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Live]:
    """One SQLite server for suites whose subject is not the database (models, streaming, errors)."""
    proc = start_server(tmp_path_factory.mktemp("server-models"), catalog_config(upstream.url))
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    counter = iter(range(1_000_000))

    def make(prefix: str) -> str:
        import uuid

        return f"{prefix}-{next(counter)}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
