"""``tenantlm serve`` refuses a bad start with one line on stderr, before it creates, migrates or writes anything."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from live import free_port, run_cli
from services import PostgresDatabase

FAKE_CATALOG = {"providers": [{"name": "fake", "type": "fake"}], "models": [{"name": "m", "provider": "fake"}]}


def _config(tmp_path: Path, content: object = None, text: str | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(content if content is not None else FAKE_CATALOG))
    return path


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None, data: Path | None = None,
           config: Path | None = None) -> subprocess.CompletedProcess[str]:
    data = data if data is not None else tmp_path / "data"
    config = config if config is not None else _config(tmp_path)
    base = ["serve", "--port", str(free_port()), "--data-dir", str(data), "--config", str(config)]
    return run_cli(*base, *args, env={"TENANTLM_WARMUP": "false", **(env or {})}, cwd=tmp_path)


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("tenantlm: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def test_a_taken_port_is_refused_before_the_database_is_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--data-dir", str(data), "--config", str(_config(tmp_path)),
                         env={"TENANTLM_WARMUP": "false"}, cwd=tmp_path)
    _one_line_error(result, f"port {port}", "already in use", "--port")
    assert not (data / "tenantlm.db").exists()
    assert not data.exists()  # no database, no master key, no signing key: nothing was written


@pytest.mark.parametrize("where", ["inside-a-file/data", "a-file"])
def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / where.split("/")[0]).write_text("not a directory")
    data = tmp_path / where
    line = _one_line_error(_serve(tmp_path, data=data), f"data dir {data}", "is not a directory", "--data-dir")
    assert "--data-dir" in line


@pytest.mark.parametrize("text, needles", [
    ("models: [\n", ("is not valid YAML", "line 2")),
    (yaml.safe_dump({**FAKE_CATALOG, "models": [{"name": "m", "provider": "nope"}]}),
     ("bad configuration in", "unknown provider 'nope'")),
    (yaml.safe_dump({**FAKE_CATALOG, "max_body_bytes": "lots"}), ("bad configuration in", "max_body_bytes:")),
    ("- just\n- a list\n", ("must hold a mapping",)),
])
def test_a_bad_config_file_is_one_line(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    data = tmp_path / "data"
    _one_line_error(_serve(tmp_path, config=_config(tmp_path, text=text), data=data), *needles)
    assert not data.exists()


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    _one_line_error(_serve(tmp_path, config=tmp_path / "nowhere.yaml"), "nowhere.yaml", "does not exist", "--config")


@pytest.mark.parametrize("url, needles", [
    ("postgres//somewhere", ("TENANTLM_DATABASE_URL is not a database URL",)),
    ("postgresql+psycopg2://app:hunter2@db.example/tenantlm", ("driver 'postgresql+psycopg2'", "postgresql+asyncpg")),
    ("sqlite+aiosqlite://", ("must name a SQLite file",)),
])
def test_a_malformed_database_url_is_one_line_without_its_password(tmp_path: Path, url: str,
                                                                   needles: tuple[str, ...]) -> None:
    line = _one_line_error(_serve(tmp_path, env={"TENANTLM_DATABASE_URL": url}), *needles)
    assert "hunter2" not in line


def test_a_sqlite_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "tenantlm.db").write_bytes(b"this is not sqlite" * 100)
    _one_line_error(_serve(tmp_path, data=data), "tenantlm.db", "cannot be opened as SQLite")


def test_a_bad_master_key_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _one_line_error(_serve(tmp_path, data=data, env={"TENANTLM_MASTER_KEY": "too-short"}), "TENANTLM_MASTER_KEY")
    assert not data.exists()


def test_postgres_unreachable_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://tenantlm_app:s3cret@127.0.0.1:{free_port()}/tenantlm"
    line = _one_line_error(_serve(tmp_path, env={"TENANTLM_DATABASE_URL": url}),
                           "cannot connect to Postgres at 127.0.0.1", "TENANTLM_DATABASE_URL")
    assert "s3cret" not in line


def test_redis_unreachable_is_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    _one_line_error(_serve(tmp_path, env={"TENANTLM_REDIS_URL": url}), "cannot reach Redis", "TENANTLM_REDIS_URL")


def test_postgres_without_a_migration_role_is_one_line(tmp_path: Path, pg_database: PostgresDatabase) -> None:
    _one_line_error(_serve(tmp_path, env={"TENANTLM_DATABASE_URL": pg_database.app_url}),
                    "not migrated", "TENANTLM_DATABASE_MIGRATE_URL")
    assert "alembic_version" not in pg_database.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")


def test_a_missing_migration_role_is_one_line(tmp_path: Path, pg_database: PostgresDatabase) -> None:
    missing = pg_database.owner_url.replace("tenantlm_owner", "nosuch_owner")
    _one_line_error(_serve(tmp_path, env={"TENANTLM_DATABASE_URL": pg_database.app_url,
                                          "TENANTLM_DATABASE_MIGRATE_URL": missing}),
                    "as nosuch_owner", "TENANTLM_DATABASE_MIGRATE_URL")


@pytest.mark.parametrize("app_role, needles", [
    ("superuser", ("superuser or has BYPASSRLS",)),
    ("owner", ("use the same role", "tenantlm_owner")),
])
def test_an_unsafe_server_role_is_refused_before_migrating(tmp_path: Path, pg_database: PostgresDatabase,
                                                           app_role: str, needles: tuple[str, ...]) -> None:
    app_url = pg_database.superuser_url if app_role == "superuser" else pg_database.owner_url
    _one_line_error(_serve(tmp_path, env={"TENANTLM_DATABASE_URL": app_url,
                                          "TENANTLM_DATABASE_MIGRATE_URL": pg_database.owner_url}), *needles)
    assert "alembic_version" not in pg_database.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")


def test_help_names_the_default_server_url_and_how_to_change_it() -> None:
    top = run_cli("--help", env={"COLUMNS": "200"})
    assert top.returncode == 0
    assert "http://127.0.0.1:8080" in top.stdout and "--url" in top.stdout and "TENANTLM_URL" in top.stdout
    sub = run_cli("tenants", "list", "--help", env={"COLUMNS": "200"})
    assert "TENANTLM_URL" in sub.stdout and "http://127.0.0.1:8080" in sub.stdout
