"""What only the in-process store promises: its memory stays bounded as time passes."""

from __future__ import annotations

import calendar

from tenantlm.admission import AdmissionRequest, Limits, MemoryLimitStore, Subject

NOW = float(calendar.timegm((2026, 11, 23, 12, 0, 0)))


def request(rid: str, subject_id: str) -> AdmissionRequest:
    sub = Subject(level="end_user", id=subject_id, limits=Limits(rpm=10, max_concurrency=5, daily_token_budget=100))
    return AdmissionRequest(tenant_id="ten_a", request_id=rid, subjects=(sub,), tokens=1, cost_usd=0.0, lease_s=30.0)


async def test_idle_subjects_old_periods_and_records_are_swept() -> None:
    store = MemoryLimitStore(record_ttl_s=3600.0)
    for i in range(50):
        assert (await store.admit(request(f"r{i}", f"ten_a/user{i}"), now=NOW)).admitted
    sizes = (len(store._windows), len(store._budgets), len(store._records))
    assert sizes == (50, 100, 50)  # a window, a day and a month counter, a record per end user
    await store.admit(request("later", "ten_a/someone"), now=NOW + 3 * 86_400)
    # three days on: only the new subject's window, its day and month counters (November's months are kept until
    # a day after the month ends), and its record remain
    assert (len(store._windows), len(store._records)) == (1, 1)
    assert len(store._budgets) == 50 + 2
    await store.admit(request("much-later", "ten_a/someone"), now=NOW + 40 * 86_400)
    assert (len(store._windows), len(store._budgets), len(store._records)) == (1, 2, 1)
