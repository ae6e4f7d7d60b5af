"""``tenantlm audit verify``: exit 0 when intact, 1 when tampered (the first bad entry is named), 2 when it cannot
check. Prints one line, or JSON with ``--json``.

- no option: the platform chain, its signed checkpoints and every tenant chain, read from the database;
- ``--tenant ID``: that tenant's chain only, read from the database in the tenant's scope (no signing key needed);
- ``--export FILE``: a tenant's exported JSON lines, alone (no database, no key): what a tenant runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa

from tenantlm.audit.signer import load_public_keys
from tenantlm.audit.verify import VerifyReport, verify, verify_tenant, verify_tenant_export
from tenantlm.storage.sql.engine import Database


def run_verify_cli(*, database_url: str, data_dir: Path, as_json: bool, tenant_id: str | None = None) -> int:
    """Verify the stored log: the whole platform log, or with ``tenant_id`` that tenant's chain only."""
    keys = load_public_keys(data_dir) if data_dir.is_dir() else {}
    if not keys and tenant_id is None:
        return _setup_error(f"no audit public key (audit_signing.pub) in {data_dir}", as_json)
    sqlite_file = _sqlite_path(database_url)
    if sqlite_file is not None and not sqlite_file.is_file():
        return _setup_error(f"no database at {sqlite_file}", as_json)

    async def check(db: Database) -> VerifyReport:
        return await (verify(db, keys) if tenant_id is None else verify_tenant(db, tenant_id=tenant_id))

    try:
        report = asyncio.run(_with_database(database_url, check))
    except Exception as exc:
        return _setup_error(f"cannot read the audit log: {exc.__class__.__name__}: {_first_line(exc)}", as_json)
    return _print(report, as_json)


def run_verify_export_cli(*, path: Path, as_json: bool) -> int:
    """Verify a tenant's audit export file (JSON lines) without any access to the server."""
    try:
        with path.open("rb") as f:
            report = asyncio.run(verify_tenant_export(f))
    except OSError as exc:
        return _setup_error(f"cannot read {path}: {exc.strerror or exc}", as_json)
    return _print(report, as_json)


async def _with_database(url: str, check: Callable[[Database], Awaitable[VerifyReport]]) -> VerifyReport:
    db = Database.from_url(url)
    try:
        return await check(db)
    finally:
        await db.dispose()


def _print(report: VerifyReport, as_json: bool) -> int:
    sys.stdout.write((json.dumps(report.to_dict(), sort_keys=True) if as_json else report.line()) + "\n")
    return 0 if report.ok else 1


def _sqlite_path(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _setup_error(message: str, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(json.dumps({"ok": None, "error": message}) + "\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    return 2
