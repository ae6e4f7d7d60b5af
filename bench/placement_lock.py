"""What the placement lock costs a content transaction (several replicas on Postgres).

Usage::

    python bench/placement_lock.py [--n 3000] [--out bench/results/placement_lock.json]

A throwaway Postgres (started here; the suite's tests/services.py), migrated, one tenant. Timed one by one
(``perf_counter_ns``), interleaved in rounds so that drift on a shared machine hits every variant alike: a tenant
transaction that runs one ``SELECT 1`` through

- ``one replica``: ``TenantRouter`` without coordination (the route from memory),
- ``several, home pool``: a coordinated router, the tenant in the home pool (the lock and the read of its row in the
  content's own transaction: two more statements),
- ``several, elsewhere``: a coordinated router whose tenant lives in another database (a silo or another location:
  the lock is held by a home transaction beside the content's, one more connection while it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
from services import start_postgres  # noqa: E402
from tenantlm.storage.sql.engine import Database  # noqa: E402
from tenantlm.storage.sql.migrate import migrate  # noqa: E402
from tenantlm.storage.sql.router import TenantRouter  # noqa: E402
from tenantlm.storage.sql.tables import tenants  # noqa: E402

TENANT = "ten_bench_lock"


class Fixed:
    """A resolver that always answers the same database (None: the home pool)."""

    def __init__(self, db: Database | None) -> None:
        self.db = db

    def resolve(self, tenant_id: str, tier: str, region: str | None) -> Database | None:
        return self.db


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(router: TenantRouter) -> float:
    start = time.perf_counter_ns()
    async with router.tenant_tx(tenant_id=TENANT) as conn:
        await conn.execute(sa.text("SELECT 1"))
    return (time.perf_counter_ns() - start) / 1000


async def measure(url: str, migrate_url: str, n: int) -> dict[str, Any]:
    await migrate(url=url, migrate_url=migrate_url)
    seed = Database.from_url(url)
    async with seed.tenant_tx(tenant_id=TENANT) as conn:
        await conn.execute(tenants.insert().values(id=TENANT, name=TENANT, status="active", plan="free",
                                                   region="local", metadata={}, settings={}, model_aliases={},
                                                   created_at=0.0, updated_at=0.0))
    other = Database.from_url(url)  # stands for a silo or another location
    variants = {"one replica": TenantRouter(Database.from_url(url).engine),
                "several, home pool": TenantRouter(Database.from_url(url).engine),
                "several, elsewhere": TenantRouter(Database.from_url(url).engine)}
    variants["several, home pool"].coordinate(Fixed(None))
    variants["several, elsewhere"].coordinate(Fixed(other))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for router in variants.values():  # warm the pools and prepared statements
        for _ in range(200):
            await one(router)
    rounds = 10
    for r in range(rounds):
        order = list(variants.items()) if r % 2 == 0 else list(reversed(variants.items()))
        for name, router in order:
            for _ in range(n // rounds):
                times[name].append(await one(router))
    for db in (seed, other, *variants.values()):
        await db.dispose()
    base = pct(times["one replica"], 0.5)
    return {name: {"n": len(t), "p50_us": round(pct(t, 0.5), 1), "p99_us": round(pct(t, 0.99), 1),
                   "p50_added_us": round(pct(t, 0.5) - base, 1)} for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/placement_lock.json"))
    args = ap.parse_args()
    pg = start_postgres()
    try:
        db = pg.create_database()
        figures = asyncio.run(measure(db.app_url, db.owner_url, args.n))
    finally:
        pg.stop()
    result = {"run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip(),
              "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
              "n": args.n, "variants": figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
