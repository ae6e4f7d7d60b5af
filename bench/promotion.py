"""Promotion figure: a tenant with ~10,000 content rows moved from the pool to its own silo database and back, online,
under steady load.

Usage::

    python bench/promotion.py [--rows 10000] [--workers 4] [--window-s 5] [--out bench/results/promotion.json]
    python bench/promotion.py --replicas 2 --out bench/results/promotion_replicas.json

With ``--replicas N`` (N > 1) the servers are N replicas on a throwaway Postgres and Redis (started here): the
moving tenant's load threads are spread over the replicas, the bystander's too, and replica 0 runs the moves (the
others learn them through the tenant's placement lock).

A real ``tenantlm serve`` on SQLite (fake chat model, no upstream). The moving tenant has its request log on; it is
seeded through the API with chat completions (one request-log row each) and small file uploads (a file row and a
part row each) until it holds ``--rows`` content rows. Then ``--workers`` client threads of the official ``openai``
SDK (``max_retries=0``: a failure is a failure) send it chat completions, uploads and listings in a closed loop, and
one more thread does the same for a bystander tenant that stays in the pool. Windows: ``--window-s`` of load before
the move, the promotion (POST /admin/v1/tenants/{id}/tier {"tier": "silo"}, polled until done), ``--window-s`` on the
silo, the demotion back to the pool. Reported per window: requests served and failed, p50/p99 latency; per move:
seconds from the POST to done, rows, how long the fence held the tenant's new transactions.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from live import Live, Process, catalog_config, start_server
from services import start_postgres, start_redis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class Recorder:
    window: str = "warmup"
    samples: list[tuple[str, str, float, bool]] = field(default_factory=list)  # (window, who, ms, ok)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def add(self, who: str, ms: float, ok: bool, error: str | None) -> None:
        with self.lock:
            self.samples.append((self.window, who, ms, ok))
            if error is not None:
                self.errors.append(error)


def worker(sdk: openai.OpenAI, who: str, rec: Recorder, seed: int) -> None:
    n = seed
    while not rec.stop.is_set():
        n += 1
        start = time.perf_counter()
        error = None
        try:
            if n % 4 == 0:
                sdk.files.create(file=(f"f{n}.txt", f"load {n}".encode()), purpose="assistants")
            elif n % 4 == 1:
                sdk.files.list(limit=20)
            else:
                sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"hi {n}"}])
        except Exception as exc:  # counted, never retried
            error = f"{type(exc).__name__}: {exc}"
        rec.add(who, (time.perf_counter() - start) * 1000, error is None, error)


def seed(live: Live, key: str, rows: int, admin_key_headers: dict[str, str]) -> int:
    """Chat completions (1 request-log row each) and uploads (2 rows each) until ~``rows`` content rows."""
    sdk = live.sdk(key, max_retries=2)
    uploads = rows // 10
    chats = rows - 2 * uploads

    def chat(i: int) -> None:
        sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"seed {i}"}])

    def upload(i: int) -> None:
        sdk.files.create(file=(f"seed{i}.txt", f"seed file {i}".encode()), purpose="assistants")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(chat, range(chats)))
        list(pool.map(upload, range(uploads)))
    return chats + 2 * uploads


def move(live: Live, tenant_id: str, tier: str) -> dict[str, Any]:
    with live.admin() as c:
        start = time.perf_counter()
        body = c.post(f"/admin/v1/tenants/{tenant_id}/tier", json={"tier": tier}).json()
        while body["tier_move"]["phase"] not in ("done", "failed"):
            time.sleep(0.02)
            body = c.get(f"/admin/v1/tenants/{tenant_id}").json()
        seconds = time.perf_counter() - start
    return {"tier": body["tier"], "seconds": round(seconds, 3), **body["tier_move"]}


def summary(rec: Recorder, window: str, who: str) -> dict[str, Any]:
    mine = [(ms, ok) for w, x, ms, ok in rec.samples if w == window and x == who]
    lat = [ms for ms, ok in mine if ok]
    return {"served": len(lat), "failed": sum(1 for _, ok in mine if not ok),
            "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2), "max_ms": round(max(lat or [0]), 2)}


class Servers:
    """One ``tenantlm serve`` on SQLite, or N replicas on a throwaway Postgres and Redis."""

    def __init__(self, tmp: Path, replicas: int) -> None:
        self.tmp, self.replicas = tmp, replicas
        self.procs: list[Process] = []
        self.stops: list[Any] = []

    def __enter__(self) -> list[Live]:
        config = catalog_config(None, local=False)
        if self.replicas <= 1:
            self.procs.append(start_server(self.tmp, config, warmup=False, data_dir=self.tmp / "data"))
            return [Live(self.procs[0].url, self.procs[0], "sqlite")]
        pg, redis = start_postgres(), start_redis()
        self.stops += [pg.stop, redis.stop]
        db = pg.create_database()
        config.env.update({"TENANTLM_REDIS_URL": redis.url_for(0), "TENANTLM_KEYRING_DIR": str(self.tmp / "keyring"),
                           "TENANTLM_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()})
        for i in range(self.replicas):
            (self.tmp / f"r{i}").mkdir()
            self.procs.append(start_server(self.tmp / f"r{i}", config, database_url=db.app_url,
                                           migrate_url=db.owner_url, warmup=False,
                                           data_dir=self.tmp / f"r{i}" / "data"))
        return [Live(p.url, p, "postgres") for p in self.procs]

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.stop()
        for stop in self.stops:
            stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/promotion.json"))
    ap.add_argument("--replicas", type=int, default=1, help="N > 1: N replicas on Postgres and Redis")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir, Servers(Path(tmp_dir), args.replicas) as lives:
        live = lives[0]
        mover = live.new_tenant(f"mover-{uuid.uuid4().hex[:6]}")
        other = live.new_tenant(f"bystander-{uuid.uuid4().hex[:6]}")
        with live.admin() as c:
            for t in (mover, other):
                c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": 7}})
        t0 = time.perf_counter()
        seeded = seed(live, mover.member_key, args.rows, {})
        time.sleep(2.5)  # the request log is written in batches every 2 s
        print(f"seeded {seeded} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        rec = Recorder()
        threads = [threading.Thread(target=worker, args=(
            lives[i % len(lives)].sdk(mover.member_key, max_retries=0), "tenant", rec, i * 1000), daemon=True)
            for i in range(args.workers)]
        threads += [threading.Thread(target=worker, args=(r.sdk(other.member_key, max_retries=0),
                                                          "bystander", rec, 0), daemon=True) for r in lives]
        for th in threads:
            th.start()
        time.sleep(1.0)
        rec.window = "before"
        time.sleep(args.window_s)
        rec.window = "promotion"
        promoted = move(live, mover.id, "silo")
        rec.window = "on_silo"
        time.sleep(args.window_s)
        rec.window = "demotion"
        demoted = move(live, mover.id, "pool")
        rec.window = "after"
        time.sleep(1.0)
        rec.stop.set()
        for th in threads:
            th.join(timeout=30)
    windows = ("before", "promotion", "on_silo", "demotion")
    result = {
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "args": {k: str(v) for k, v in vars(args).items()}, "seeded_rows": seeded,
        "backend": "sqlite" if args.replicas <= 1 else f"postgres + redis, {args.replicas} replicas",
        "promotion": promoted, "demotion": demoted,
        "tenant": {w: summary(rec, w, "tenant") for w in windows},
        "bystander": {w: summary(rec, w, "bystander") for w in windows},
        "errors": rec.errors[:20],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("promotion", "demotion", "tenant", "bystander", "errors")}, indent=2))


if __name__ == "__main__":
    main()
