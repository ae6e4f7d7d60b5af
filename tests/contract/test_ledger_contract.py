"""Usage ledger contract on every SQL backend (SQLite; Postgres as the non-owner role under RLS): idempotent inserts,
rollups that equal a GROUP BY over the raw events after duplicates and replays, grouped queries, tenant scoping,
exports that add up, period totals and the forecast, and budget alerts that fire once per threshold."""

from __future__ import annotations

import asyncio
import csv
import http.server
import io
import itertools
import math
import random
import shutil
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from tenantlm.metering import export
from tenantlm.metering.alerts import AlertSettings, BudgetAlerts, verify_signature
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import DAY_S, GROUP_COLUMNS, Totals, UsageEvent, to_nano, utc_day
from tenantlm.metering.store import EVERY_TENANT
from tenantlm.storage.sql.engine import Database

A, B, C = "ten_aaaa", "ten_bbbb", "ten_cccc"
NOW = 1_804_680_000.0  # 2027-03-10 12:00 UTC
MONTH_START = 1_803_859_200.0  # 2027-03-01 00:00 UTC


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_event(n: int, *, tenant: str = A, created_at: float = NOW - 60, prompt: int = 10, completion: int = 5,
               **kw: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "id": f"req_{tenant}_{n}:0", "tenant_id": tenant, "key_id": "key_1", "end_user": None, "model": "m-small",
        "provider": "fake", "upstream_model": "up-small", "region": "local", "prompt_tokens": prompt,
        "completion_tokens": completion, "cached_tokens": 0, "latency_ms": 12.5, "ttft_ms": 3.0, "status": "ok",
        "http_status": 200, "cost_usd": (prompt * 0.15 + completion * 0.6) / 1e6, "created_at": created_at}
    fields.update(kw)
    return UsageEvent(**fields)


def random_events(n: int, seed: int = 7) -> list[UsageEvent]:
    rnd = random.Random(seed)
    return [make_event(i, tenant=rnd.choice([A, B, C]), created_at=MONTH_START + rnd.uniform(0, 9.5 * DAY_S),
                       prompt=rnd.randint(0, 500), completion=rnd.randint(0, 200), cached_tokens=rnd.randint(0, 9),
                       model=rnd.choice(["m-small", "m-large", "-=evil"]), key_id=rnd.choice(["key_1", "key_2", None]),
                       end_user=rnd.choice(["u1", "u2", "=cmd()", None]), provider=rnd.choice(["fake", "vllm"]),
                       status=rnd.choice(["ok", "ok", "error", "cancelled", "cut"]))
            for i in range(n)]


@pytest.fixture
async def ledger(database: Database, tmp_path: Path) -> AsyncIterator[Ledger]:
    led = Ledger(db=database, directory=tmp_path / "ledger", clock=Clock())
    await led.start()
    try:
        yield led
    finally:
        await led.close(flush=False)


async def record_all(ledger: Ledger, events: list[UsageEvent]) -> None:
    for e in events:
        await ledger.record(e)


async def group_by_sql(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    by_events = ("SELECT tenant_id, day, model, count(*), sum(prompt_tokens), sum(completion_tokens), "
                 "sum(cached_tokens), sum(cost_nanousd) FROM usage_events GROUP BY tenant_id, day, model")
    by_rollups = ("SELECT tenant_id, day, model, requests, prompt_tokens, completion_tokens, cached_tokens, "
                  "cost_nanousd FROM usage_rollups")
    async with db.platform_tx() as conn:
        a = sorted(tuple(int(x) if not isinstance(x, str) else x for x in r)
                   for r in await conn.execute(sa.text(by_events)))
        b = sorted(tuple(int(x) if not isinstance(x, str) else x for x in r)
                   for r in await conn.execute(sa.text(by_rollups)))
    return a, b


def expected(events: list[UsageEvent], groups: list[str]) -> dict[tuple[Any, ...], Totals]:
    acc: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for e in events:
        values = {"day": utc_day(e.created_at), "tenant_id": e.tenant_id}
        key = tuple(values.get(GROUP_COLUMNS[g], getattr(e, GROUP_COLUMNS[g], None)) for g in groups)
        t = acc[key]
        for i, v in enumerate((1, e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.cost_nanousd)):
            t[i] += v
    return {k: Totals(*v) for k, v in acc.items()}


async def test_the_same_event_twice_is_stored_and_counted_once(ledger: Ledger, database: Database) -> None:
    e = make_event(1)
    await record_all(ledger, [e, e])
    first = await ledger.flush()
    assert (first.read, first.inserted, first.tenants) == (2, 1, frozenset({A}))
    await ledger.record(e)
    again = await ledger.flush()
    assert (again.read, again.inserted, again.tenants) == (1, 0, frozenset())
    [row] = await ledger.usage(tenant_id=A, start=MONTH_START, end=MONTH_START + 31 * DAY_S, group_by=["model"])
    assert row.totals.requests == 1 and row.totals.tokens == 15
    a, b = await group_by_sql(database)
    assert a == b


async def test_a_replayed_segment_adds_nothing(ledger: Ledger, database: Database, tmp_path: Path) -> None:
    """A crash after the commit but before the segment was deleted: the next start replays it."""
    events = random_events(300)
    await record_all(ledger, events)
    saved = tmp_path / "saved"
    saved.mkdir()
    for seg in await ledger.journal.seal():
        shutil.copy(seg, saved / seg.name)
    assert (await ledger.flush()).inserted == 300
    before = await group_by_sql(database)
    for seg in saved.iterdir():
        shutil.copy(seg, ledger.journal.directory / seg.name)
    replay = await ledger.recover()
    assert (replay.read, replay.inserted, replay.segments) == (300, 0, 1)
    after = await group_by_sql(database)
    assert after == before and after[0] == after[1]
    assert not list(ledger.journal.directory.glob("*.seg"))


async def test_rollups_equal_a_group_by_over_events_after_duplicates(ledger: Ledger, database: Database) -> None:
    events = random_events(500)
    await record_all(ledger, events[:300])
    await ledger.flush()
    await record_all(ledger, events[200:] + events[:50])  # overlaps the first flush and itself
    result = await ledger.flush()
    assert result.inserted == 200
    a, b = await group_by_sql(database)
    assert a == b and sum(r[3] for r in a) == 500


async def test_stored_events_equal_what_was_recorded_to_the_last_bit(ledger: Ledger, database: Database) -> None:
    """Every field comes back from SQL as it was recorded: floats to the last bit, money to the nano-dollar, text with
    quotes, escapes and non-ASCII, nulls, and the day of events a hair either side of midnight."""
    rnd = random.Random(11)
    midnight = MONTH_START + 4 * DAY_S
    times = [midnight, math.nextafter(midnight, 0.0), midnight + 1e-6] + [
        MONTH_START + rnd.uniform(0, 9 * DAY_S) for _ in range(297)]
    events = [make_event(i, tenant=rnd.choice([A, B]), created_at=t, latency_ms=rnd.expovariate(1 / 300),
                         ttft_ms=rnd.choice([None, rnd.random() * 100, 1e-9]),
                         cost_usd=rnd.choice([0.0, rnd.random() * 1e-3, 2.5e-9, 123.456789]),
                         end_user=rnd.choice([None, 'u"1\\', "ünï\ncode ☃", "=cmd()"]),
                         key_id=rnd.choice([None, "key_1"]), prompt=rnd.randint(0, 10**9))
              for i, t in enumerate(times)]
    await record_all(ledger, events)
    assert (await ledger.flush()).inserted == len(events)
    stored = {e.id: e for page in [p async for p in ledger.store.events(scope=EVERY_TENANT, start=MONTH_START,
                                                                        end=MONTH_START + 31 * DAY_S)] for e in page}
    assert len(stored) == len(events)
    for e in events:
        got = stored[e.id]
        assert got.cost_nanousd == e.cost_nanousd
        assert {**got.to_dict(), "cost_usd": None} == {**e.to_dict(), "cost_usd": None}
    async with database.platform_tx() as conn:
        days = dict((r[0], r[1]) for r in await conn.execute(sa.text("SELECT id, day FROM usage_events")))
    assert days == {e.id: utc_day(e.created_at) for e in events}
    assert days[events[1].id] < days[events[0].id]  # the hair before midnight is the day before


async def test_usage_for_every_grouping_matches_the_events(ledger: Ledger) -> None:
    events = random_events(400)
    await record_all(ledger, events)
    await ledger.flush()
    ranges = [(MONTH_START, MONTH_START + 10 * DAY_S),  # whole days: rollups where the groups allow
              (MONTH_START + 1.5 * DAY_S, MONTH_START + 7.25 * DAY_S)]  # cuts days: raw events
    names = list(GROUP_COLUMNS)
    for size in range(4):
        for groups in itertools.combinations(names, size):
            for start, end in ranges:
                for tenant in (None, B):
                    inside = [e for e in events if start <= e.created_at < end and tenant in (None, e.tenant_id)]
                    rows = await (ledger.platform_usage(start=start, end=end, group_by=list(groups)) if tenant is None
                                  else ledger.usage(tenant_id=tenant, start=start, end=end, group_by=list(groups)))
                    got = {tuple(r.group.values()): r.totals for r in rows}
                    assert got == (expected(inside, list(groups)) or {(): Totals()}), (groups, start, tenant)


async def test_a_tenant_sees_only_its_own_usage(ledger: Ledger, database: Database) -> None:
    await record_all(ledger, random_events(200))
    await ledger.flush()
    rows = await ledger.usage(tenant_id=B, start=MONTH_START, end=MONTH_START + 31 * DAY_S,
                              group_by=["tenant", "key"])
    assert rows and {r.group["tenant"] for r in rows} == {B}
    pages = [e async for page in ledger.events(tenant_id=B, start=0, end=2e9) for e in page]
    assert pages and {e.tenant_id for e in pages} == {B}
    assert {p.tenant_id for p in await ledger.period_usage(tenant_id=B)} == {B}
    if not database.is_postgres:
        return
    async with database.tenant_tx(tenant_id=B) as conn:  # RLS: no WHERE, still one tenant
        for table in ("usage_events", "usage_rollups"):
            owners = set((await conn.execute(sa.text(f"SELECT DISTINCT tenant_id FROM {table}"))).scalars())
            assert owners == {B}, table
    with pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        async with database.tenant_tx(tenant_id=B) as conn:
            await conn.execute(sa.text(
                "INSERT INTO usage_rollups VALUES (:t, '2027-03-01', 'm', 1, 1, 1, 1, 1, 0)"), {"t": A})


async def test_exports_parse_and_add_up(ledger: Ledger) -> None:
    events = random_events(250)
    await record_all(ledger, events)
    await ledger.flush()
    start, end = MONTH_START, MONTH_START + 31 * DAY_S
    [total] = await ledger.platform_usage(start=start, end=end, group_by=[])

    csv_rows = list(csv.DictReader(io.StringIO(await text(export.events_csv(ledger.platform_events(start=start,
                                                                                            end=end))))))
    assert sorted(r["id"] for r in csv_rows) == sorted(e.id for e in events)
    assert sum(int(r["total_tokens"]) for r in csv_rows) == total.totals.tokens
    assert sum(to_nano(float(r["cost_usd"])) for r in csv_rows) == total.totals.cost_nanousd
    assert not any(r["end_user"].startswith("=") or r["model"].startswith("-") for r in csv_rows)

    grouped = await ledger.platform_usage(start=start, end=end, group_by=["tenant", "model"])
    group_rows = list(csv.DictReader(io.StringIO(export.rows_csv(grouped, ["tenant", "model"]).decode())))
    assert len(group_rows) == len(grouped) and sum(int(r["requests"]) for r in group_rows) == 250

    lines = [orjson.loads(x) for x in (await text(export.cloudevents_jsonl(
        ledger.platform_events(start=start, end=end)))).splitlines()]
    assert {x["specversion"] for x in lines} == {"1.0"} and {x["type"] for x in lines} == {"tenantlm.usage"}
    assert len({x["id"] for x in lines}) == 250 and all(x["time"].endswith("Z") for x in lines)
    assert sum(x["data"]["total_tokens"] for x in lines) == total.totals.tokens
    assert sum(to_nano(x["data"]["cost_usd"]) for x in lines) == total.totals.cost_nanousd
    assert {x["subject"] for x in lines} == {A, B, C}

    customers = {A: "cus_A", C: "cus_C"}

    async def customer_of(tenant_id: str) -> str | None:
        return customers.get(tenant_id)

    stripe = [orjson.loads(x) for x in (await text(export.stripe_jsonl(
        ledger.platform_events(start=start, end=end), customer_of))).splitlines()]
    billed = [e for e in events if e.tenant_id in customers and e.tokens > 0]
    assert len(stripe) == len(billed) and len({s["identifier"] for s in stripe}) == len(billed)
    assert sum(int(s["payload"]["value"]) for s in stripe) == sum(e.tokens for e in billed)
    assert {s["payload"]["stripe_customer_id"] for s in stripe} == {"cus_A", "cus_C"}
    assert all(s["event_name"] == "tenantlm_tokens" and isinstance(s["timestamp"], int) for s in stripe)


async def test_event_pages_cover_the_range_once_in_order(ledger: Ledger) -> None:
    events = random_events(120) + [make_event(500 + i, tenant=A, created_at=MONTH_START + 5) for i in range(9)]
    await record_all(ledger, events)  # nine events share one created_at: the page boundary must split ties right
    await ledger.flush()
    for tenant in (None, A):
        pages = [p async for p in ledger.store.events(scope=tenant or EVERY_TENANT, start=MONTH_START, end=NOW, page=4)]
        got = [(e.created_at, e.tenant_id, e.id) for p in pages for e in p]
        want = sorted((e.created_at, e.tenant_id, e.id) for e in events
                      if e.created_at < NOW and tenant in (None, e.tenant_id))
        assert got == want and all(len(p) <= 4 for p in pages), tenant


async def text(lines: AsyncIterator[bytes]) -> str:
    return b"".join([chunk async for chunk in lines]).decode()


async def test_month_to_date_period_usage_and_forecast(ledger: Ledger) -> None:
    today = NOW - NOW % DAY_S
    events = [make_event(1, created_at=MONTH_START - 3600, prompt=999),  # last month: never counted
              make_event(2, created_at=MONTH_START + 3600, prompt=100, completion=0, key_id="key_1"),
              make_event(3, created_at=today - 3600, prompt=200, completion=0, key_id="key_2", end_user="u1"),
              make_event(4, created_at=today + 60, prompt=300, completion=0, key_id="key_2", end_user="u1"),
              make_event(5, tenant=B, created_at=today + 60, prompt=7, completion=0)]
    await record_all(ledger, events)
    await ledger.flush()
    tokens, cost = await ledger.month_to_date(A)
    assert tokens == 600 and cost == pytest.approx(600 * 0.15 / 1e6)
    levels = {(p.tenant_id, p.key_id, p.end_user): (p.day_tokens, p.month_tokens)
              for p in await ledger.platform_period_usage()}
    assert levels == {(A, None, None): (300, 600), (A, "key_1", None): (0, 100), (A, "key_2", None): (300, 500),
                      (A, None, "u1"): (300, 500), (B, None, None): (7, 7), (B, "key_1", None): (7, 7)}
    f = await ledger.forecast(tenant_id=A)
    assert f.method == "mean_last_7_full_days" and f.window_days == 7  # March 10th: 9 full days so far
    assert f.daily_run_rate_tokens == pytest.approx(200 / 7, abs=1e-3)  # only event 3 is in the last 7 full days
    assert f.forecast_tokens == 600 + round(200 / 7 * (21.5))  # 21.5 days left in March at noon on the 10th
    assert f.forecast_cost_usd == pytest.approx(90e-6 + 30e-6 / 7 * 21.5, abs=1e-9)


async def test_forget_tenant_removes_only_that_tenants_usage(ledger: Ledger) -> None:
    await record_all(ledger, random_events(100))
    await ledger.flush()
    await ledger.forget_tenant(tenant_id=B)
    rows = await ledger.platform_usage(start=0, end=2e9, group_by=["tenant"])
    assert {r.group["tenant"] for r in rows} == {A, C}


# -- budget alerts -----------------------------------------------------------------------------------------------------

SECRET = "whsec_test_0123456789"


class Receiver:
    """A real webhook receiver on 127.0.0.1 (stdlib server in a thread). It answers the planned statuses in order,
    then 200, and keeps every request it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def alerts_for(database: Database, url: str, clock: Clock, *, tokens: int | None = 1000, cost: float | None = None,
               **kw: Any) -> BudgetAlerts:
    async def budgets(tenant_id: str) -> tuple[int | None, float | None]:
        return (tokens, cost) if tenant_id == A else (None, None)

    settings = AlertSettings(secret=SECRET, platform_url=url, **{"first_delay_s": 0.01, **kw})
    return BudgetAlerts(db=database, budgets=budgets, settings=settings, clock=clock)


async def alert_rows(db: Database) -> list[tuple[Any, ...]]:
    async with db.platform_tx() as conn:
        return sorted(tuple(r) for r in await conn.execute(sa.text(
            "SELECT metric, threshold, target, state, attempts FROM usage_alerts")))


async def test_each_threshold_fires_once_signed_and_never_again(ledger: Ledger, database: Database,
                                                                receiver: Receiver) -> None:
    clock = Clock()
    alerts = alerts_for(database, receiver.url, clock, tokens=1000, cost=1e-4)
    ledger.on_flushed = alerts.check
    for n, tokens in enumerate((400, 100, 100, 150, 100, 400)):  # 40% 50% 60% 75% 85% 125% of the token budget
        await ledger.record(make_event(n, prompt=tokens, completion=0))
        await ledger.flush()
        await alerts.drain()
    await ledger.record(make_event(99, tenant=B, prompt=10**6))  # B has no budget
    await ledger.flush()
    await alerts.drain()
    got = [(b["metric"], b["threshold_percent"]) for b in receiver.bodies()]
    # cost: 0.15 USD per 1M prompt tokens → 1250 tokens cost 0.0001875 USD = 187% of 0.0001
    assert sorted(got) == [("cost_usd", 50), ("cost_usd", 80), ("cost_usd", 100),
                           ("tokens", 50), ("tokens", 80), ("tokens", 100)]
    assert len({b["id"] for b in receiver.bodies()}) == 6
    assert all(b["tenant_id"] == A and b["month"] == "2027-03" for b in receiver.bodies())
    for headers, body in receiver.got:
        assert verify_signature(SECRET, headers["x-tenantlm-signature"], body, now=clock.now)
        assert not verify_signature("another secret", headers["x-tenantlm-signature"], body, now=clock.now)
        assert not verify_signature(SECRET, headers["x-tenantlm-signature"], body + b" ", now=clock.now)
    await alerts.close()
    restarted = alerts_for(database, receiver.url, clock, tokens=1000, cost=1e-4)  # a new process, same month
    assert await restarted.check([A]) == 0 and await restarted.resume() == 0
    await restarted.close()
    assert len(receiver.got) == 6
    assert {r[3] for r in await alert_rows(database)} == {"delivered"}


async def test_a_receiver_that_fails_twice_gets_the_alert_on_the_third_try(ledger: Ledger, database: Database,
                                                                           receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    alerts = alerts_for(database, receiver.url, Clock(), tokens=100)
    await ledger.record(make_event(1, prompt=60, completion=0))
    await ledger.flush()
    assert await alerts.check([A]) == 1
    assert await alerts.drain() == [True]
    await alerts.close()
    assert len(receiver.got) == 3 and len({h["x-tenantlm-alert-id"] for h, _ in receiver.got}) == 1
    assert await alert_rows(database) == [("tokens", 50, "platform", "delivered", 3)]


async def test_retries_are_bounded(ledger: Ledger, database: Database, receiver: Receiver) -> None:
    receiver.statuses = [500] * 100
    alerts = alerts_for(database, receiver.url, Clock(), tokens=100, max_tries=4)
    await ledger.record(make_event(1, prompt=100, completion=0))
    await ledger.flush()
    assert await alerts.check([A]) == 3
    assert await alerts.drain() == [False, False, False]
    await alerts.close()
    assert len(receiver.got) == 12
    assert {r[3:] for r in await alert_rows(database)} == {("failed", 4)}


async def test_an_alert_cut_off_by_a_restart_is_sent_at_the_next_start(ledger: Ledger, database: Database,
                                                                       receiver: Receiver) -> None:
    receiver.statuses = [500]
    clock = Clock()
    alerts = alerts_for(database, receiver.url, clock, tokens=100, first_delay_s=30)
    await ledger.record(make_event(1, prompt=50, completion=0))
    await ledger.flush()
    assert await alerts.check([A]) == 1
    while await alert_rows(database) != [("tokens", 50, "platform", "pending", 1)]:
        await asyncio.sleep(0.01)
    await alerts.close()  # the process stops while the delivery waits to retry
    restarted = alerts_for(database, receiver.url, clock, tokens=100)
    assert await restarted.check([A]) == 0 and await restarted.resume() == 1
    assert await restarted.drain() == [True]
    await restarted.close()
    ids = [h["x-tenantlm-alert-id"] for h, _ in receiver.got]
    assert len(ids) == 2 and len(set(ids)) == 1
    assert await alert_rows(database) == [("tokens", 50, "platform", "delivered", 2)]


async def test_a_usage_read_names_a_tenant_or_every_tenant_never_none(ledger: Ledger) -> None:
    """A missing tenant id can never widen a read to the whole platform: ``None`` is refused, not read as 'all'."""
    with pytest.raises(TypeError):
        [p async for p in ledger.store.events(scope=None, start=0, end=2e9)]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ledger.queries.usage(scope="", start=0, end=2e9, group_by=[])
