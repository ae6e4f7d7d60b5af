"""AdmissionService: what the request path calls around an upstream call.

    decision = await admission.admit(AdmissionRequest(
        tenant_id=..., request_id=..., subjects=(key, user, tenant), tokens=estimate + max_tokens,
        cost_usd=estimate))
    if not decision.admitted:
        raise decision.error()                      # 429 rate_limit_exceeded / insufficient_quota, with headers
    try:
        ... stream; every N tokens: r = await admission.settle(ticket, tokens=so_far, cost_usd=c, final=False)
            and end the stream when r.budget_exhausted ...
        await admission.settle(ticket, tokens=total, cost_usd=cost, final=True)
    finally:
        await admission.release(ticket)             # a no-op after the final settle; frees the slot otherwise

The service only adds the clock (so the store stays testable with an injected ``now``). Prompts are estimated by
``tenantlm.tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from tenantlm.admission.models import AdmissionRequest, Decision, Level, SettleResult, Ticket
from tenantlm.admission.port import LimitStore
from tenantlm.metering.models import PeriodUsage


def reservation_tokens(*, prompt_tokens: int, max_tokens: int | None, default_max_tokens: int) -> int:
    """What to reserve: the prompt estimate plus ``max_tokens``, or the plan's default when the request names none
    (a request is never rejected for leaving it out)."""
    return prompt_tokens + (default_max_tokens if max_tokens is None else max_tokens)


class AdmissionService:
    """Thin layer over a LimitStore that supplies ``now`` from the injected clock."""

    def __init__(self, store: LimitStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    async def admit(self, req: AdmissionRequest) -> Decision:
        """Admitted (with a ticket) or refused (with the level, dimension, message and retry-after); the caller
        decides what a refusal becomes (``inference.gate``: a 429, or a 400 when no retry could ever pass)."""
        return await self.store.admit(req, now=self._clock())

    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: float, final: bool) -> SettleResult:
        return await self.store.settle(ticket, tokens=tokens, cost_usd=cost_usd, final=final, now=self._clock())

    async def release(self, ticket: Ticket) -> None:
        await self.store.release(ticket, now=self._clock())

    async def seed_usage(self, *, tenant_id: str, level: Level, subject_id: str, period: str, tokens: int,
                         cost_usd: float) -> None:  # fmt: skip
        await self.store.seed_usage(tenant_id=tenant_id, level=level, subject_id=subject_id, period=period,
                                    tokens=tokens, cost_usd=cost_usd)  # fmt: skip

    async def seed_budgets(self, usage: Iterable[PeriodUsage]) -> None:
        """Raise the day and month budget counters to at least the ledger's (never lowers, never double counts): at
        start-up for every tenant, and for one tenant when its counters move to another key prefix (a tier move)."""
        now = time.gmtime(self._clock())
        day, month = time.strftime("d:%Y-%m-%d", now), time.strftime("m:%Y-%m", now)
        for row in usage:
            level: Level
            if row.key_id is not None:
                level, subject = "key", row.key_id
            elif row.end_user is not None:
                level, subject = "end_user", f"{row.tenant_id}/{row.end_user}"
            else:
                level, subject = "tenant", row.tenant_id
            for period, tokens, cost in ((day, row.day_tokens, row.day_cost_usd),
                                         (month, row.month_tokens, row.month_cost_usd)):
                await self.seed_usage(tenant_id=row.tenant_id, level=level, subject_id=subject, period=period,
                                      tokens=tokens, cost_usd=cost)
