"""Throwaway Postgres and Redis servers for the test suite.

Each server listens on 127.0.0.1 on a free port, keeps its data in a temporary directory and is stopped by PID at the
end (explicitly by the fixtures, and by an atexit fallback should pytest die before its teardown runs).

This module imports nothing from `tenantlm`, so it works before any app code exists. The pytest fixtures that use it
live in tests/conftest.py.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
DATABASE = "tenantlm"
SUPERUSER = "postgres"
OWNER_ROLE = "tenantlm_owner"
APP_ROLE = "tenantlm_app"


class ServiceUnavailable(RuntimeError):
    """A server binary is not installed on this machine (the fixture skips, or fails in CI)."""


def services_required() -> bool:
    """True in CI (CI=true) or with TENANTLM_REQUIRE_SERVICES=1: a missing server is then a failure, not a skip."""
    truthy = {"1", "true", "yes", "on"}
    return (
        os.environ.get("CI", "").strip().lower() in truthy
        or os.environ.get("TENANTLM_REQUIRE_SERVICES", "").strip().lower() in truthy
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- process bookkeeping
# PID -> (expected substring of its command line, temp dir); the atexit fallback kills only processes that still
# match, then removes their temp dirs.
_LIVE: dict[int, tuple[str, Path]] = {}


def _pid_matches(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return name in cmdline


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _kill_pid(pid: int, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Sends `sig` to pid (if it is still the process we started), waits, then SIGKILLs it."""
    if not _pid_matches(pid, name):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    if _pid_matches(pid, name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for pid, (name, base_dir) in list(_LIVE.items()):
        # SIGQUIT is Postgres' immediate shutdown; redis-server shuts down on SIGTERM
        _kill_pid(pid, name, signal.SIGQUIT if name == "postgres" else signal.SIGTERM, timeout=5.0)
        _LIVE.pop(pid, None)
        shutil.rmtree(base_dir, ignore_errors=True)


def _run(cmd: list[str], *, input_: bytes | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, input=input_, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"stdout: {proc.stdout.decode(errors='replace')[-2000:]}\n"
            f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return proc


# ---------------------------------------------------------------------------------------------- Postgres
def find_pg_bindir() -> Path:
    """The server binaries: $TENANTLM_PGBIN, else the newest /usr/lib/postgresql/N/bin, else pg_ctl on PATH."""
    env = os.environ.get("TENANTLM_PGBIN")
    candidates: list[Path] = [Path(env)] if env else []
    versioned = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    versioned.sort(key=lambda p: int(m.group(1)) if (m := re.search(r"/(\d+)/bin/", p)) else 0, reverse=True)
    candidates += [Path(p).parent for p in versioned]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_dump")):
            return bindir
    raise ServiceUnavailable(
        "PostgreSQL server binaries not found (initdb/pg_ctl/postgres/psql/pg_dump in /usr/lib/postgresql/*/bin or "
        "$TENANTLM_PGBIN); run scripts/install (apt-get install postgresql)"
    )


def pg_url(role: str, port: int, database: str, driver: str = "asyncpg", host: str = HOST) -> str:
    """A SQLAlchemy URL (driver='asyncpg') or, with driver='', a plain libpq/asyncpg DSN."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{role}@{host}:{port}/{database}"


@dataclass(frozen=True)
class PostgresDatabase:
    """One database on the throwaway server, with SQLAlchemy asyncpg URLs for its three roles.

    superuser_url: `postgres` (superuser); owner_url: tenantlm_owner (owns the database and schema public; the one
    that runs migrations); app_url: tenantlm_app (what the server runs as: NOSUPERUSER NOBYPASSRLS, owns nothing).
    """

    host: str
    port: int
    database: str
    superuser_url: str
    owner_url: str
    app_url: str
    bindir: Path = field(repr=False)

    @classmethod
    def on(cls, host: str, port: int, database: str, bindir: Path) -> PostgresDatabase:
        return cls(
            host=host,
            port=port,
            database=database,
            superuser_url=pg_url(SUPERUSER, port, database, host=host),
            owner_url=pg_url(OWNER_ROLE, port, database, host=host),
            app_url=pg_url(APP_ROLE, port, database, host=host),
            bindir=bindir,
        )

    def dsn(self, role: str = APP_ROLE, database: str | None = None) -> str:
        """A plain `postgresql://` DSN (for asyncpg.connect, psql, ...)."""
        return pg_url(role, self.port, database or self.database, driver="", host=self.host)

    def psql(self, sql: str, *, user: str = SUPERUSER, database: str | None = None) -> str:
        """Runs SQL through psql (ON_ERROR_STOP, unaligned tuples only, `|` separator) and returns its stdout."""
        cmd = [
            str(self.bindir / "psql"),
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", user, "-d", database or self.database,
        ]  # fmt: skip
        return _run(cmd, input_=sql.encode()).stdout.decode().strip()

    def pg_dump(self, *args: str, database: str | None = None) -> bytes:
        """`pg_dump` of the database, run as the superuser (plain SQL unless args say otherwise)."""
        cmd = [
            str(self.bindir / "pg_dump"),
            "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "--no-password",
            *args, database or self.database,
        ]  # fmt: skip
        return _run(cmd, timeout=120).stdout


@dataclass(frozen=True)
class PostgresServer(PostgresDatabase):
    """The session's server; its own URLs point at the `tenantlm` database."""

    pid: int = 0
    base_dir: Path = field(default=Path(), repr=False)

    def create_database(self, name: str | None = None) -> PostgresDatabase:
        """A fresh, empty database owned by tenantlm_owner, with CONNECT (and TEMP) for tenantlm_app."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"bad database name {name!r}")
        self.psql(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}", database="postgres")
        self.psql(_DATABASE_GRANTS.format(db=name), database=name)
        return PostgresDatabase.on(self.host, self.port, name, self.bindir)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", database="postgres")

    def stop(self) -> None:
        stop_postgres(self)


_ROLES_SQL = f"""
CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
"""
_DATABASE_GRANTS = f"""
ALTER SCHEMA public OWNER TO {OWNER_ROLE};
REVOKE ALL ON DATABASE {{db}} FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {{db}} TO {APP_ROLE};
GRANT USAGE ON SCHEMA public TO {APP_ROLE};
"""


def start_postgres(*, attempts: int = 3) -> PostgresServer:
    """initdb + pg_ctl start of a throwaway cluster (trust auth, fsync off) with the tenantlm database and roles."""
    bindir = find_pg_bindir()
    as_postgres: list[str] = []
    uid = gid = -1
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the `postgres` OS user
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as e:
            raise ServiceUnavailable("running as root but there is no `postgres` OS user to run the server") from e
        uid, gid = pw.pw_uid, pw.pw_gid
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        as_postgres = [runuser, "-u", "postgres", "--"]

    base = Path(tempfile.mkdtemp(prefix="tenantlm-pg-"))
    if uid >= 0:
        os.chown(base, uid, gid)  # the socket dir must belong to postgres ("could not create lock file" otherwise)
    data, log = base / "data", base / "postgres.log"
    try:
        _run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
              "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)  # fmt: skip
        last_error: Exception | None = None
        for _ in range(attempts):  # a free port can be taken between free_port() and the bind: retry
            port = free_port()
            opts = (
                f"-k {base} -h {HOST} -p {port} -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                _run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log),
                      "-w", "-t", "60", "start"], timeout=90)  # fmt: skip
            except RuntimeError as e:
                last_error = e
                continue
            pid = int((data / "postmaster.pid").read_text().split()[0])
            _LIVE[pid] = ("postgres", base)
            server = PostgresServer(**vars(PostgresDatabase.on(HOST, port, DATABASE, bindir)), pid=pid, base_dir=base)
            try:
                server.psql(_ROLES_SQL, database="postgres")
                server.psql(f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}", database="postgres")
                server.psql(_DATABASE_GRANTS.format(db=DATABASE))
            except BaseException:
                stop_postgres(server)
                raise
            return server
        log_tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"Postgres did not start after {attempts} tries: {last_error}\nlog: {log_tail}")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def stop_postgres(server: PostgresServer) -> None:
    """Fast shutdown via pg_ctl, then by PID (SIGQUIT, SIGKILL) if it is still there; removes the data dir."""
    try:
        if _pid_matches(server.pid, "postgres"):
            runuser = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
            subprocess.run(
                [*(runuser if os.geteuid() == 0 else []), str(server.bindir / "pg_ctl"),
                 "-D", str(server.base_dir / "data"), "-m", "fast", "-w", "-t", "20", "stop"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
            _kill_pid(server.pid, "postgres", signal.SIGQUIT, timeout=10.0)
    finally:
        _LIVE.pop(server.pid, None)
        shutil.rmtree(server.base_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- Redis
def find_redis_server() -> str:
    for cand in (os.environ.get("TENANTLM_REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server",
                 "/usr/sbin/redis-server"):  # fmt: skip
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ServiceUnavailable("redis-server not found; run scripts/install (apt-get install redis-server)")


def redis_command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Sends one RESP command over a raw socket and returns the first reply line (no client library needed)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf.strip()


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    url: str
    pid: int
    base_dir: Path = field(repr=False)

    def url_for(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def command(self, *args: str) -> bytes:
        return redis_command(self.host, self.port, *args)

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def stop(self) -> None:
        stop_redis(self)


def start_redis(*, attempts: int = 3) -> RedisServer:
    binary = find_redis_server()
    base = Path(tempfile.mkdtemp(prefix="tenantlm-redis-"))
    pidfile, log = base / "redis.pid", base / "redis.log"
    try:
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            proc = subprocess.run(
                [binary, "--port", str(port), "--bind", HOST, "--daemonize", "yes", "--dir", str(base),
                 "--pidfile", str(pidfile), "--logfile", str(log), "--save", "", "--appendonly", "no"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if pidfile.exists() and redis_command(HOST, port, "PING") == b"+PONG":
                        pid = int(pidfile.read_text().strip())
                        _LIVE[pid] = ("redis-server", base)
                        return RedisServer(HOST, port, f"redis://{HOST}:{port}/0", pid, base)
                time.sleep(0.05)
            last_error = (proc.stderr + proc.stdout).decode(errors="replace")
            if pidfile.exists():  # started but never answered: kill it before trying another port
                with contextlib.suppress(ValueError):
                    _kill_pid(int(pidfile.read_text().strip()), "redis-server")
                pidfile.unlink(missing_ok=True)
        log_tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start after {attempts} tries: {last_error}\nlog: {log_tail}")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def stop_redis(server: RedisServer) -> None:
    try:
        _kill_pid(server.pid, "redis-server", signal.SIGTERM, timeout=10.0)
    finally:
        _LIVE.pop(server.pid, None)
        shutil.rmtree(server.base_dir, ignore_errors=True)
