"""P6: the usage ledger — events/s into record() (durable group commit), flush throughput into SQLite, and a kill -9
crash test (lost / duplicated acknowledged events).

Usage::

    python bench/ledger.py [--seconds 3] [--producers 1,16,256,1024] [--crashes 5] [--postgres]
                           [--out bench/results/ledger.json]

record: P producer tasks on one event loop (uvloop when installed, as the server runs) each build a UsageEvent and
await ``Ledger.record`` in a closed loop for ``--seconds``, in both sync modes: ``always`` (every returned call is
fsynced on disk; group commit; the server's default) and ``interval`` (written before record() returns, fsynced
every 50 ms). A single producer says it is alone (``record(alone=True)``, as the server does when no other request
is in flight), so its fsyncs run inline on the loop. Reported: events/s, fsyncs (and how many inline), mean batch,
p50/p99 record latency. One extra row with a no-op fsync shows what durability costs. Goal: >= 20,000 events/s.

flush: the journal written by the record cell at the most producers is flushed into a fresh SQLite database (events +
rollups, idempotent inserts), then the same segments are replayed once more (every event a duplicate). Goal: >=
20,000 events/s. ``--postgres`` adds the same flush into the test suite's throwaway Postgres (app role, RLS on; that
server runs with fsync off, so read it as CPU cost, not durable throughput).

crash: a child process records from 64 producers (sync modes alternating by run) with the background flusher every
20 ms and prints each id whose record() returned; it is SIGKILLed after a random 0.3-1.5 s; then recover + flush,
and every acknowledged id is looked up. lost = acknowledged ids not in SQL; duplicated = ids stored more than once,
plus rollup rows that differ from a GROUP BY over the events. Goal: 0 / 0 in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import UsageEvent
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate

GOAL = 20_000


def make_event(event_id: str, n: int) -> UsageEvent:
    return UsageEvent(id=event_id, tenant_id=f"ten_{n % 50:04d}", key_id=f"key_{n % 7}", end_user=f"user_{n % 101}",
                      model=("small", "large")[n % 2], provider="vllm", upstream_model="up", region="eu",
                      prompt_tokens=100 + n % 400, completion_tokens=n % 300, cached_tokens=n % 64,
                      latency_ms=250.0, ttft_ms=40.0, status="ok", http_status=200, cost_usd=(n % 1000) * 1e-6,
                      created_at=time.time())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def record_cell(directory: Path, producers: int, seconds: float, *, sync: str) -> dict[str, Any]:
    """``sync``: "always" (fdatasync before record() returns), "interval" (written before it returns, fdatasync
    every 50 ms) or "none" (always, with a no-op fsync: what durability costs)."""
    db = Database.from_url("sqlite+aiosqlite:///:memory:")  # record() never touches SQL
    if sync == "none":
        ledger = Ledger(db=db, directory=directory, fsync=lambda fd: None)
    else:
        ledger = Ledger(db=db, directory=directory, sync="interval" if sync == "interval" else "always")
    await ledger.start()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def producer(p: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            e = make_event(f"{p}-{n}:0", n)
            t0 = time.perf_counter()
            await ledger.record(e, alone=producers == 1)
            if n % 16 == 0:
                latencies.append(time.perf_counter() - t0)
            n += 1
            await asyncio.sleep(0)  # a request yields to the loop elsewhere too; without it, in interval mode
            # (record() returns without suspending) the background fsync would never get to run

    t = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(producers)))
    elapsed = time.perf_counter() - t
    stats = ledger.journal.stats
    await ledger.close(flush=False)
    await db.dispose()
    return {"producers": producers, "fsync": sync, "events": stats.lines,
            "events_per_s": round(stats.lines / elapsed), "fsyncs": stats.batches,
            "inline_fsyncs": stats.inline_batches,
            "mean_batch": round(stats.lines / max(stats.batches, 1), 1),
            "p50_ms": round(pct(latencies, 0.5) * 1e3, 3), "p99_ms": round(pct(latencies, 0.99) * 1e3, 3)}


async def flush_cell(journal_dir: Path, work: Path, url: str, migrate_url: str | None) -> dict[str, Any]:
    """Flush the journal into the database at ``url``, then replay the same segments (every event a duplicate)."""
    await migrate(url=url, migrate_url=migrate_url)
    db = Database.from_url(url)
    backup = work / f"segments-{db.engine.dialect.name}"
    shutil.copytree(journal_dir, backup, ignore=shutil.ignore_patterns("LOCK"))
    ledger = Ledger(db=db, directory=journal_dir)
    t = time.perf_counter()
    first = await ledger.flush()
    first_s = time.perf_counter() - t
    await ledger.close(flush=False)
    for seg in backup.glob("*.seg"):
        shutil.copy(seg, journal_dir / seg.name)
    ledger = Ledger(db=db, directory=journal_dir)
    t = time.perf_counter()
    replay = await ledger.recover()
    replay_s = time.perf_counter() - t
    await ledger.close(flush=False)
    await db.dispose()
    for seg in backup.glob("*.seg"):  # leave the journal as the record cell wrote it, for the next backend
        shutil.copy(seg, journal_dir / seg.name)
    return {"backend": db.engine.dialect.name, "events": first.read, "inserted": first.inserted,
            "events_per_s": round(first.read / first_s), "replay_events": replay.read,
            "replay_inserted": replay.inserted, "replay_events_per_s": round(replay.read / replay_s)}


async def postgres_flush_cell(journal_dir: Path, work: Path) -> dict[str, Any]:
    """The same flush into the test suite's throwaway Postgres (as the non-owner role, under RLS; fsync off)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from services import start_postgres

    server = await asyncio.to_thread(start_postgres)
    try:
        pg = await asyncio.to_thread(server.create_database)
        return {**await flush_cell(journal_dir, work, pg.app_url, pg.owner_url), "note": "server fsync=off"}
    finally:
        await asyncio.to_thread(server.stop)


# -- crash test --------------------------------------------------------------------------------------------------------

async def child(url: str, directory: str, run: str, acks: str, sync: str) -> None:
    out = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # page cache: survives the child's kill -9
    db = Database.from_url(url)
    ledger = Ledger(db=db, directory=Path(directory), max_segment_bytes=256 * 1024,
                    sync="interval" if sync == "interval" else "always")
    await ledger.start()
    await ledger.recover()

    async def producer(p: int) -> None:
        n = 0
        while True:
            e = make_event(f"{run}-{p}-{n}:0", n)
            await ledger.record(e)
            os.write(out, e.id.encode() + b"\n")
            n += 1

    await asyncio.gather(ledger.run_flusher(interval_s=0.02), *(producer(p) for p in range(64)))


def kill_after(url: str, directory: Path, run: str, delay: float, sync: str) -> set[str]:
    """Start the child, let it acknowledge for ``delay`` seconds, SIGKILL it; return the ids it acknowledged."""
    acks = directory.with_suffix(".acks")
    proc = subprocess.Popen([sys.executable, __file__, "--child", url, str(directory), run, str(acks), sync],
                            stderr=subprocess.DEVNULL)
    while not (acks.exists() and acks.stat().st_size) and proc.poll() is None:
        time.sleep(0.005)  # wait for the first acknowledgement (start-up takes a moment)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return {x.decode() for x in acks.read_bytes().split(b"\n")[:-1]}  # complete lines only


async def crash_run(work: Path, run: int, delay: float, sync: str) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{work / f'crash{run}.db'}"
    await migrate(url=url, migrate_url=None)
    directory = work / f"crash{run}"
    acked = await asyncio.to_thread(kill_after, url, directory, f"r{run}", delay, sync)
    left = len(list(directory.glob("*.seg")))
    db = Database.from_url(url)
    ledger = Ledger(db=db, directory=directory)
    recovered = await ledger.recover()
    await ledger.close(flush=False)
    async with db.platform_tx() as conn:
        counts = {r[0]: r[1] for r in await conn.execute(sa.text("SELECT id, count(*) FROM usage_events GROUP BY id"))}
        by_events = sorted(tuple(r) for r in await conn.execute(sa.text(
            "SELECT tenant_id, day, model, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
            "sum(cost_nanousd) FROM usage_events GROUP BY tenant_id, day, model")))
        rollups = sorted(tuple(r) for r in await conn.execute(sa.text(
            "SELECT tenant_id, day, model, requests, prompt_tokens, completion_tokens, cached_tokens, cost_nanousd "
            "FROM usage_rollups")))
    await db.dispose()
    return {"run": run, "sync": sync, "kill_after_s": round(delay, 2), "acknowledged": len(acked),
            "in_sql": len(counts),
            "segments_left": left, "torn_lines": recovered.torn_lines, "replayed": recovered.read,
            "lost": len(acked - counts.keys()), "duplicated": sum(1 for n in counts.values() if n > 1)
            + len(set(by_events) ^ set(rollups))}


# -- driver ------------------------------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tlm-ledger-bench-"))
    try:
        records = []
        producers = [int(p) for p in args.producers.split(",")]
        for sync in ("always", "interval"):
            for p in producers:
                records.append(await record_cell(work / f"rec-{sync}-{p}", p, args.seconds, sync=sync))
        records.append(await record_cell(work / "nosync", max(producers), args.seconds, sync="none"))
        journal = work / f"rec-always-{max(producers)}"
        flush = [await flush_cell(journal, work, f"sqlite+aiosqlite:///{work / 'flush.db'}", None)]
        if args.postgres:
            flush.append(await postgres_flush_cell(journal, work))
        rnd = random.Random(6)
        crashes = [await crash_run(work, i, rnd.uniform(0.3, 1.5), ("interval", "always")[i % 2])
                   for i in range(args.crashes)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = max(r["events_per_s"] for r in records if r["fsync"] == "always")
    return {"benchmark": "ledger (P6)", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python bench/ledger.py " + " ".join(sys.argv[1:]),
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                        "loadavg_at_start": os.getloadavg()},
            "goal_events_per_s": GOAL, "record": records, "flush": flush, "crash": crashes,
            "verdict": {"record_goal_met": best >= GOAL, "flush_sqlite_goal_met": flush[0]["events_per_s"] >= GOAL,
                        "crash_lost": sum(c["lost"] for c in crashes),
                        "crash_duplicated": sum(c["duplicated"] for c in crashes)}}


def print_table(result: dict[str, Any]) -> None:
    print(f"{'producers':>9} {'fsync':>9} {'events':>8} {'events/s':>9} {'fsyncs':>7} {'inline':>7} {'batch':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7}")
    for r in result["record"]:
        print(f"{r['producers']:>9} {r['fsync']:>9} {r['events']:>8} {r['events_per_s']:>9} {r['fsyncs']:>7} "
              f"{r['inline_fsyncs']:>7} {r['mean_batch']:>7} {r['p50_ms']:>7} {r['p99_ms']:>7}")
    for f in result["flush"]:
        print(f"\nflush into {f['backend']}: {f['events']} events, {f['events_per_s']} events/s; replay of the same "
              f"segments: {f['replay_events_per_s']} events/s, {f['replay_inserted']} inserted {f.get('note', '')}")
    print(f"\n{'run':>3} {'sync':>8} {'kill s':>6} {'acked':>7} {'in SQL':>7} {'segs':>5} {'torn':>5} {'lost':>5} "
          f"{'dup':>4}")
    for c in result["crash"]:
        print(f"{c['run']:>3} {c['sync']:>8} {c['kill_after_s']:>6} {c['acknowledged']:>7} {c['in_sql']:>7} "
              f"{c['segments_left']:>5} "
              f"{c['torn_lines']:>5} {c['lost']:>5} {c['duplicated']:>4}")
    print("\nverdict:", json.dumps(result["verdict"]))


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(child(*sys.argv[2:7]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--producers", default="1,16,256,1024")
    parser.add_argument("--crashes", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="also flush into a throwaway Postgres (tests/services)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ledger.json")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(main(args))
    except ImportError:
        result = asyncio.run(main(args))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    cli()
