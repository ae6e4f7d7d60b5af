"""The storage meter on a real SQLite database: a day keeps its peak per kind, days roll over at UTC midnight, every
tenant is sampled page by page, a report covers [start, end) and erasure removes a tenant's rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tenantlm.metering import storage
from tenantlm.metering.storage import StorageMeter, StorageUsageStore
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate

DEC_4 = 1_796_342_400.0  # 2026-12-04T00:00:00Z
DAY = 86_400.0


@dataclass
class Sized:
    storage_kind: str
    sizes: dict[str, int]

    async def stored_bytes(self, *, tenant_id: str) -> int:
        return self.sizes.get(tenant_id, 0)


@dataclass
class T:
    id: str


class Tenants:
    def __init__(self, ids: list[str]) -> None:
        self.ids = sorted(ids)
        self.pages = 0

    async def platform_list_tenants(self, *, limit: int, after: str | None) -> list[Any]:
        self.pages += 1
        return [T(i) for i in self.ids if after is None or i > after][:limit]


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await migrate(url=url, migrate_url=None)
    return Database.from_url(url)


async def test_a_day_keeps_its_peak_and_the_next_day_starts_fresh(db: Database) -> None:
    now = [DEC_4 + 3600]
    files, responses = Sized("files", {"ten_a": 500}), Sized("responses", {"ten_a": 7})
    meter = StorageMeter(store=StorageUsageStore(db), sources=(files, responses), tenants=Tenants(["ten_a"]),
                         price_per_gb_day=4.0, clock=lambda: now[0])
    await meter.sample(tenant_id="ten_a")
    files.sizes["ten_a"] = 2_000_000_000
    await meter.sample(tenant_id="ten_a")
    files.sizes["ten_a"] = 100  # deleted later that day: the day is billed at its peak
    now[0] += DAY  # 2026-12-05, 01:00
    report = await meter.report(tenant_id="ten_a", start=DEC_4, end=DEC_4 + 2 * DAY)
    days = {d["day"]: d for d in report["data"]}
    assert days["2026-12-04"]["bytes"] == {"files": 2_000_000_000, "responses": 7}
    assert days["2026-12-05"]["bytes"] == {"files": 100, "responses": 7}
    assert days["2026-12-04"]["cost_usd"] == pytest.approx(2.000000007 * 4.0)
    assert report["total_gb_days"] == pytest.approx((2_000_000_007 + 107) / 1e9)
    only_first = await meter.report(tenant_id="ten_a", start=DEC_4, end=DEC_4 + DAY)
    assert [d["day"] for d in only_first["data"]] == ["2026-12-04"]
    await meter.forget_tenant(tenant_id="ten_a")
    assert (await StorageUsageStore(db).days(tenant_id="ten_a", first="2026-01-01", last="2027-01-01")) == []
    await db.dispose()


async def test_every_tenant_is_sampled_page_by_page(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "TENANT_PAGE", 2)
    ids = [f"ten_{n}" for n in range(5)]
    tenants = Tenants(ids)
    meter = StorageMeter(store=StorageUsageStore(db), sources=(Sized("files", {i: n for n, i in enumerate(ids)}),),
                         tenants=tenants, clock=lambda: DEC_4)
    assert await meter.sample_all() == 5 and tenants.pages == 3
    store = StorageUsageStore(db)
    for n, tenant_id in enumerate(ids):
        [day] = await store.days(tenant_id=tenant_id, first="2026-12-04", last="2026-12-04")
        assert day.bytes == {"files": n}
    await db.dispose()
