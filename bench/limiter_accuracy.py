"""P3 limiter accuracy: several OS processes admitting through one Redis, checked against an exact sliding log.

Usage::

    python bench/limiter_accuracy.py [--requests 10000] [--processes 4] [--clients 16] [--speed 40] [--repeat 1]
                                     [--monitor-requests 1000] [--out bench/results/limiter_accuracy.json]

Starts a throwaway ``redis-server`` on 127.0.0.1 (free port, temporary dir, stopped by PID at the end), then runs
``--processes`` worker processes, each with its own event loop and its own ``RedisLimitStore``, each driving
``--clients`` closed-loop simulated clients. Every attempt picks one of 6 keys (3 tenants x 2 keys) and asks for
20..200 tokens; both the key and the tenant level carry rpm and tpm limits. An admitted request is settled (final)
with 30..100 % of its reservation. Every admission is recorded with its timestamp, subjects and actual tokens.

Time is virtual so that several 60 s windows turn over in a few real seconds: ``now = T0 + real_elapsed * speed``
on every process (one shared start instant). The Redis calls are real. Pick ``--speed`` so that the run spans a
few windows (the table prints the virtual span): 40 suits a 2-core machine, 240 a 16-core one. The stores run with
``max_clock_skew_s=30`` (virtual seconds): at these speeds a few milliseconds of queueing between reading the clock
and the script running are whole virtual seconds, exactly what a lagging replica looks like.

Measured:
- over-admissions: the admitted stream replayed through an exact sliding 60 s log per subject (key and tenant,
  requests and actual tokens): admitted requests at whose instant the exact window (t - 60, t] held more than the
  limit (goal 0), and the highest fill of any such window relative to the limit.
- round trips: (a) ``INFO commandstats`` deltas over the main run: EVALSHA calls vs the admit and settle calls the
  workers made (commandstats also counts the commands a script runs, so it cannot show alone that nothing else was
  sent); (b) a second, smaller run under ``MONITOR``, which tags script-internal commands as "lua": every command a
  client sent, split by script SHA into admissions and settles (goal: 1 per admission).
- admissions/s (attempts per second of the main run, all processes together) and admit latency percentiles.
- a reference: how many of the same attempts an ideal exact sliding-log limiter would admit (it knows each
  request's actual tokens up front), to show the limiter is not accurate merely by refusing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import redis

from tenantlm.admission import AdmissionRequest, Limits, Subject
from tenantlm.admission.redis_store import _ADMIT, _SETTLE, RedisLimitStore

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_435_200.0  # 2026-11-23 12:00:00 UTC, the virtual clock's origin
TENANTS = [f"ten_bench{t}" for t in range(3)]
KEYS = [(f"key_{t}_{k}", TENANTS[t]) for t in range(3) for k in range(2)]
KEY_LIMITS = Limits(rpm=150, tpm=8_000)
TENANT_LIMITS = Limits(rpm=240, tpm=14_000)
LIMITS = {"key": KEY_LIMITS, "tenant": TENANT_LIMITS}
Attempt = tuple[float, int, int, int, bool]  # now, key index, reserved tokens, actual tokens, admitted


# ------------------------------------------------------------------------------------------- redis-server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", "",
                             "--appendonly", "no", "--logfile", str(tmp / "redis.log")])  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if client.ping():
                client.close()
                return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------------------------------- workers
def subjects_for(key_index: int) -> tuple[Subject, ...]:
    key_id, tenant_id = KEYS[key_index]
    return (Subject(level="key", id=key_id, limits=KEY_LIMITS),
            Subject(level="tenant", id=tenant_id, limits=TENANT_LIMITS))  # fmt: skip


def worker(index: int, url: str, prefix: str, attempts: int, clients: int, speed: float, barrier: Any,
           start: Any, out: Any) -> None:  # fmt: skip
    out.put(asyncio.run(_worker(index, url, prefix, attempts, clients, speed, barrier, start)))


async def _warm_up(store: RedisLimitStore, index: int, clients: int) -> None:
    """Loads the scripts and opens this process's connections before anything is counted."""
    sub = (Subject(level="key", id=f"warm{index}", limits=Limits(rpm=10**6)),)

    async def one(i: int) -> None:
        req = AdmissionRequest(tenant_id="ten_warm", request_id=f"warm{index}-{i}", subjects=sub, tokens=1,
                               cost_usd=0.0)  # fmt: skip
        decision = await store.admit(req, now=T0 - 3600)
        assert decision.ticket is not None
        await store.settle(decision.ticket, tokens=1, cost_usd=0.0, final=True, now=T0 - 3600)

    await asyncio.gather(*(one(i) for i in range(clients)))


async def _worker(index: int, url: str, prefix: str, attempts: int, clients: int, speed: float, barrier: Any,
                  start: Any) -> dict[str, Any]:  # fmt: skip
    store = RedisLimitStore.from_url(url, prefix=prefix, max_clock_skew_s=30.0, max_connections=clients)
    await _warm_up(store, index, clients)
    await asyncio.to_thread(barrier.wait)
    await asyncio.to_thread(barrier.wait)  # the parent has read the counters and set the start instant
    started = float(start.value)
    rng = random.Random(index)
    done: list[Attempt] = []
    latencies: list[float] = []
    calls = {"admit": 0, "settle": 0}
    left = [attempts]

    def clock() -> float:
        return T0 + (time.time() - started) * speed

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            key_index, tokens = rng.randrange(len(KEYS)), rng.randint(20, 200)
            actual = int(tokens * rng.uniform(0.3, 1.0))
            req = AdmissionRequest(tenant_id=KEYS[key_index][1], request_id=f"p{index}-{left[0]}",
                                   subjects=subjects_for(key_index), tokens=tokens, cost_usd=0.0)  # fmt: skip
            now, t = clock(), time.perf_counter()
            decision = await store.admit(req, now=now)
            latencies.append(time.perf_counter() - t)
            calls["admit"] += 1
            if decision.admitted and decision.ticket is not None:
                await store.settle(decision.ticket, tokens=actual, cost_usd=0.0, final=True, now=clock())
                calls["settle"] += 1
            done.append((now, key_index, tokens, actual, decision.admitted))

    await asyncio.gather(*(client() for _ in range(clients)))
    await store.aclose()
    return {"attempts": done, "latencies": latencies, "calls": calls, "ended": time.time()}


def run_phase(url: str, prefix: str, *, requests: int, processes: int, clients: int, speed: float,
              before_start: Any = None) -> dict[str, Any]:  # fmt: skip
    """Runs the workers; returns their merged records, the wall time and INFO commandstats around the run."""
    ctx = mp.get_context("spawn")
    barrier, start, out = ctx.Barrier(processes + 1), ctx.Value("d", 0.0), ctx.Queue()
    share = [requests // processes + (1 if i < requests % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=worker, args=(i, url, prefix, share[i], clients, speed, barrier, start, out))
             for i in range(processes)]  # fmt: skip
    for p in procs:
        p.start()
    control = redis.Redis.from_url(url, decode_responses=True)
    control.ping()  # connected before a MONITOR starts
    barrier.wait(timeout=120)  # every worker is warm
    if before_start is not None:
        before_start()
    stats_before = control.info("commandstats")
    start.value = time.time()
    barrier.wait(timeout=120)
    results = [out.get(timeout=600) for _ in procs]
    wall = max(r["ended"] for r in results) - start.value
    stats_after = control.info("commandstats")
    control.close()
    for p in procs:
        p.join(timeout=30)
    return {"results": results, "wall_s": wall, "commandstats": _delta(stats_before, stats_after)}


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, int]]:
    out = {}
    for name, stats in after.items():
        old = before.get(name, {})
        calls = int(stats["calls"]) - int(old.get("calls", 0))
        if calls:
            out[name.removeprefix("cmdstat_")] = {"calls": calls, "usec": int(stats["usec"]) - int(old.get("usec", 0))}
    return out


# ------------------------------------------------------------------------------------------- MONITOR
class Monitor(threading.Thread):
    """Counts the commands clients send (MONITOR tags what a script runs as "lua"), per EVALSHA script."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.counts: dict[str, int] = defaultdict(int)
        self.ready = threading.Event()
        self.names = {_ADMIT.sha: "EVALSHA admit", _SETTLE.sha: "EVALSHA settle"}

    def run(self) -> None:
        with self.client.monitor() as m:
            self.ready.set()
            for cmd in m.listen():
                words = cmd["command"].split()
                if "end-of-bench" in cmd["command"]:
                    return
                if cmd["client_type"] == "lua" or not words:
                    continue
                name = words[0].upper()
                if name == "EVALSHA" and len(words) > 1:
                    name = self.names.get(words[1].strip('"'), "EVALSHA other")
                self.counts[name] += 1


def monitor_phase(url: str, args: argparse.Namespace) -> dict[str, Any]:
    monitor = Monitor(url)
    marker = redis.Redis.from_url(url)
    marker.ping()  # connected before MONITOR starts, so its handshake is not counted

    def begin() -> None:  # after the workers' warm-up: their connections and scripts exist already
        monitor.start()
        monitor.ready.wait(10)
        time.sleep(0.2)

    phase = run_phase(url, "mon:", requests=args.monitor_requests, processes=args.processes, clients=args.clients,
                      speed=args.speed, before_start=begin)  # fmt: skip
    marker.echo("end-of-bench")
    marker.close()
    monitor.join(timeout=60)
    calls = {k: sum(r["calls"][k] for r in phase["results"]) for k in ("admit", "settle")}
    counts = dict(monitor.counts)
    counts.pop("INFO", None)  # the parent's two INFO commandstats reads
    total = sum(counts.values())
    return {"requests": args.monitor_requests, "admit_calls": calls["admit"], "settle_calls": calls["settle"],
            "client_commands": counts, "client_commands_total": total,
            "admission_round_trips_per_admission": counts.get("EVALSHA admit", 0) / calls["admit"],
            "settle_round_trips_per_settle": counts.get("EVALSHA settle", 0) / max(1, calls["settle"]),
            "client_commands_per_operation": total / (calls["admit"] + calls["settle"])}  # fmt: skip


# ------------------------------------------------------------------------------------------- exact sliding log
def level_events(attempts: list[Attempt], *, admitted_only: bool = True) -> dict[tuple[str, str], list[Attempt]]:
    by: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in sorted(attempts):
        if a[4] or not admitted_only:
            key_id, tenant_id = KEYS[a[1]]
            by[("key", key_id)].append(a)
            by[("tenant", tenant_id)].append(a)
    return by


def replay_exact(attempts: list[Attempt]) -> dict[str, Any]:
    """The admitted stream through an exact sliding log (t - 60, t] per subject: admissions that overfill it."""
    over = {"rpm": 0, "tpm": 0}
    peak: dict[str, float] = {"rpm": 0.0, "tpm": 0.0}
    for (level, _), events in level_events(attempts).items():
        lim = LIMITS[level]
        window: deque[tuple[float, int]] = deque()
        count = tokens = 0
        for now, _, _, actual, _ in events:
            while window and window[0][0] <= now - 60:
                tokens -= window.popleft()[1]
                count -= 1
            over["rpm"] += count + 1 > (lim.rpm or 0)
            over["tpm"] += tokens + actual > (lim.tpm or 0)
            window.append((now, actual))
            count, tokens = count + 1, tokens + actual
            peak["rpm"] = max(peak["rpm"], count / (lim.rpm or 1))
            peak["tpm"] = max(peak["tpm"], tokens / (lim.tpm or 1))
    return {"over_admissions": over, "peak_window_fill": {k: round(v, 4) for k, v in peak.items()}}


def ideal_reference(attempts: list[Attempt]) -> int:
    """How many attempts an exact sliding-log limiter that knew each actual token count would have admitted."""
    logs: dict[tuple[str, str], deque[tuple[float, int]]] = defaultdict(deque)
    admitted = 0
    for now, key_index, _, actual, _ in sorted(attempts):
        key_id, tenant_id = KEYS[key_index]
        subjects = [("key", key_id), ("tenant", tenant_id)]
        for s in subjects:
            while logs[s] and logs[s][0][0] <= now - 60:
                logs[s].popleft()
        fits = all(len(logs[s]) + 1 <= (LIMITS[s[0]].rpm or 0)
                   and sum(t for _, t in logs[s]) + actual <= (LIMITS[s[0]].tpm or 0) for s in subjects)  # fmt: skip
        if fits:
            admitted += 1
            for s in subjects:
                logs[s].append((now, actual))
    return admitted


# ------------------------------------------------------------------------------------------- report
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarize(main: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    attempts = [a for r in main["results"] for a in r["attempts"]]
    latencies = [x for r in main["results"] for x in r["latencies"]]
    calls = {k: sum(r["calls"][k] for r in main["results"]) for k in ("admit", "settle")}
    stats = main["commandstats"]
    evalsha = stats.get("evalsha", {}).get("calls", 0)
    times = [a[0] for a in attempts]
    return {
        "processes": args.processes, "attempts": len(attempts), "admitted": sum(a[4] for a in attempts),
        "ideal_exact_log_admitted": ideal_reference(attempts),
        "virtual_span_s": round(max(times) - min(times), 1), "wall_s": round(main["wall_s"], 3),
        "admissions_per_s": round(len(attempts) / main["wall_s"], 1),
        "admit_latency_ms": {q: round(percentile(latencies, p) * 1000, 3)
                             for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        **replay_exact(attempts),
        "commandstats": {"admit_calls": calls["admit"], "settle_calls": calls["settle"], "evalsha_calls": evalsha,
                         "script_load_calls": stats.get("script|load", {}).get("calls", 0),
                         "evalsha_server_usec_per_call": round(
                             stats.get("evalsha", {}).get("usec", 0) / max(1, evalsha), 1),
                         "evalsha_per_admit_plus_settle": round(evalsha / (calls["admit"] + calls["settle"]), 4),
                         "all_commands_including_script_internal": stats},
    }  # fmt: skip


def print_table(summary: dict[str, Any], mon: dict[str, Any]) -> None:
    rows = [
        ("attempts / admitted", f"{summary['attempts']} / {summary['admitted']}"),
        ("ideal exact-log limiter would admit", str(summary["ideal_exact_log_admitted"])),
        ("over-admissions rpm / tpm (goal 0)", "{rpm} / {tpm}".format(**summary["over_admissions"])),
        ("peak 60 s window fill rpm / tpm", "{rpm} / {tpm}".format(**summary["peak_window_fill"])),
        ("round trips per admission, MONITOR (goal 1)", f"{mon['admission_round_trips_per_admission']:.4f}"),
        ("client commands per admit+settle, MONITOR", f"{mon['client_commands_per_operation']:.4f}"),
        ("EVALSHA per admit+settle, commandstats", str(summary["commandstats"]["evalsha_per_admit_plus_settle"])),
        (f"admissions/s ({summary['processes']} processes)", str(summary["admissions_per_s"])),
        ("Redis time per EVALSHA us (admit, settle mix)",
         str(summary["commandstats"]["evalsha_server_usec_per_call"])),
        ("admit latency p50 / p99 ms", "{p50} / {p99}".format(**summary["admit_latency_ms"])),
        ("virtual span s / wall s", f"{summary['virtual_span_s']} / {summary['wall_s']}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16, help="simulated clients per process")
    parser.add_argument("--speed", type=float, default=40.0, help="virtual seconds per real second")
    parser.add_argument("--monitor-requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="main runs (fresh keys each); MONITOR runs once")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/limiter_accuracy.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tenantlm-p3-"))
    proc, port = start_redis(tmp)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        runs = [summarize(run_phase(url, f"p3-{i}:", requests=args.requests, processes=args.processes,
                                    clients=args.clients, speed=args.speed), args) for i in range(args.repeat)]
        monitor = monitor_phase(url, args)
        version = redis.Redis(port=port).info("server")["redis_version"]
    finally:
        stop_redis(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"benchmark": "P3 limiter accuracy", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "command": "python bench/limiter_accuracy.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                       "python": platform.python_version(), "redis": version},
           "settings": {"processes": args.processes, "clients_per_process": args.clients, "speed": args.speed,
                        "keys": len(KEYS), "tenants": len(TENANTS), "key_limits": vars_of(KEY_LIMITS),
                        "tenant_limits": vars_of(TENANT_LIMITS), "tokens_reserved": "20..200",
                        "tokens_actual": "30..100 % of reserved", "max_clock_skew_s": 30.0},
           "runs": runs, "monitor": monitor,
           "admissions_per_s_median": statistics.median(r["admissions_per_s"] for r in runs),
           "over_admissions_total": sum(sum(r["over_admissions"].values()) for r in runs)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for i, run in enumerate(runs):
        print(f"--- run {i + 1} of {len(runs)}")
        print_table(run, monitor)
    print(f"median admissions/s {doc['admissions_per_s_median']}; over-admissions in all runs "
          f"{doc['over_admissions_total']}; wrote {args.out}")


def vars_of(limits: Limits) -> dict[str, Any]:
    return {"rpm": limits.rpm, "tpm": limits.tpm}


if __name__ == "__main__":
    main()
