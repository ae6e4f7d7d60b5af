"""P2 noisy neighbour: a light tenant's latency alone and next to a flooding tenant, FIFO vs weighted VTC.

Usage::

    python bench/fairness.py [--capacity 16,64] [--light-samples 1000] [--decode-ms 2] [--headroom N]
                             [--out bench/results/fairness.json]

Everything runs in this process on one event loop (uvloop when installed), in real time:

- **Upstream**: a simulated model with a fixed capacity (``--capacity`` requests at once; it records the most it ever
  saw, which must not exceed it). A request takes ``--prefill-ms`` per input token (default 0.2) then streams its
  output in chunks of 10 tokens at ``--decode-ms`` per token (default 2: 500 tokens/s per sequence, faster than real
  serving, which is 20-200), calling ``grant.charge_output`` per chunk as a gateway would. It keeps its own clock
  (each chunk is due at a fixed time after the request started and the harness sleeps until then, to the loop's
  timer resolution), so event-loop lag in this process delays when a chunk is observed but does not pile up over a
  request's chunks, as it would not in a real upstream running in its own process.
- **Schedulers** in front of it, same interface (``slot()`` async context manager, ``charge_output``) and the same
  limits (256 waiting per tenant, 4096 in all, 30 s max wait): ``fifo`` (one queue, first come first served: what
  gateways do), ``vtc`` (tenantlm.scheduling.FairScheduler, work-conserving: no slot held back) and
  ``vtc-headroom`` (the same with slots held back for newcomers, ``FairScheduler(headroom=...)``: by default what the
  catalog gives a model of that capacity, ``tenantlm.scheduling.default_headroom``, i.e. the product's default
  configuration; ``--headroom`` sets it, 0 leaves these scenarios out).
- **Load**: open loop, Poisson arrivals per tenant (seeded). ``light`` offers a steady rate far under its fair share
  (``--light-share`` of the upstream's capacity in requests/s, default 15 %; 200 in / 100 out tokens, always);
  ``heavy`` offers 10x what the upstream can serve (200 in / 100 out on average: output lengths uniform within
  +-``--spread``). Refusals (429) are counted, never retried. Why the spread: with identical lengths the simulated
  requests finish in lockstep, slots free in bursts once per service time, and any newcomer waits up to a whole
  service time whatever the scheduler (measured: light's queue wait p50 20 ms, p90 48 ms under VTC); real traffic
  has varied lengths.

Why this speed (the defaults were 0.05 / 0.5 ms until 2026-11-29): the harness is client, scheduler and upstream in
one Python process. At 0.5 ms per token a request takes 60 ms, and at capacity 64 the flood offers ~10,700
requests/s with ~12,000 chunk wake-ups/s; the loop then stalls for 10-70 ms at a time (loop lag p99 10-11 ms, max
37-71 ms, measured) and the light tenant's p99 measured those stalls: in two back-to-back runs VTC with two slots
held back gave 1.41x and VTC without them 1.25x, the reverse of what the schedulers do (light's queue wait p99:
0.14 ms vs 7.7 ms). At 2 ms per token the same scenario runs with loop lag p99 1.4-2.3 ms. Latency ratios do not
depend on the time scale otherwise: a newcomer's wait for a slot is about service time / capacity, a fixed fraction
of its own service time. ``--prefill-ms 0.05 --decode-ms 0.5 --light-rate 40 --duration 25`` reproduces the old
runs.

Scenarios: light alone, light + heavy, under each scheduler and for each ``--capacity``; each runs until light has
made ``--light-samples`` requests after the ``--warmup`` s (default 1000; ``--duration`` fixes the seconds instead).
Reported: light's p50/p99 latency (arrival to last token) and p99(with heavy) / p99(alone); goal for VTC <= 1.25.
Slots are not preempted, so without headroom even a perfect scheduler makes a newcomer wait for the next slot to
free: about service time / capacity on average, longer at p99. That wait, relative to the light request's own
service time, is what the ratio measures under ``vtc``; hence two capacities (16: a small upstream, 64: closer to a
vLLM replica's concurrent sequences). Held-back slots take that wait away at a cost in the flood's throughput, which
the heavy tenant's completed count shows.

Service difference (Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024, section 6 and Table 2;
artifact fair_bench/plot/plot_6.2_work_diff.py): service = input + 2 x output tokens (the paper's linear cost),
counted as it is delivered. Two forms:

- ``window_diff``: per window of ``--window`` s, for each tenant j with service S_j and demand D_j (cost of the
  requests it offered in the window): min(max_k S_k - S_j, D_j - S_j), clamped at 0, max over j; reported max and
  mean over windows (tokens/s). A tenant only counts as short-changed for service it asked for and did not get (the
  clamp: a tenant catching up on earlier requests gets more than it asked in that window, which hurts nobody).
- ``acc_diff``: max over time of |W_a(t)/w_a - W_b(t)/w_b|, the accumulated weighted service of two tenants that are
  both backlogged the whole time (the quantity the paper's fairness bound, section 4, is about). P2's light tenant is
  never backlogged, so this is measured in a second scenario, ``pair``: tenant ``long`` (weight 1, 100 in / 300 out)
  and ``short`` (weight 2, 100 in / 50 out), each offering 5x capacity. VTC should give short twice long's service;
  FIFO shares by request count, so long's weighted lead grows without bound.

A micro-benchmark times the fast path (free slot, empty queue: ``async with slot()`` doing nothing), in ns/op.

The scenario code takes any ``Target`` (``async def request(tenant, input_tokens, output_tokens)``), so a live-server
variant only needs a Target that calls the HTTP API and a ServiceLog fed from the streamed usage.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tenantlm.errors import RateLimited  # noqa: E402
from tenantlm.scheduling import FairScheduler, QueueFull, QueueTimeout, default_headroom  # noqa: E402

# The simulated upstream's speed per sequence; set once from --prefill-ms / --decode-ms before any scenario runs.
PREFILL_S_PER_TOKEN = 0.0002
DECODE_S_PER_TOKEN = 0.002
CHUNK_TOKENS = 10
W_IN, W_OUT = 1, 2  # the paper's linear cost, also the scheduler's defaults
PER_TENANT_QUEUE, TOTAL_QUEUE = 256, 4096
MAX_WAIT_S = 30.0
SLOT_ARGS: dict[str, Any] = {"weight": 1.0, "priority": 0, "input_tokens": 100, "max_wait_s": MAX_WAIT_S}


# --- schedulers ------------------------------------------------------------------------------------------------------
class ChargeableGrant(Protocol):
    def charge_output(self, tokens: int) -> None: ...


class Scheduler(Protocol):
    def slot(self, *, tenant_id: str, weight: float, priority: int, input_tokens: int,
             max_wait_s: float) -> AbstractAsyncContextManager[ChargeableGrant]: ...  # fmt: skip


class _FifoGrant:
    def charge_output(self, tokens: int) -> None:
        return None


class FifoScheduler:
    """The baseline: one queue in arrival order, same capacity, limits and interface as FairScheduler."""

    def __init__(self, *, capacity: int, max_queue_per_tenant: int, max_queue_total: int) -> None:
        self._capacity, self._in_flight = capacity, 0
        self._per_tenant, self._total = max_queue_per_tenant, max_queue_total
        self._queue: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()
        self._depth: collections.Counter[str] = collections.Counter()

    @asynccontextmanager
    async def slot(self, *, tenant_id: str, weight: float, priority: int, input_tokens: int,
                   max_wait_s: float) -> AsyncIterator[ChargeableGrant]:  # fmt: skip
        if self._in_flight < self._capacity and not self._queue:
            self._in_flight += 1
        else:
            await self._wait(tenant_id, max_wait_s)
        try:
            yield _FifoGrant()
        finally:
            self._release()

    async def _wait(self, tenant_id: str, max_wait_s: float) -> None:
        if self._depth[tenant_id] >= self._per_tenant or len(self._queue) >= self._total:
            raise QueueFull("queue full", reason="queue_full", retry_after=1.0)
        entry = (tenant_id, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        self._depth[tenant_id] += 1
        timer = asyncio.get_running_loop().call_later(max_wait_s, self._expire, entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self._release()  # granted just before the cancellation landed
            raise
        finally:
            timer.cancel()

    def _expire(self, entry: tuple[str, asyncio.Future[None]]) -> None:
        if not entry[1].done():
            self._queue.remove(entry)
            self._depth[entry[0]] -= 1
            entry[1].set_exception(QueueTimeout("timeout", waited_s=0.0, retry_after=1.0))

    def _release(self) -> None:
        self._in_flight -= 1
        while self._in_flight < self._capacity and self._queue:
            tenant_id, future = self._queue.popleft()
            self._depth[tenant_id] -= 1
            if not future.done():
                self._in_flight += 1
                future.set_result(None)


def make_scheduler(kind: str, capacity: int, headroom: int = 0) -> Scheduler:
    """``fifo``, ``vtc`` (FairScheduler as configured by default) or ``vtc-headroom`` (with ``headroom`` slots held
    back for newcomers)."""
    if kind == "fifo":
        return FifoScheduler(capacity=capacity, max_queue_per_tenant=PER_TENANT_QUEUE, max_queue_total=TOTAL_QUEUE)
    return FairScheduler(model="sim", capacity=capacity, w_in=W_IN, w_out=W_OUT, max_queue_per_tenant=PER_TENANT_QUEUE,
                         max_queue_total=TOTAL_QUEUE, headroom=headroom if kind == "vtc-headroom" else 0)  # fmt: skip


# --- upstream and target ---------------------------------------------------------------------------------------------
@dataclass
class ServiceLog:
    """Service as delivered: (time, tenant, cost) events, cost = W_IN per input token and W_OUT per output token."""

    events: list[tuple[float, str, float]] = field(default_factory=list)

    def add(self, tenant: str, cost: float) -> None:
        self.events.append((time.monotonic(), tenant, cost))


class SimUpstream:
    def __init__(self, capacity: int, log: ServiceLog) -> None:
        self.capacity, self.log = capacity, log
        self.in_flight = self.max_in_flight = 0

    async def generate(self, tenant: str, grant: ChargeableGrant, input_tokens: int, output_tokens: int) -> None:
        """Keeps its own clock: each chunk is due at a fixed time after the start (prefill, then the chunks), and
        the harness sleeps until then. A late wake-up (event-loop lag) delays when the chunk is observed, not the
        chunks after it, as with a real upstream in its own process; relative sleeps would add every chunk's lag
        to the request's latency."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            due = time.monotonic() + input_tokens * PREFILL_S_PER_TOKEN
            await _sleep_until(due)
            self.log.add(tenant, input_tokens * W_IN)
            for done in range(0, output_tokens, CHUNK_TOKENS):
                n = min(CHUNK_TOKENS, output_tokens - done)
                due += n * DECODE_S_PER_TOKEN
                await _sleep_until(due)
                grant.charge_output(n)
                self.log.add(tenant, n * W_OUT)
        finally:
            self.in_flight -= 1


async def _sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (time.monotonic); no sleep if it has passed. One sleep, so it can wake up to the
    loop's timer resolution early (1 ms in uvloop): sleeping again for the rest doubled the harness's wake-ups.
    Deadlines are absolute, so an early wake-up does not carry over to the next chunk either."""
    left = deadline - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


class Target(Protocol):
    async def request(self, tenant: str, input_tokens: int, output_tokens: int) -> float: ...  # the queue wait


@dataclass
class SimTarget:
    """A scheduler in front of the simulated upstream: what a request through the gateway would meet."""

    scheduler: Scheduler
    upstream: SimUpstream
    weights: dict[str, float]

    async def request(self, tenant: str, input_tokens: int, output_tokens: int) -> float:
        """Returns the time spent waiting for the slot."""
        asked = time.monotonic()
        async with self.scheduler.slot(tenant_id=tenant, weight=self.weights.get(tenant, 1.0), priority=0,
                                       input_tokens=input_tokens, max_wait_s=MAX_WAIT_S) as grant:  # fmt: skip
            waited = time.monotonic() - asked
            await self.upstream.generate(tenant, grant, input_tokens, output_tokens)
        return waited


# --- load ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TenantLoad:
    tenant: str
    rate: float  # requests/s offered, Poisson
    input_tokens: int
    output_tokens: int  # the mean
    weight: float = 1.0
    spread: float = 0.0  # output tokens uniform in output_tokens * [1 - spread, 1 + spread]

    def draw_output(self, rng: random.Random) -> int:
        low, high = self.output_tokens * (1 - self.spread), self.output_tokens * (1 + self.spread)
        return max(1, round(rng.uniform(low, high)))


# (tenant, arrived, cost, latency, refused): cost = input * W_IN + output * W_OUT, the service it asked for; latency
# None when refused (refused = the error's name) or cancelled at the end. A plain tuple of atoms, which the garbage
# collector stops tracking; see scenario() for why the harness's records must stay out of its way.
Outcome = tuple[str, float, int, float | None, str | None, float | None]  # ..., queue wait (None unless completed)


def service_time(load: TenantLoad) -> float:
    return load.input_tokens * PREFILL_S_PER_TOKEN + load.output_tokens * DECODE_S_PER_TOKEN


async def _one(target: Target, load: TenantLoad, output_tokens: int, out: list[Outcome]) -> None:
    arrived, latency, refused, waited = time.monotonic(), None, None, None
    try:
        waited = await target.request(load.tenant, load.input_tokens, output_tokens)
        latency = time.monotonic() - arrived
    except RateLimited as e:
        refused = type(e).__name__
    finally:
        out.append((load.tenant, arrived, load.input_tokens * W_IN + output_tokens * W_OUT, latency, refused, waited))


async def offer(target: Target, load: TenantLoad, stop_at: float, out: list[Outcome], rng: random.Random,
                tasks: set[asyncio.Task[None]]) -> None:  # fmt: skip
    """Open loop: issues every arrival that is due, then sleeps until the next one (at least 1 ms)."""
    next_at = time.monotonic()
    while next_at < stop_at:
        while next_at <= time.monotonic() and next_at < stop_at:
            task = asyncio.create_task(_one(target, load, load.draw_output(rng), out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += rng.expovariate(load.rate)
        await asyncio.sleep(max(0.001, next_at - time.monotonic()))


async def run_load(target: Target, loads: list[TenantLoad], duration: float, seed: int,
                   drain: Callable[[str], bool], out: list[Outcome]) -> float:  # fmt: skip
    """Offers every load for ``duration`` s, appending to ``out``; then waits for the requests of tenants ``drain``
    names and cancels the rest (a flood's leftover queue is not worth waiting for). Returns the start time."""
    tasks: dict[str, set[asyncio.Task[None]]] = {ld.tenant: set() for ld in loads}
    start = time.monotonic()
    await asyncio.gather(*(offer(target, ld, start + duration, out, random.Random(f"{seed}-{ld.tenant}"),
                                 tasks[ld.tenant]) for ld in loads))  # fmt: skip
    for tenant, pending in tasks.items():
        if not drain(tenant):
            for task in pending:
                task.cancel()
    await asyncio.gather(*(t for pending in tasks.values() for t in list(pending)), return_exceptions=True)
    return start


# --- metrics ---------------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def tenant_summary(outcomes: list[Outcome], tenant: str, since: float) -> dict[str, Any]:
    mine = [o for o in outcomes if o[0] == tenant and o[1] >= since]
    lat = [o[3] for o in mine if o[3] is not None]
    waits = [o[5] for o in mine if o[3] is not None and o[5] is not None]
    ms = {f"p{q}_ms": round(v * 1000, 2) for q in (50, 90, 99) if (v := percentile(lat, q)) is not None}
    ms |= {f"wait_p{q}_ms": round(v * 1000, 2) for q in (50, 99) if (v := percentile(waits, q)) is not None}
    return {"offered": len(mine), "completed": len(lat), "refused": collections.Counter(o[4] for o in mine
            if o[4]), **ms, "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None}  # fmt: skip


def window_diff(log: ServiceLog, outcomes: list[Outcome], loads: list[TenantLoad], start: float, end: float,
                window: float) -> dict[str, float]:  # fmt: skip
    """The paper's windowed service difference (module docstring), in cost tokens per second."""
    n = int((end - start) // window)
    service = {ld.tenant: [0.0] * n for ld in loads}
    demand = {ld.tenant: [0.0] * n for ld in loads}
    for t, tenant, c in log.events:
        if start <= t < start + n * window:
            service[tenant][int((t - start) // window)] += c / window
    for tenant, arrived, cost, _, _, _ in outcomes:
        if start <= arrived < start + n * window:
            demand[tenant][int((arrived - start) // window)] += cost / window
    diffs = []
    for i in range(n):
        best = max(service[t][i] for t in service)
        diffs.append(max(max(0.0, min(best - service[t][i], demand[t][i] - service[t][i])) for t in service))
    return {"max": round(max(diffs), 1), "mean": round(statistics.fmean(diffs), 1), "windows": n} if diffs else {}


def acc_diff(log: ServiceLog, loads: list[TenantLoad], start: float) -> dict[str, float]:
    """max over time of |W_a/w_a - W_b/w_b| for the two tenants, from ``start`` (cost tokens)."""
    (a, wa), (b, wb) = [(ld.tenant, ld.weight) for ld in loads]
    acc = {a: 0.0, b: 0.0}
    worst = 0.0
    for t, tenant, c in log.events:
        if t >= start:
            acc[tenant] += c
            worst = max(worst, abs(acc[a] / wa - acc[b] / wb))
    return {"max": round(worst, 1), "final": round(abs(acc[a] / wa - acc[b] / wb), 1),
            f"service_{b}_over_{a}": round(acc[b] / acc[a], 3) if acc[a] else math.nan}  # fmt: skip


# --- scenarios -------------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def loop_health() -> AsyncIterator[dict[str, Any]]:
    """Measures what the harness itself costs: event-loop lag (how late a 5 ms sleep wakes), this process's CPU and
    the machine's load average. A lag p99 of several ms means the numbers measure a saturated loop or a busy machine,
    not the scheduler."""
    lags: list[float] = []
    report: dict[str, Any] = {"loadavg_1m_at_start": round(os.getloadavg()[0], 2)}

    async def probe() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - t - 0.005)

    task, cpu0, wall0 = asyncio.create_task(probe()), time.process_time(), time.monotonic()
    try:
        yield report
    finally:
        task.cancel()
        report["cpu_pct"] = round(100 * (time.process_time() - cpu0) / (time.monotonic() - wall0), 1)
        report.update({f"loop_lag_p{q}_ms": round((percentile(lags, q) or 0) * 1000, 2) for q in (50, 99, 100)})


async def scenario(kind: str, capacity: int, loads: list[TenantLoad], args: argparse.Namespace, duration: float,
                   measure: str | None) -> dict[str, Any]:  # fmt: skip
    """One run: ``loads`` through a ``kind`` scheduler into an upstream of ``capacity``. ``measure`` is the tenant
    whose requests are waited for at the end (None: cancel everything left, and compute acc_diff)."""
    log, outcomes = ServiceLog(), list[Outcome]()
    upstream = SimUpstream(capacity, log)
    scheduler = make_scheduler(kind, capacity, headroom_for(args, capacity))
    target = SimTarget(scheduler, upstream, {ld.tenant: ld.weight for ld in loads})
    # The records lists grow to ~500k entries; every full collection walks them (~20-90 ms pauses at capacity 64,
    # measured with gc.callbacks) and that showed up as the light tenant's p99. Freezing moves them (and everything
    # else alive now) out of the collector's reach; what the requests themselves allocate is collected as usual.
    gc.collect()
    gc.freeze()
    try:
        async with loop_health() as health:
            start = await run_load(target, loads, duration, args.seed, lambda t: t == measure, outcomes)
    finally:
        gc.unfreeze()
    since, end = start + args.warmup, start + duration
    result: dict[str, Any] = {"scheduler": kind, "capacity": capacity, "duration_s": duration,
                              "max_in_flight": upstream.max_in_flight, "harness": health,
                              "tenants": {ld.tenant: tenant_summary(outcomes, ld.tenant, since) for ld in loads},
                              "window_diff": window_diff(log, outcomes, loads, since, end, args.window)}  # fmt: skip
    if len(loads) == 2 and measure is None:
        result["acc_diff"] = acc_diff(log, loads, since)
    assert upstream.max_in_flight <= capacity, "a scheduler let more requests in than the capacity"
    return result


def p2_loads(args: argparse.Namespace, capacity: int) -> tuple[TenantLoad, TenantLoad]:
    capacity_rps = capacity / service_time(TenantLoad("light", 0, 200, 100))
    light = TenantLoad("light", args.light_rate or args.light_share * capacity_rps, 200, 100)
    heavy = TenantLoad("heavy", 10 * capacity_rps, 200, 100, spread=args.spread)
    return light, heavy


def p2_duration(args: argparse.Namespace, light: TenantLoad) -> float:
    """--duration, or long enough for --light-samples measured light requests after the warm-up."""
    return float(args.duration or round(args.warmup + args.light_samples / light.rate, 1))


def headroom_for(args: argparse.Namespace, capacity: int) -> int:
    """--headroom, or what the catalog gives a model of this capacity when its entry does not say."""
    return default_headroom(capacity) if args.headroom is None else args.headroom


def pair_loads(args: argparse.Namespace, capacity: int) -> list[TenantLoad]:
    long_, short = TenantLoad("long", 0, 100, 300, 1.0), TenantLoad("short", 0, 100, 50, 2.0)
    return [TenantLoad(ld.tenant, 5 * capacity / service_time(ld), ld.input_tokens, ld.output_tokens, ld.weight,
                       args.spread) for ld in (long_, short)]  # fmt: skip


async def all_scenarios(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    loads: dict[str, Any] = {}
    for capacity in args.capacity:
        light, heavy = p2_loads(args, capacity)
        loads[f"c{capacity}/p2"] = [asdict(light), asdict(heavy)]
        duration = p2_duration(args, light)
        for kind in kinds(args, capacity):
            for name, tenants in (("alone", [light]), ("with_heavy", [light, heavy])):
                key = f"c{capacity}/{kind}/{name}"
                print(f"  {key}: {duration:g} s ...", flush=True)
                runs[key] = await scenario(kind, capacity, tenants, args, duration, measure="light")
    capacity = args.capacity[0]
    loads[f"c{capacity}/pair"] = [asdict(ld) for ld in pair_loads(args, capacity)]
    for kind in ("fifo", "vtc"):
        print(f"  c{capacity}/{kind}/pair: {args.pair_duration:g} s ...", flush=True)
        runs[f"c{capacity}/{kind}/pair"] = await scenario(kind, capacity, pair_loads(args, capacity), args,
                                                          args.pair_duration, measure=None)  # fmt: skip
    return {"loads": loads, "runs": runs}


def kinds(args: argparse.Namespace, capacity: int) -> tuple[str, ...]:
    return ("fifo", "vtc", "vtc-headroom") if headroom_for(args, capacity) else ("fifo", "vtc")


def summarize(runs: dict[str, Any], capacities: list[int], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for capacity, kind in ((c, k) for c in capacities for k in kinds(args, c)):
        alone = runs[f"c{capacity}/{kind}/alone"]["tenants"]["light"]
        busy = runs[f"c{capacity}/{kind}/with_heavy"]["tenants"]["light"]
        ratio = round(busy["p99_ms"] / alone["p99_ms"], 3) if busy.get("p99_ms") and alone.get("p99_ms") else None
        held = headroom_for(args, capacity) if kind == "vtc-headroom" else 0
        out[f"c{capacity}/{kind}"] = {"light_p99_alone_ms": alone.get("p99_ms"), "p99_ratio": ratio,
                                      "light_p99_with_heavy_ms": busy.get("p99_ms"),
                                      "light_refused_with_heavy": sum(busy["refused"].values()),
                                      "headroom": held}  # fmt: skip
    for kind in ("fifo", "vtc"):
        out[f"c{capacities[0]}/{kind}"]["pair_acc_diff"] = runs[f"c{capacities[0]}/{kind}/pair"]["acc_diff"]
    out["goal"] = {f"c{c}/{kind}": {"vtc_p99_ratio_max": 1.25, "met": (r := out[f"c{c}/{kind}"]["p99_ratio"])
                                    is not None and r <= 1.25}
                   for c in capacities for kind in kinds(args, c) if kind != "fifo"}  # fmt: skip
    return out


# --- micro-benchmark -------------------------------------------------------------------------------------------------
async def _time_fast_path(make_cm: Callable[[int], AbstractAsyncContextManager[Any]], n: int) -> float:
    t0 = time.perf_counter_ns()
    for i in range(n):
        async with make_cm(i):
            pass
    return (time.perf_counter_ns() - t0) / n


async def fast_path(n: int, repeats: int = 7) -> dict[str, float]:
    """ns per uncontended ``async with slot()``: best of ``repeats`` runs of n, with an asyncio.Semaphore and a
    do-nothing async context manager for scale."""
    vtc = FairScheduler(model="m", capacity=1 << 30)
    fifo = FifoScheduler(capacity=1 << 30, max_queue_per_tenant=PER_TENANT_QUEUE, max_queue_total=TOTAL_QUEUE)
    sem = asyncio.Semaphore(1 << 30)
    tenants = [f"t{i}" for i in range(10)]

    @asynccontextmanager
    async def nothing() -> AsyncIterator[None]:
        yield

    cases: dict[str, Callable[[int], AbstractAsyncContextManager[Any]]] = {
        "vtc_slot": lambda i: vtc.slot(tenant_id=tenants[i % 10], **SLOT_ARGS),
        "fifo_slot_bench_baseline": lambda i: fifo.slot(tenant_id="t", **SLOT_ARGS),
        "asyncio_semaphore": lambda i: sem,
        "empty_asynccontextmanager": lambda i: nothing(),
    }
    return {name: round(min([await _time_fast_path(cm, n) for _ in range(repeats)]), 1) for name, cm in cases.items()}


# --- report ----------------------------------------------------------------------------------------------------------
def table(runs: dict[str, Any], summary: dict[str, Any], micro: dict[str, float]) -> str:
    rows = ["| scenario | light p50 ms | light p99 ms | light queue wait p50 / p99 ms | light refused | "
            "heavy completed | heavy refused | window diff max / mean (tok/s) | loop lag p99 / max ms, CPU %, load |",
            "|---|---:|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for key, r in runs.items():
        if key.endswith("pair"):
            continue
        lt, hv = r["tenants"]["light"], r["tenants"].get("heavy", {})
        wd = r["window_diff"]
        rows.append(f"| {key} | {lt.get('p50_ms')} | {lt.get('p99_ms')} | {lt.get('wait_p50_ms')} / "
                    f"{lt.get('wait_p99_ms')} | {sum(lt['refused'].values())} | "
                    f"{hv.get('completed', '-')} | {sum(hv['refused'].values()) if hv else '-'} | "
                    f"{wd.get('max')} / {wd.get('mean')} | {_health(r['harness'])} |")  # fmt: skip
    rows += ["", "| capacity / scheduler | slots held back | light p99 alone ms | light p99 with heavy ms | "
             "ratio (goal VTC <= 1.25) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    rows += [f"| {k} | {v['headroom']} | {v['light_p99_alone_ms']} | {v['light_p99_with_heavy_ms']} | "
             f"{v['p99_ratio']} |" for k, v in summary.items() if k != "goal"]  # fmt: skip
    rows += ["", "| pair (both backlogged) | max acc. weighted service diff (tokens) | final | short/long service |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for key, r in runs.items():
        if key.endswith("pair"):
            acc = r["acc_diff"]
            rows.append(f"| {key} | {acc['max']} | {acc['final']} | {acc['service_short_over_long']} |")
    rows += ["", "| fast path (uncontended `async with`) | ns/op |", "|---|---:|"]
    rows += [f"| {k} | {v} |" for k, v in micro.items()]
    return "\n".join(rows)


def _health(h: dict[str, Any]) -> str:
    return f"{h['loop_lag_p99_ms']} / {h['loop_lag_p100_ms']}, {h['cpu_pct']}, {h['loadavg_1m_at_start']}"


def machine() -> dict[str, Any]:
    return {"nproc": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": os.getloadavg()}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per P2 scenario (default: enough for --light-samples light requests)")
    p.add_argument("--light-samples", type=int, default=1000,
                   help="measured light requests per P2 scenario when --duration is not given (default 1000)")
    p.add_argument("--pair-duration", type=float, default=20.0, help="seconds per pair scenario (default 20)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds at the start of each scenario not measured")
    p.add_argument("--capacity", type=lambda v: [int(c) for c in v.split(",")], default=[16, 64],
                   help="upstream capacities to run P2 at, comma-separated (default 16,64; pair runs at the first)")
    p.add_argument("--light-share", type=float, default=0.15,
                   help="light tenant's rate as a fraction of the upstream's capacity in requests/s (default 0.15)")
    p.add_argument("--light-rate", type=float, default=None, help="light tenant's requests/s (overrides --light-share)")
    p.add_argument("--prefill-ms", type=float, default=PREFILL_S_PER_TOKEN * 1000,
                   help=f"simulated prefill per input token, ms (default {PREFILL_S_PER_TOKEN * 1000:g})")
    p.add_argument("--decode-ms", type=float, default=DECODE_S_PER_TOKEN * 1000,
                   help=f"simulated decode per output token and sequence, ms (default {DECODE_S_PER_TOKEN * 1000:g})")
    p.add_argument("--spread", type=float, default=0.5,
                   help="heavy and pair output lengths vary uniformly by +-this fraction of the mean (default 0.5)")
    p.add_argument("--window", type=float, default=1.0, help="service-difference window, seconds (default 1)")
    p.add_argument("--micro-n", type=int, default=100_000, help="fast-path iterations per run")
    p.add_argument("--headroom", type=int, default=None,
                   help="slots held back for newcomers in the vtc-headroom scenarios (default: the catalog's default "
                        "for each capacity, tenantlm.scheduling.default_headroom); 0 skips those scenarios")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fairness.json")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    micro = await fast_path(args.micro_n)
    print(f"fast path ns/op: {micro}", flush=True)
    scenarios = await all_scenarios(args)
    summary = summarize(scenarios["runs"], args.capacity, args)
    return {"micro_ns_per_op": micro, **scenarios, "summary": summary,
            "markdown": table(scenarios["runs"], summary, micro)}  # fmt: skip


def run_loop(coro: Coroutine[Any, Any, dict[str, Any]], loop: str) -> dict[str, Any]:
    if loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.run(coro)
    return asyncio.run(coro)


def set_timing(args: argparse.Namespace) -> None:
    global PREFILL_S_PER_TOKEN, DECODE_S_PER_TOKEN
    PREFILL_S_PER_TOKEN, DECODE_S_PER_TOKEN = args.prefill_ms / 1000, args.decode_ms / 1000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_timing(args)
    info = machine()
    print(f"P2 fairness bench on {info['nproc']} cores, capacities {args.capacity}, loop {args.loop}", flush=True)
    result = run_loop(main_async(args), args.loop)
    doc = {"benchmark": "fairness (P2 noisy neighbour)", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "command": "python bench/fairness.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": info, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           **result}  # fmt: skip
    print(result["markdown"])
    for key, goal in result["summary"]["goal"].items():
        ratio = result["summary"][key]["p99_ratio"]
        print(f"{key}: light p99 ratio {ratio}, goal <= 1.25 {'met' if goal['met'] else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
