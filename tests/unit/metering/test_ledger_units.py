"""Smaller pieces of metering: the event's rules, alert signatures and thresholds, the forecast's methods,
and what the ledger does with a database that is down or a damaged journal segment."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tenantlm.errors import ServiceUnavailable
from tenantlm.metering.alerts import crossings, sign, verify_signature
from tenantlm.metering.forecast import forecast
from tenantlm.metering.journal import encode_line
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import Totals, UsageEvent, event_id, month_bounds, rfc3339, utc_day
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate

MARCH_1 = 1_803_859_200.0  # 2027-03-01 00:00 UTC


def event(n: int, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "id": event_id(f"req_{n}", 0), "tenant_id": "ten_a", "key_id": None, "end_user": None, "model": "m",
        "provider": "p", "upstream_model": "u", "region": "local", "prompt_tokens": 3, "completion_tokens": 4,
        "cached_tokens": 0, "latency_ms": 1.0, "ttft_ms": None, "status": "ok", "http_status": 200,
        "cost_usd": 0.5, "created_at": MARCH_1 + n}
    fields.update(kw)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_event_rules() -> None:
    assert event(1).id == "req_1:0" and event(1).tokens == 7 and event(1).cost_nanousd == 500_000_000
    with pytest.raises(ValueError, match="status"):
        event(1, status="fine")
    with pytest.raises(ValueError, match="negative"):
        event(1, completion_tokens=-1)
    with pytest.raises(ValueError, match="id"):
        event(1, tenant_id="")
    assert UsageEvent(**event(2).to_dict()) == event(2)


def test_calendar_helpers() -> None:
    assert utc_day(MARCH_1 - 1) == "2027-02-28" and utc_day(MARCH_1) == "2027-03-01"
    assert month_bounds(MARCH_1 - 1) == (MARCH_1 - 28 * 86400, MARCH_1)
    assert month_bounds(MARCH_1 + 5) == (MARCH_1, MARCH_1 + 31 * 86400)
    assert rfc3339(MARCH_1 + 0.25) == "2027-03-01T00:00:00.250Z"


def test_signature_round_trip_and_replay_window() -> None:
    body = b'{"id":"x"}'
    header = sign("s3cret", body, timestamp=1000)
    assert header.startswith("t=1000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("s3cret", header, body, now=1100)
    assert not verify_signature("s3cret", header, body, now=1000 + 301)  # too old: a replay
    assert not verify_signature("s3cret", "t=abc,v1=00", body, now=1000)
    assert not verify_signature("s3cret", "garbage", body, now=1000)


def test_crossings_per_metric_and_threshold() -> None:
    totals = Totals(requests=1, prompt_tokens=700, completion_tokens=100, cost_nanousd=2_000_000_000)
    found = {(c.metric, c.threshold) for c in crossings(totals, (1000, 2.0), (50, 80, 100))}
    assert found == {("tokens", 50), ("tokens", 80), ("cost_usd", 50), ("cost_usd", 80), ("cost_usd", 100)}
    assert crossings(totals, (None, 0.0), (50,)) == []


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 'u.db'}"
    await migrate(url=url, migrate_url=None)
    return Database.from_url(url)


async def test_forecast_on_the_first_day_and_early_in_the_month(db: Database, tmp_path: Path) -> None:
    ledger = Ledger(db=db, directory=tmp_path / "l", clock=lambda: MARCH_1 + 6 * 3600)
    await ledger.start()
    await ledger.record(event(1, prompt_tokens=600, completion_tokens=0, cost_usd=0.6))
    await ledger.record(event(2, prompt_tokens=100, completion_tokens=0, cost_usd=0.1, created_at=MARCH_1 - 10))
    await ledger.flush()
    first = await ledger.forecast(tenant_id="ten_a")
    assert first.method == "today_so_far_extrapolated" and first.window_days == 0.25
    assert first.forecast_tokens == 600 + round(600 / 0.25 * 30.75)
    third = await forecast(ledger.queries, tenant_id="ten_a", now=MARCH_1 + 2 * 86400 + 60)
    assert third.method == "mean_full_days_this_month" and third.window_days == 2
    assert third.daily_run_rate_usd == pytest.approx(0.3)
    await ledger.close(flush=False)
    await db.dispose()


async def test_a_database_outage_keeps_events_in_the_journal(db: Database, tmp_path: Path) -> None:
    down = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    ledger = Ledger(db=down, directory=tmp_path / "l")
    await ledger.start()
    await ledger.record(event(1))
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        await ledger.flush()
    await ledger.close()  # the final flush fails too: logged, and the journal keeps the event
    await down.dispose()
    assert len(list((tmp_path / "l").glob("*.seg"))) == 1
    back = Ledger(db=db, directory=tmp_path / "l")
    assert (await back.recover()).inserted == 1
    assert not list((tmp_path / "l").glob("*.seg"))
    await back.close(flush=False)
    await db.dispose()


async def test_a_damaged_segment_is_loaded_and_kept_in_quarantine(db: Database, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "l"
    directory.mkdir()
    lines = [encode_line(orjson.dumps(event(n))) for n in range(3)]
    damaged = bytearray(lines[1])
    damaged[20] ^= 0x20
    (directory / "000000000001.seg").write_bytes(lines[0] + bytes(damaged) + lines[2])
    (directory / "000000000002.seg").write_bytes(encode_line(b'{"not":"an event"}'))
    ledger = Ledger(db=db, directory=directory)
    result = await ledger.recover()
    assert (result.read, result.inserted, result.segments, result.torn_lines) == (2, 2, 2, 1)
    assert sorted(p.name for p in (directory / "quarantine").iterdir()) == ["000000000001.seg", "000000000002.seg"]
    assert "unreadable lines" in caplog.text
    await ledger.close(flush=False)
    await db.dispose()
