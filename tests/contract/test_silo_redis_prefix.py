"""A silo tenant's limiter keys live under its own prefix in Redis (``tlm:silo:{tenant}:...``), a pool tenant's under
the shared one, and admission, settling and snapshots work the same under either."""

from __future__ import annotations

import calendar

import pytest

from services import RedisServer
from tenantlm.admission import AdmissionRequest, Limits, Subject
from tenantlm.admission.redis_store import RedisLimitStore
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.router import TenantRouter
from tenantlm.tiers.service import silo_key_prefix

NOON = float(calendar.timegm((2026, 11, 23, 12, 0, 0)))
SILO, POOL = "ten_silo", "ten_pool"


@pytest.mark.redis
async def test_a_silo_tenant_has_its_own_key_prefix(redis_clean: RedisServer) -> None:
    router = TenantRouter(Database.from_url("sqlite+aiosqlite:///:memory:").engine)
    router.attach(SILO, Database.from_url("sqlite+aiosqlite:///:memory:"))
    store = RedisLimitStore.from_url(redis_clean.url_for(0), prefix_of=silo_key_prefix(router))
    try:
        for tenant in (SILO, POOL):
            subject = Subject(level="tenant", id=tenant, limits=Limits(rpm=2, monthly_token_budget=100))
            for n in range(2):
                decision = await store.admit(AdmissionRequest(
                    tenant_id=tenant, request_id=f"r{n}", subjects=(subject,), tokens=10, cost_usd=0.0), now=NOON)
                assert decision.admitted and decision.ticket is not None
                await store.settle(decision.ticket, tokens=5, cost_usd=0.0, final=True, now=NOON)
            refused = await store.admit(AdmissionRequest(
                tenant_id=tenant, request_id="r9", subjects=(subject,), tokens=10, cost_usd=0.0), now=NOON)
            assert not refused.admitted  # rpm 2, counted under its own keys
            snap = await store.snapshot(tenant_id=tenant, subject=subject, now=NOON)
            assert snap["monthly_tokens"] == 10 and snap["requests"] == 2
        keys = redis_clean.command("KEYS", "*").decode(errors="replace")
        assert "tlm:silo:{ten_silo}:" in keys and "tlm:{ten_pool}:" in keys
        assert "tlm:{ten_silo}" not in keys and "tlm:silo:{ten_pool}" not in keys
    finally:
        await store.aclose()
        await router.dispose()
