"""The LimitStore port: where admission keeps its counters. Adapters: :mod:`.memory` (embedded, one process) and
:mod:`.redis_store` (any number of replicas sharing one Redis).

Every method is keyword-only after its first argument, takes the caller's clock as ``now`` (so tests can turn
windows and periods over without sleeping), and is scoped by tenant: every key a store builds carries ``tenant_id``.
"""

from __future__ import annotations

from typing import Any, Protocol

from tenantlm.admission.models import AdmissionRequest, Decision, Level, SettleResult, Subject, Ticket


class LimitStore(Protocol):
    async def admit(self, req: AdmissionRequest, *, now: float) -> Decision:
        """Checks every dimension of every subject; consumes all of them or none.

        Admitting a request id that is already admitted consumes nothing again and answers admitted (a retried
        call after a lost reply must not count twice).
        """
        ...

    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: float, final: bool, now: float) -> SettleResult:
        """Replaces the reservation with the actual usage so far (cumulative, not a delta) in the tpm window and
        every budget. ``final=False`` (while streaming) keeps the reservation, charges beyond it, renews the
        concurrency lease and reports whether a budget is used up. ``final=True`` also frees the concurrency slot.
        A second final settle of the same ticket changes nothing (``duplicate=True``)."""
        ...

    async def release(self, ticket: Ticket, *, now: float) -> None:
        """The request failed before any (further) usage: refund the reservation, keep the request counted in rpm,
        free the slot. Idempotent; a no-op after a final settle."""
        ...

    async def seed_usage(self, *, tenant_id: str, level: Level, subject_id: str, period: str, tokens: int,
                         cost_usd: float) -> None:  # fmt: skip
        """Raises the budget counters of ``period`` ("d:2026-11-23" or "m:2026-11") to at least the given usage
        (from the durable ledger at start-up). Never lowers a counter: it may hold reservations in flight."""
        ...

    async def snapshot(self, *, tenant_id: str, subject: Subject, now: float) -> dict[str, Any]:
        """Current usage per dimension of one subject (for GET /limits and tests)."""
        ...
