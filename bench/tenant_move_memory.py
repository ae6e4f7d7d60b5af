"""Tenant move memory: peak memory and time of the tier move's copy (``tenant_copy.sync``) and comparison
(``tenant_copy.verify``) for a tenant with hundreds of MiB of file parts, this version against an earlier one.

Usage::

    python bench/tenant_move_memory.py [--mib 200] [--part-kib 1024] [--rows 10000] [--before-rev 37f5941]
                                       [--repeat 3] [--backend sqlite|postgres]
                                       [--out bench/results/tenant_move_memory.json]

Two databases on the chosen backend (SQLite files, or two databases of a throwaway Postgres server started as the
tests start theirs), migrated. The source holds one tenant with ``--mib`` MiB of file parts (``--part-kib`` each, one
file per part, random bytes as sealed parts are) and ``--rows`` request-log rows. For each implementation (``before``:
``src/tenantlm/storage/sql/tenant_copy.py`` at ``--before-rev``; ``after``: the working tree's) and each step, one
fresh process runs the step once and reports its seconds and the growth of its peak RSS over its RSS before the step
(``ru_maxrss``), ``--repeat`` times (the two implementations in turn; reported: the median seconds and the largest
growth); one more fresh process runs it under ``tracemalloc`` and reports the peak of Python's own allocations (its
seconds are not reported: tracing slows it). Steps: ``copy`` (sync into the empty target: the bulk
copy), ``catch_up`` (sync again, nothing changed: what the fence pays for reading both sides) and ``verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tenantlm.storage.sql import tenant_copy
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate
from tenantlm.storage.sql.tables import file_parts, files, request_log, tenants

ROOT = Path(__file__).resolve().parent.parent
TENANT = "ten_bench"
STEPS = ("copy", "catch_up", "verify")
MODULE = "src/tenantlm/storage/sql/tenant_copy.py"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def implementation(impl: str, before_rev: str, tmp: Path) -> ModuleType:
    if impl == "after":
        return tenant_copy
    path = tmp / "tenant_copy_before.py"
    path.write_bytes(subprocess.run(["git", "show", f"{before_rev}:{MODULE}"], cwd=ROOT, check=True,
                                    capture_output=True).stdout)
    spec = importlib.util.spec_from_file_location("tenant_copy_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def run_step(copy: ModuleType, step: str, source: Database, target: Database) -> Any:
    if step == "verify":
        return await copy.verify(source, target, TENANT)
    return await copy.sync(source, target, TENANT)


async def child(args: argparse.Namespace) -> dict[str, Any]:
    """One step of one implementation, in this fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = implementation(args.impl, args.before_rev, Path(tmp))
        source, target = Database.from_url(args.source), Database.from_url(args.target)
        try:
            async with source.platform_tx() as conn:  # connections open, dialects loaded: not part of the step
                await conn.execute(tenants.select().limit(1))
            async with target.platform_tx() as conn:
                await conn.execute(tenants.select().limit(1))
            rss_before = rss_mib()
            if args.tracemalloc:
                tracemalloc.start()
            t0 = time.perf_counter()
            result = await run_step(copy, args.step, source, target)
            seconds = time.perf_counter() - t0
            out: dict[str, Any] = {"result": result}
            if args.tracemalloc:
                out["python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
                tracemalloc.stop()
            else:
                out["seconds"] = round(seconds, 2)
                out["rss_growth_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before, 1)
            return out
        finally:
            await source.dispose()
            await target.dispose()


def spawn(args: argparse.Namespace, impl: str, step: str, urls: tuple[str, str], traced: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--step", step, "--source", urls[0],
           "--target", urls[1], "--before-rev", args.before_rev, *(["--tracemalloc"] if traced else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{impl} {step} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def prepare(urls: tuple[str, str], migrate_urls: tuple[str | None, str | None], args: argparse.Namespace) -> int:
    """Migrate both databases, give both the tenant, seed the source. Returns the source's content rows."""
    for url, migrate_url in zip(urls, migrate_urls, strict=True):
        await migrate(url=url, migrate_url=migrate_url)
        db = Database.from_url(url)
        async with db.platform_tx() as conn:
            await conn.execute(tenants.insert().values(
                id=TENANT, name=TENANT, status="active", plan="free", region="local", metadata={}, settings={},
                allowed_models=None, model_aliases={}, created_at=0.0, updated_at=0.0, billing={}))
        await db.dispose()
    source = Database.from_url(urls[0])
    part = args.part_kib << 10
    parts = (args.mib << 20) // part
    for start in range(0, parts, 16):
        async with source.tenant_tx(tenant_id=TENANT) as conn:
            ids = [f"file-{i:06}" for i in range(start, min(parts, start + 16))]
            await conn.execute(files.insert(), [
                {"tenant_id": TENANT, "id": fid, "purpose": "assistants", "bytes": part, "parts": 1,
                 "status": "uploaded", "created_at": 1.0, "expires_at": None, "sealed_name": os.urandom(40)}
                for fid in ids])
            await conn.execute(file_parts.insert(), [
                {"tenant_id": TENANT, "file_id": fid, "part": 0, "sealed": os.urandom(part)} for fid in ids])
    async with source.tenant_tx(tenant_id=TENANT) as conn:
        await conn.execute(request_log.insert(), [
            {"tenant_id": TENANT, "id": f"req-{i:07}", "created_at": float(i), "expires_at": 1e12, "key_id": None,
             "model": "m", "endpoint": "chat", "status": 200, "sealed": os.urandom(300)} for i in range(args.rows)])
    rows = await tenant_copy.count_rows(source, TENANT)
    await source.dispose()
    return rows


async def empty_target(url: str) -> None:
    db = Database.from_url(url)
    await tenant_copy.delete_tenant_rows(db, TENANT)
    await db.dispose()


@contextmanager
def databases(backend: str, tmp: Path) -> Iterator[tuple[tuple[str, str], tuple[str | None, str | None]]]:
    if backend == "sqlite":
        yield ((f"sqlite+aiosqlite:///{tmp / 'source.db'}", f"sqlite+aiosqlite:///{tmp / 'target.db'}"),
               (None, None))
        return
    from services import start_postgres
    server = start_postgres()
    try:
        a, b = server.create_database(), server.create_database()
        yield (a.app_url, b.app_url), (a.owner_url, b.owner_url)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--part-kib", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--before-rev", default="37f5941")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tenant_move_memory.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=("before", "after"), help=argparse.SUPPRESS)
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir, databases(args.backend, Path(tmp_dir)) as (urls, migrate_urls):
        rows = asyncio.run(prepare(urls, migrate_urls, args))
        print(f"seeded {rows} rows ({args.mib} MiB of file parts)", flush=True)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rep in range(args.repeat):  # the two implementations in turn, so that both see the machine's load
            for impl in ("before", "after"):
                asyncio.run(empty_target(urls[1]))
                for step in STEPS:
                    got = spawn(args, impl, step, urls, traced=False)
                    runs.setdefault((impl, step), []).append(got)
                    print(rep, impl, step, got, flush=True)
        for impl in ("before", "after"):
            asyncio.run(empty_target(urls[1]))
            for step in STEPS:
                traced = spawn(args, impl, step, urls, traced=True)
                print(impl, step, "traced", traced, flush=True)
                timed = runs[(impl, step)]
                results.setdefault(impl, {})[step] = {
                    "result": traced["result"],
                    "seconds_median": round(statistics.median(r["seconds"] for r in timed), 2),
                    "seconds": [r["seconds"] for r in timed],
                    "rss_growth_mib_max": max(r["rss_growth_mib"] for r in timed),
                    "python_peak_mib": traced["python_peak_mib"]}
    result = {
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "args": {k: str(v) for k, v in vars(args).items() if k in ("mib", "part_kib", "rows", "before_rev",
                                                                   "backend", "repeat")},
        "content_rows": rows, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
