"""The in-process LimitStore: the embedded, single-process default.

Atomicity comes from asyncio itself: ``admit``/``settle``/``release`` do all their work in one synchronous call,
with no ``await`` between reading the counters and writing them, so no other coroutine can run in between. The
store is not thread-safe; it belongs to one event loop. See :mod:`.rules` for the window (per-second buckets,
never more permissive than an exact sliding log); the Redis store's Lua script implements the same steps.

Memory stays bounded: buckets and leases older than the window (plus a clock-skew margin) are pruned on every
access, and once a minute (of the caller's clock) a sweep drops idle subjects, budget periods that ended more than a
day ago and reservation records past their expiry. A lease counts while its expiry is after the caller's ``now``;
it is only deleted past the margin, so a call with a slightly older clock sees what the Redis store would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tenantlm.admission.models import (
    AdmissionRequest,
    Decision,
    Level,
    Limits,
    SettleResult,
    Subject,
    Ticket,
    to_micro,
)
from tenantlm.admission.rules import (
    WINDOW_S,
    Failure,
    Usage,
    check_period,
    decide,
    limits_fail,
    period_end,
    periods,
    settle_targets,
    settled,
    usage_dict,
    window_retry_at,
)

_SWEEP_EVERY_S = 60.0
_PARTIAL, _FINAL, _RELEASE = 0, 1, 2


@dataclass(slots=True)
class _Window:
    """One subject's rolling windows and concurrency slots.

    ``buckets`` is kept in ascending order of its seconds (a bucket older than the newest is rare: a caller with
    an older clock; it is put in place by re-sorting), with running totals of both columns. So pruning drops from
    the front, and reading the window is the totals minus the few margin buckets before it: no pass over all 61.
    """

    # second -> [requests, tokens, 1 once tokens were ever added]: the newest such bucket sets the reset header even
    # after a refund emptied it (the Redis script keeps the same "newest written" mark: it cannot search cheaply)
    buckets: dict[int, list[int]] = field(default_factory=dict)
    slots: dict[str, float] = field(default_factory=dict)  # request id -> lease expiry
    requests: int = 0  # totals over every bucket held (the window's part is these minus the margin's)
    tokens: int = 0
    last: int = -1  # the newest second held

    def prune(self, *, now: float, horizon_s: float, full: bool = False) -> None:
        """Drops buckets and leases older than the window plus the margin (``full``: the sweep, same for buckets,
        which are in order)."""
        oldest = math.floor(now) - WINDOW_S - horizon_s
        buckets = self.buckets
        while buckets and (first := next(iter(buckets))) < oldest:
            dropped = buckets.pop(first)
            self.requests -= dropped[0]
            self.tokens -= dropped[1]
        if not buckets:
            self.last = -1
        if self.slots and min(self.slots.values()) <= now - horizon_s:
            for rid in [r for r, expiry in self.slots.items() if expiry <= now - horizon_s]:
                del self.slots[rid]

    def fill(self, now: float, u: Usage) -> None:
        """Adds what the window at ``now`` counts to ``u``: every bucket from ``floor(now) - 60`` on."""
        start = math.floor(now) - WINDOW_S
        buckets = self.buckets
        requests, tokens = self.requests, self.tokens
        for second, bucket in buckets.items():  # the margin: held but already outside the window
            if second >= start:
                break
            requests -= bucket[0]
            tokens -= bucket[1]
        newest_request = newest_token = None
        for second in reversed(buckets):
            if second < start or (newest_request is not None and newest_token is not None):
                break
            bucket = buckets[second]
            if newest_request is None and bucket[0] > 0:
                newest_request = second
            if newest_token is None and bucket[2]:
                newest_token = second
        u.requests, u.tokens = requests, tokens
        u.newest_request_s, u.newest_token_s = newest_request, newest_token
        u.in_flight = self.in_flight(now) if self.slots else 0

    def in_flight(self, now: float) -> int:
        return sum(expiry > now for expiry in self.slots.values())

    def counted(self, now: float, column: int) -> dict[int, int]:
        """The non-empty buckets the window at ``now`` counts, for one column (0 requests, 1 tokens)."""
        start = math.floor(now) - WINDOW_S
        return {s: b[column] for s, b in self.buckets.items() if s >= start and b[column] > 0}

    def _bucket(self, second: int) -> list[int]:
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = [0, 0, 0]
            if second < self.last:  # out of order: put it in place
                self.buckets = dict(sorted(self.buckets.items()))
            else:
                self.last = second
        return bucket

    def add_request(self, second: int, tokens: int) -> None:
        """Counts one request and its ``tokens`` in the bucket of ``second``."""
        bucket = self._bucket(second)
        bucket[0] += 1
        self.requests += 1
        bucket[1] += tokens
        self.tokens += tokens
        if tokens > 0:
            bucket[2] = 1

    def add_tokens(self, second: int, tokens: int) -> None:
        bucket = self._bucket(second)
        bucket[1] += tokens
        self.tokens += tokens
        if tokens > 0:
            bucket[2] = 1

    def refund(self, second: int, tokens: int) -> None:
        """Takes ``tokens`` back out of the bucket they were added to, if it is still held."""
        bucket = self.buckets.get(second)
        if bucket is not None:
            bucket[1] -= tokens
            self.tokens -= tokens


@dataclass(slots=True)
class _Record:
    """What one admitted request holds: its reservation, what is charged now, what was reported."""

    reserved: int
    reserved_micro: int
    charged: int
    charged_micro: int
    actual: int = 0
    actual_micro: int = 0
    in_bucket: int = 0  # tokens still held in the admission bucket (refunds never take more)
    done: bool = False
    expires: float = 0.0
    ticket: Ticket | None = None


class MemoryLimitStore:
    """LimitStore kept in this process's memory (lost on restart: seed budgets from the ledger at start-up)."""

    def __init__(self, *, max_clock_skew_s: float = 5.0, record_ttl_s: float = 86_400.0) -> None:
        self._horizon = max_clock_skew_s
        self._record_ttl = record_ttl_s
        self._windows: dict[tuple[str, str, str], _Window] = {}  # (tenant, level, id)
        self._budgets: dict[tuple[str, str, str, str], list[int]] = {}  # (tenant, level, id, period) -> [tok, micro]
        self._records: dict[tuple[str, str], _Record] = {}  # (tenant, request id)
        self._last_sweep = -math.inf

    # ------------------------------------------------------------------------------------------------ admission
    async def admit(self, req: AdmissionRequest, *, now: float) -> Decision:
        # No await in here, on purpose: check and consume run in one step of the event loop, nothing in between.
        self._maybe_sweep(now)
        day, month = periods(now)
        record = self._records.get((req.tenant_id, req.request_id))
        ticket = record.ticket if record and record.ticket else self._ticket(req, now, day, month)
        usages = []
        for sub in req.subjects:
            usages.append(self._usage(req.tenant_id, sub, now, ticket.day, ticket.month))
        if record is not None:  # a retried admission: already counted, count nothing again
            return decide(req, now=now, usages=usages, failures=(), ticket=ticket, consumed=False)
        micro = to_micro(req.cost_usd)
        failures = self._failures(req, usages, now, micro)
        if not failures:
            self._consume(req, ticket, now, micro)
        return decide(req, now=now, usages=usages, failures=failures, ticket=ticket, consumed=not failures)

    @staticmethod
    def _ticket(req: AdmissionRequest, now: float, day: str, month: str) -> Ticket:
        return Ticket(tenant_id=req.tenant_id, request_id=req.request_id, subjects=req.subjects, tokens=req.tokens,
                      cost_usd=req.cost_usd, day=day, month=month, bucket_s=math.floor(now), lease_s=req.lease_s)

    def _usage(self, tenant_id: str, sub: Subject, now: float, day: str, month: str) -> Usage:
        u = Usage()
        level, sid = sub.level, sub.id
        window = self._windows.get((tenant_id, level, sid))
        if window is not None:
            window.prune(now=now, horizon_s=self._horizon)
            window.fill(now, u)
        counters = self._budgets.get((tenant_id, level, sid, day))
        if counters is not None:
            u.day_tokens = counters[0]
        counters = self._budgets.get((tenant_id, level, sid, month))
        if counters is not None:
            u.month_tokens, u.month_micro = counters
        return u

    def _budget(self, tenant_id: str, sub: Subject, period: str) -> list[int]:
        return self._budgets.get((tenant_id, sub.level, sub.id, period), [0, 0])

    def _failures(self, req: AdmissionRequest, usages: list[Usage], now: float, micro: int) -> list[Failure]:
        out: list[Failure] = []
        for i, (sub, u) in enumerate(zip(req.subjects, usages, strict=True)):
            for dim in limits_fail(sub, u, tokens=req.tokens, micro=micro):
                retry_at = None
                if dim in ("rpm", "tpm"):
                    window = self._windows.get((req.tenant_id, sub.level, sub.id)) or _Window()
                    used, need, limit = (u.requests, 1, sub.limits.rpm) if dim == "rpm" else \
                        (u.tokens, req.tokens, sub.limits.tpm)  # fmt: skip
                    column = window.counted(now, 0 if dim == "rpm" else 1)
                    retry_at = window_retry_at(column, used=used, need=need, limit=limit or 0)
                out.append(Failure(i, dim, retry_at))
        return out

    def _consume(self, req: AdmissionRequest, ticket: Ticket, now: float, micro: int) -> None:
        tenant_id, tokens = req.tenant_id, req.tokens
        windows, budgets = self._windows, self._budgets
        for sub in req.subjects:
            lim, level, sid = sub.limits, sub.level, sub.id
            if lim.windowed or lim.max_concurrency is not None:
                window = windows.get((tenant_id, level, sid))
                if window is None:
                    window = windows[(tenant_id, level, sid)] = _Window()
                if lim.windowed:
                    window.add_request(ticket.bucket_s, tokens)
                if lim.max_concurrency is not None:
                    window.slots[req.request_id] = now + req.lease_s
            for period in (ticket.day, ticket.month):
                counters = budgets.get((tenant_id, level, sid, period))
                if counters is None:
                    budgets[(tenant_id, level, sid, period)] = [tokens, micro]
                else:
                    counters[0] += tokens
                    counters[1] += micro
        self._records[(req.tenant_id, req.request_id)] = _Record(
            reserved=req.tokens, reserved_micro=micro, charged=req.tokens, charged_micro=micro,
            in_bucket=req.tokens, expires=now + req.lease_s + self._record_ttl, ticket=ticket)  # fmt: skip

    # ------------------------------------------------------------------------------------------------ settlement
    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: float, final: bool, now: float) -> SettleResult:
        if tokens < 0 or cost_usd < 0:
            raise ValueError("tokens and cost_usd must be >= 0")
        return self._settle(ticket, tokens, to_micro(cost_usd), _FINAL if final else _PARTIAL, now)

    async def release(self, ticket: Ticket, *, now: float) -> None:
        self._settle(ticket, 0, 0, _RELEASE, now)

    def _settle(self, ticket: Ticket, tokens: int, micro: int, mode: int, now: float) -> SettleResult:
        if ticket.degraded:
            return SettleResult(budget_exhausted=False, degraded=True)
        rec = self._records.get((ticket.tenant_id, ticket.request_id)) or self._assumed_record(ticket)
        if rec.done:
            return self._headroom(ticket, 0, 0, duplicate=True)
        target, rec.actual = settle_targets(mode=mode, reserved=rec.reserved, actual_before=rec.actual,
                                            reported=tokens)  # fmt: skip
        target_micro, rec.actual_micro = settle_targets(mode=mode, reserved=rec.reserved_micro,
                                                        actual_before=rec.actual_micro, reported=micro)  # fmt: skip
        delta, delta_micro = target - rec.charged, target_micro - rec.charged_micro
        refund = min(-delta, rec.in_bucket) if delta < 0 else 0
        rec.in_bucket -= refund
        # every level's [day, month] counters, as _apply left them, for the headroom that follows
        counters = [self._apply(ticket, sub, delta, delta_micro, refund, mode, now) for sub in ticket.subjects]
        rec.charged, rec.charged_micro = target, target_micro
        rec.done = mode != _PARTIAL
        rec.expires = now + ticket.lease_s + self._record_ttl
        extra, extra_micro = target - rec.actual, target_micro - rec.actual_micro
        tok: list[int] = []
        usd: list[int] = []
        for sub, (day, month) in zip(ticket.subjects, counters, strict=True):
            _add_headroom(sub.limits, day, month, extra, extra_micro, tok, usd)
        return settled(tok, usd, duplicate=False)

    def _assumed_record(self, ticket: Ticket) -> _Record:
        """A ticket whose record is gone (expired, or another store instance): assume its reservation stands."""
        micro = to_micro(ticket.cost_usd)
        rec = _Record(reserved=ticket.tokens, reserved_micro=micro, charged=ticket.tokens, charged_micro=micro,
                      in_bucket=ticket.tokens, ticket=ticket)  # fmt: skip
        self._records[(ticket.tenant_id, ticket.request_id)] = rec
        return rec

    def _apply(self, ticket: Ticket, sub: Subject, delta: int, delta_micro: int, refund: int, mode: int,
               now: float) -> tuple[list[int], list[int]]:  # fmt: skip
        """Applies a settle to one level; returns its day and month counters."""
        tenant_id, level, sid = ticket.tenant_id, sub.level, sub.id
        window = self._windows.get((tenant_id, level, sid))
        if sub.limits.windowed:
            if delta > 0:
                if window is None:
                    window = self._windows[(tenant_id, level, sid)] = _Window()
                window.add_tokens(math.floor(now), delta)
            elif refund and window is not None:
                window.refund(ticket.bucket_s, refund)
        if window is not None and window.slots:
            expiry = window.slots.get(ticket.request_id)
            if expiry is not None:
                if mode != _PARTIAL:
                    del window.slots[ticket.request_id]
                elif expiry > now:  # a lease renews while live; an expired one stays expired
                    window.slots[ticket.request_id] = now + ticket.lease_s
        budgets = self._budgets
        out = []
        for period in (ticket.day, ticket.month):
            counters = budgets.get((tenant_id, level, sid, period))
            if counters is None:
                counters = budgets[(tenant_id, level, sid, period)] = [0, 0]
            # max(0, ...) as a conditional: the same value, without a builtin call
            tokens, micro = counters[0] + delta, counters[1] + delta_micro
            counters[0] = tokens if tokens > 0 else 0
            counters[1] = micro if micro > 0 else 0
            out.append(counters)
        return out[0], out[1]

    def _headroom(self, ticket: Ticket, extra: int, extra_micro: int, *, duplicate: bool) -> SettleResult:
        tok: list[int] = []
        usd: list[int] = []
        for sub in ticket.subjects:
            day = self._budget(ticket.tenant_id, sub, ticket.day)
            month = self._budget(ticket.tenant_id, sub, ticket.month)
            _add_headroom(sub.limits, day, month, extra, extra_micro, tok, usd)
        return settled(tok, usd, duplicate=duplicate)

    # ------------------------------------------------------------------------------------------------ seeding, reads
    async def seed_usage(self, *, tenant_id: str, level: Level, subject_id: str, period: str, tokens: int,
                         cost_usd: float) -> None:  # fmt: skip
        counters = self._budgets.setdefault((tenant_id, level, subject_id, check_period(period)), [0, 0])
        counters[0] = max(counters[0], tokens)
        counters[1] = max(counters[1], to_micro(cost_usd))

    async def snapshot(self, *, tenant_id: str, subject: Subject, now: float) -> dict[str, Any]:
        day, month = periods(now)
        u = self._usage(tenant_id, subject, now, day, month)
        return usage_dict(u, day=day, month=month)

    def _maybe_sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        for key, window in list(self._windows.items()):
            window.prune(now=now, horizon_s=self._horizon, full=True)
            if not window.buckets and not window.slots:
                del self._windows[key]
        for bkey in [k for k in self._budgets if period_end(k[3]) + 86_400 < now]:
            del self._budgets[bkey]
        for rkey in [k for k, r in self._records.items() if r.expires < now]:
            del self._records[rkey]



def _add_headroom(lim: Limits, day: list[int], month: list[int], extra: int, extra_micro: int, tok: list[int],
                  usd: list[int]) -> None:  # fmt: skip
    """Appends one level's headroom (what the request may still use under a budget: the budget's remainder plus its
    own unused reservation) under each of its token budgets to ``tok``, and under its cost budget to ``usd``."""
    if lim.daily_token_budget is not None:
        tok.append(lim.daily_token_budget - day[0] + extra)
    if lim.monthly_token_budget is not None:
        tok.append(lim.monthly_token_budget - month[0] + extra)
    if lim.cost_micro is not None:
        usd.append(lim.cost_micro - month[1] + extra_micro)
