"""Start-up checks for ``tenantlm serve``: everything an operator can get wrong is found before the server creates,
migrates or writes anything, and reported as one line that names the problem and how to fix it.

Order: the settings (config file readable, valid YAML, valid values), the master key's format, the data dir and the
keyring dir (creatable and writable), the database URLs (well-formed, a supported driver; an existing SQLite file is
a database), the listening port (bound here and handed to the server, so nothing can take it in between), then the
services the server needs at start (Postgres reachable, its roles accepted and safe for row-level security, the
schema migratable; Redis reachable). Only after all of them pass does the server build its keys and database.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantlm.crypto.errors import MasterKeyError
from tenantlm.crypto.local import parse_master_key
from tenantlm.settings import Settings, load_settings
from tenantlm.storage.sql.migrate import UnsafeDatabaseRole, check_app_role, head_revision

DRIVERS = {"sqlite+aiosqlite": "sqlite+aiosqlite:///PATH", "postgresql+asyncpg": "postgresql+asyncpg://USER@HOST/DB"}
CONNECT_TIMEOUT_S = 5.0


class StartupError(Exception):
    """A start-up problem the operator can fix. The message is one line: what is wrong, and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# --------------------------------------------------------------------------------------------------- settings
def settings(config_file: Path | None, **overrides: Any) -> Settings:
    """``load_settings``, with every way it can fail turned into a StartupError."""
    config_file = config_file or _env_path("TENANTLM_CONFIG_FILE")
    where = f" in {config_file}" if config_file else ""
    if config_file is not None and not config_file.expanduser().is_file():
        raise StartupError(f"config file {config_file} does not exist or is not a file; check the path given to "
                           "--config (or TENANTLM_CONFIG_FILE)")
    try:
        return load_settings(config_file, **overrides)
    except ValidationError as exc:
        raise StartupError(f"bad configuration{where}: {_first_problem(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise StartupError(f"config file {config_file} is not valid YAML{at}: {problem}") from None
    except OSError as exc:
        raise StartupError(f"cannot read config file {exc.filename or config_file}: {exc.strerror or exc}; "
                           "check the path given to --config and its permissions") from None
    except ValueError as exc:
        raise StartupError(f"bad configuration: {exc}") from None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


# --------------------------------------------------------------------------------------------------- files
def check_files(s: Settings) -> None:
    """The master key's format, the data dir and the keyring dir: usable, without creating anything."""
    if s.master_key is not None:
        try:
            parse_master_key(s.master_key.get_secret_value(), source="TENANTLM_MASTER_KEY")
        except MasterKeyError as exc:
            raise StartupError(str(exc)) from None
    writable_dir(s.data_dir, what="data dir", fix="choose another with --data-dir (or TENANTLM_DATA_DIR)")
    if s.kek_provider == "local" and s.keyring_dir is not None:
        writable_dir(s.keyring_path, what="keyring dir", fix="set TENANTLM_KEYRING_DIR to a writable directory")


def writable_dir(path: Path, *, what: str, fix: str) -> None:
    """``path`` is a directory this process may write in, or can be created as one."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StartupError(f"{what} {path} cannot be created: {existing} is not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise StartupError(f"{what} {path} {verb} by this user (uid {os.geteuid()}); {fix}, or give this user "
                           f"write access to {existing}")


# --------------------------------------------------------------------------------------------------- database URLs
def check_database_urls(s: Settings) -> None:
    app_url = _parse_url(s.sql_url, "TENANTLM_DATABASE_URL")
    if s.database_migrate_url:
        migrate_url = _parse_url(s.database_migrate_url, "TENANTLM_DATABASE_MIGRATE_URL")
        if migrate_url.get_backend_name() != app_url.get_backend_name():
            raise StartupError("TENANTLM_DATABASE_MIGRATE_URL and TENANTLM_DATABASE_URL name different kinds of "
                               "database; both must point at the same Postgres database")
        if app_url.get_backend_name() == "postgresql" and migrate_url.username == app_url.username:
            raise StartupError(
                f"TENANTLM_DATABASE_URL and TENANTLM_DATABASE_MIGRATE_URL use the same role ({app_url.username}); "
                "the server's role must not own the tables (row-level security would not apply to it): serve "
                "as a plain role and migrate as the owner (see docs/operations.md)")
    if app_url.get_backend_name() == "sqlite":
        _check_sqlite(app_url)


def _parse_url(raw: str, name: str) -> URL:
    try:
        url = sa.engine.make_url(raw)
    except sa.exc.ArgumentError:
        raise StartupError(f"{name} is not a database URL; expected {' or '.join(DRIVERS.values())}") from None
    if url.drivername not in DRIVERS:
        raise StartupError(f"{name} uses the driver {url.drivername!r}, which the server does not support; "
                           f"use {' or '.join(DRIVERS.values())}")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise StartupError(f"{name} must name a SQLite file (sqlite+aiosqlite:///PATH); an in-memory database "
                           "would lose everything at exit")
    if url.get_backend_name() == "postgresql" and not url.database:
        raise StartupError(f"{name} names no database; expected {DRIVERS['postgresql+asyncpg']}")
    return url


def _check_sqlite(url: URL) -> None:
    path = Path(str(url.database)).expanduser().resolve()
    writable_dir(path.parent, what="database directory",
                 fix="choose another with --data-dir (or point TENANTLM_DATABASE_URL elsewhere)")
    if not path.exists():
        return
    if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(f"database file {path} is not a file this user can read and write; fix its permissions "
                           "or choose another data dir with --data-dir")
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"database file {path} cannot be opened as SQLite ({exc}); restore it from a backup or "
                           "choose another data dir with --data-dir") from None


# --------------------------------------------------------------------------------------------------- the port
def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (one per address the host resolves to), for the server to serve on."""
    if not 0 <= port <= 65535:
        raise StartupError(f"port {port} is out of range; choose one from 1 to 65535 with --port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve the host {host!r} ({exc.strerror}); give an address of this machine "
                           "with --host, e.g. 127.0.0.1 or 0.0.0.0") from None
    addresses = list(dict.fromkeys((family, sockaddr[:2]) for family, _, _, _, sockaddr in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sockets.append(socket.create_server(address, family=family))
    except OSError as exc:
        close(sockets)
        raise StartupError(_bind_problem(exc, host, port)) from None
    return sockets


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use by another process; stop it, or choose another port with "
                "--port (or TENANTLM_PORT)")
    if exc.errno == errno.EACCES:
        return (f"no permission to listen on {where} (ports below 1024 need extra privileges); choose --port 1024 "
                "or above")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose --host 127.0.0.1 (local) or 0.0.0.0 (all)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# --------------------------------------------------------------------------------------------------- services
async def check_services(s: Settings) -> None:
    """Postgres and Redis answer, with roles and a schema the server can start with. Reads only."""
    if s.is_postgres:
        await _check_postgres(s)
    if s.redis_url is not None:
        await _check_redis(s.redis_url.get_secret_value())


async def _check_postgres(s: Settings) -> None:
    app = sa.engine.make_url(s.sql_url)
    engine = _probe_engine(app)
    try:
        try:
            await check_app_role(engine)
            current = await _schema_revision(engine) if not s.database_migrate_url else None
        except UnsafeDatabaseRole as exc:
            raise StartupError(str(exc)) from None
        except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
            raise StartupError(_connect_problem(exc, app, "TENANTLM_DATABASE_URL")) from None
    finally:
        await engine.dispose()
    if s.database_migrate_url:
        await _check_connects(sa.engine.make_url(s.database_migrate_url), "TENANTLM_DATABASE_MIGRATE_URL")
    elif current != head_revision():
        raise StartupError(
            f"the database schema is at {current or 'nothing (not migrated)'}, not {head_revision()}, and no "
            "migration role is configured; set TENANTLM_DATABASE_MIGRATE_URL to the owner role so the server can "
            "migrate it (see docs/operations.md)")


def _probe_engine(url: URL) -> Any:
    return create_async_engine(url, poolclass=NullPool, connect_args={"timeout": CONNECT_TIMEOUT_S})


async def _schema_revision(engine: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        revision: str | None = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())
    return revision


async def _check_connects(url: URL, name: str) -> None:
    engine = _probe_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
        raise StartupError(_connect_problem(exc, url, name)) from None
    finally:
        await engine.dispose()


def _connect_problem(exc: BaseException, url: URL, name: str) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    detail = text.splitlines()[0] if text else type(cause).__name__
    unreachable = isinstance(cause, OSError | TimeoutError)
    if isinstance(cause, TimeoutError):
        detail = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    target = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
    fix = f"start Postgres there or fix {name}" if unreachable else f"fix {name}, or create the role or database"
    return f"cannot connect to Postgres at {target} as {url.username or 'the default role'} ({detail}); {fix}"


async def _check_redis(raw_url: str) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    parts = urlsplit(raw_url)
    target = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    try:
        client = Redis.from_url(raw_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    except ValueError:
        raise StartupError("TENANTLM_REDIS_URL is not a Redis URL; expected redis://HOST:PORT/DB") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise StartupError(f"cannot reach Redis at {target} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                           "start Redis or fix TENANTLM_REDIS_URL") from None
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------------- all of them
def run(s: Settings) -> list[socket.socket]:
    """Every check, in order; returns the bound listening sockets (the caller closes them if it does not serve)."""
    check_files(s)
    check_database_urls(s)
    sockets = bind(s.host, s.port)
    try:
        asyncio.run(check_services(s))
    except BaseException:
        close(sockets)
        raise
    return sockets
