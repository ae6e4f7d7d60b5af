"""Admission's pure parts: OpenAI-style durations, periods, the window retry rule, refusals as errors, validation,
and the service's clock."""

from __future__ import annotations

import calendar

import pytest

from tenantlm.admission import (
    AdmissionRequest,
    AdmissionService,
    Decision,
    Limits,
    MemoryLimitStore,
    QuotaExceeded,
    RateStatus,
    Subject,
    format_duration,
)
from tenantlm.admission.rules import check_period, period_end, periods, settle_targets, window_retry_at
from tenantlm.errors import RateLimited


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0ms"), (0.02, "20ms"), (0.9994, "999ms"), (0.9996, "1s"), (1, "1s"), (1.5, "1.5s"), (8.64, "8.64s"),
    (59.999, "59.999s"), (60, "1m0s"), (61, "1m1s"), (90.25, "1m30.25s"), (360, "6m0s"), (3600, "1h0m0s"),
    (3723, "1h2m3s"), (-5, "0ms"),
])  # fmt: skip
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_periods_are_utc_days_and_calendar_months() -> None:
    new_year_eve = calendar.timegm((2026, 12, 31, 23, 59, 59))
    assert periods(new_year_eve) == ("d:2026-12-31", "m:2026-12")
    assert period_end("d:2026-12-31") == new_year_eve + 1
    assert period_end("m:2026-12") == new_year_eve + 1
    assert period_end("m:2028-02") == calendar.timegm((2028, 3, 1, 0, 0, 0))  # leap year: 29 days
    assert check_period("d:2028-02-29") == "d:2028-02-29"
    for bad in ("d:2026-2-3", "m:2026-13", "y:2026", "d:2026-11", "2026-11"):
        with pytest.raises(ValueError):
            check_period(bad)


def test_window_retry_waits_until_enough_leaves_the_window() -> None:
    buckets = {100: 5, 110: 3, 120: 2}
    assert window_retry_at(buckets, used=10, need=1, limit=10) == 161  # dropping second 100 is enough
    assert window_retry_at(buckets, used=10, need=6, limit=10) == 171  # needs 100 and 110 gone
    assert window_retry_at(buckets, used=10, need=11, limit=10) is None  # never fits


def test_settle_targets_per_mode() -> None:
    assert settle_targets(mode=0, reserved=50, actual_before=0, reported=30) == (50, 30)  # streaming: keep reserve
    assert settle_targets(mode=0, reserved=50, actual_before=80, reported=60) == (80, 80)  # late, lower figure
    assert settle_targets(mode=1, reserved=50, actual_before=80, reported=70) == (70, 70)  # final is the truth
    assert settle_targets(mode=2, reserved=50, actual_before=20, reported=0) == (20, 20)  # release keeps the used


def test_refusals_become_429s_with_openai_codes_and_headers() -> None:
    rate = RateStatus(limit=10, remaining=0, reset_s=30.0)
    limited = Decision(admitted=False, code="rate_limit_exceeded", message="slow down", retry_after_s=2.5,
                       requests=rate)  # fmt: skip
    err = limited.error()
    assert type(err) is RateLimited and err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.headers == {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-reset-requests": "30s", "retry-after": "2", "retry-after-ms": "2500"}
    quota = Decision(admitted=False, code="insufficient_quota", message="budget", retry_after_s=None).error()
    assert isinstance(quota, QuotaExceeded) and isinstance(quota, RateLimited)
    assert quota.body()["error"]["code"] == quota.body()["error"]["type"] == "insufficient_quota"
    assert "retry-after" not in quota.headers
    with pytest.raises(ValueError):
        Decision(admitted=True).error()


def test_invalid_limits_and_requests_are_rejected() -> None:
    for bad in ({"rpm": -1}, {"tpm": 1.5}, {"max_concurrency": True}, {"monthly_cost_budget_usd": float("nan")}):
        with pytest.raises(ValueError):
            Limits(**bad)
    sub = Subject(level="key", id="key_1", limits=Limits())
    with pytest.raises(ValueError, match="twice"):
        AdmissionRequest(tenant_id="t", request_id="r", subjects=(sub, sub), tokens=1, cost_usd=0.0)
    with pytest.raises(ValueError):
        AdmissionRequest(tenant_id="t", request_id="r", subjects=(sub,), tokens=-1, cost_usd=0.0)


async def test_the_service_passes_its_clock_and_its_refusals_become_errors() -> None:
    now = [float(calendar.timegm((2026, 11, 23, 23, 59, 0)))]
    service = AdmissionService(MemoryLimitStore(), clock=lambda: now[0])
    sub = (Subject(level="tenant", id="ten_a", limits=Limits(daily_token_budget=10)),)
    req = AdmissionRequest(tenant_id="ten_a", request_id="r0", subjects=sub, tokens=10, cost_usd=0.0)
    decision = await service.admit(req)
    assert decision.ticket is not None and decision.ticket.day == "d:2026-11-23"
    refused = await service.admit(AdmissionRequest(tenant_id="ten_a", request_id="r1", subjects=sub, tokens=1,
                                                   cost_usd=0.0))  # fmt: skip
    assert not refused.admitted
    with pytest.raises(QuotaExceeded) as caught:
        raise refused.error()
    assert caught.value.retry_after == pytest.approx(60.0)  # the clock says one minute to midnight
    now[0] += 60
    assert (await service.admit(AdmissionRequest(tenant_id="ten_a", request_id="r1", subjects=sub, tokens=1,
                                                 cost_usd=0.0))).admitted  # fmt: skip
    await service.settle(decision.ticket, tokens=4, cost_usd=0.0, final=True)
    snapshot = await service.store.snapshot(tenant_id="ten_a", subject=sub[0], now=now[0])
    assert snapshot["daily_tokens"] == 1  # the new day's request; the settle went to the day it was admitted in
