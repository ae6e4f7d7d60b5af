"""The Redis LimitStore: exact limits for any number of replicas sharing one Redis.

One admission is one EVALSHA of :data:`.redis_lua.ADMIT` (reads every level, checks every dimension, consumes all
or nothing, atomically inside Redis); one settle or release is one EVALSHA of ``SETTLE``. The scripts are registered
with redis-py (``register_script``), which answers NOSCRIPT (Redis restarted or flushed its scripts) with SCRIPT LOAD
and sends the EVALSHA once more. Both scripts are idempotent per request id, so a client library retrying after a
lost reply is safe.

Keys: ``{prefix}{{tenant_id}}:w|c:{level}:{id}`` (window, slots; ``prefix_of(tenant_id)``, when given and not None,
replaces ``prefix`` for that tenant: a silo tenant's own prefix), ``...:b:{level}:{id}:m:YYYY-MM`` (the month's
budget counters, with one field per day for the daily budget), ``...:r:{request_id}`` (the reservation record).
Every key has a TTL, so nothing outlives its use.

Clocks. By default the caller's ``now`` is used (the same clock as the memory store; tests inject it). Replicas'
clocks may disagree by up to ``max_clock_skew_s`` without any over-admission: buckets are pruned only past the
window plus that margin, and every check counts "future" buckets written by a replica that runs ahead. With
``server_time=True`` the scripts read Redis' own TIME instead, and skew does not matter at all (budget periods are
still named from the caller's clock).

Redis unreachable: ``fail_open=False`` (the default) makes ``admit`` raise :class:`AdmissionUnavailable` (503);
``fail_open=True`` admits with ``degraded=True`` and logs a warning at most once per 10 s. ``settle``/``release``
failures are logged and never raised: the request has already been served, and the ledger is the bill.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Self

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from tenantlm.admission import redis_lua
from tenantlm.admission.models import (
    AdmissionRequest,
    AdmissionUnavailable,
    Decision,
    Level,
    SettleResult,
    Subject,
    Ticket,
    to_micro,
)
from tenantlm.admission.rules import (
    DIMENSIONS,
    MONTH_TTL_S,
    Failure,
    Usage,
    check_period,
    decide,
    periods,
    settled,
    usage_dict,
)

log = logging.getLogger(__name__)
UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ReadOnlyError,
               redis_errors.OutOfMemoryError)  # can neither read nor write: the same as unreachable
_WARN_EVERY_S = 10.0
_USAGE_FIELDS = 8  # per subject in ADMIT's reply


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisLimitStore:
    """LimitStore on one Redis (see the module docstring for keys, clocks and failure behaviour)."""

    def __init__(self, client: Redis, *, prefix: str = "tlm:", fail_open: bool = False, server_time: bool = False,
                 max_clock_skew_s: float = 5.0, record_ttl_s: float = 86_400.0,
                 prefix_of: Callable[[str], str | None] | None = None) -> None:  # fmt: skip
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces (the tenant id is the key's hash tag)")
        self._client = client
        self._prefix = prefix
        self._prefix_of = prefix_of
        self._fail_open = fail_open
        self._server_time = server_time
        self._margin = max_clock_skew_s
        self._record_ttl = record_ttl_s
        self._last_warning = -math.inf
        self._admit_script = client.register_script(redis_lua.ADMIT)
        self._settle_script = client.register_script(redis_lua.SETTLE)
        self._seed_script = client.register_script(redis_lua.SEED)

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 64, **kw: Any) -> Self:
        """A store with its own client: a blocking pool (a burst waits for a connection instead of failing), short
        timeouts and two quick retries (safe: both scripts are idempotent), so an outage fails fast."""
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=2.0, socket_timeout=2.0,
                                               socket_connect_timeout=1.0,
                                               retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2))  # fmt: skip
        return cls(Redis.from_pool(pool), **kw)

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------------------------------------ keys
    def _key(self, tenant_id: str, *parts: str) -> str:
        if "{" in tenant_id or "}" in tenant_id:
            raise ValueError("tenant_id must not contain braces")
        prefix = (self._prefix_of(tenant_id) if self._prefix_of is not None else None) or self._prefix
        return f"{prefix}{{{tenant_id}}}:" + ":".join(parts)

    def _subject_keys(self, tenant_id: str, subjects: Sequence[Subject], month: str) -> list[str]:
        """Three keys per subject: window, slots, and the month's budget hash (which holds the day fields too)."""
        keys: list[str] = []
        for sub in subjects:
            keys += [self._key(tenant_id, "w", sub.level, sub.id), self._key(tenant_id, "c", sub.level, sub.id),
                     self._key(tenant_id, "b", sub.level, sub.id, month)]  # fmt: skip
        return keys

    def _now_arg(self, now: float) -> str:
        return "-1" if self._server_time else repr(float(now))

    # ------------------------------------------------------------------------------------------------ admission
    async def admit(self, req: AdmissionRequest, *, now: float) -> Decision:
        day, month = periods(now)
        keys = [self._key(req.tenant_id, "r", req.request_id),
                *self._subject_keys(req.tenant_id, req.subjects, month)]  # fmt: skip
        args: list[str | int | float] = [self._now_arg(now), req.tokens, to_micro(req.cost_usd), req.lease_s,
                                         req.request_id, self._margin, self._record_ttl, MONTH_TTL_S, day,
                                         month]  # fmt: skip
        for sub in req.subjects:
            lim = sub.limits
            args += [_limit(lim.rpm), _limit(lim.tpm), _limit(lim.max_concurrency), _limit(lim.daily_token_budget),
                     _limit(lim.monthly_token_budget), _limit(lim.cost_micro)]  # fmt: skip
        try:
            reply = await self._admit_script(keys, args)
        except UNAVAILABLE as e:
            return self._unavailable(req, now, day, month, e)
        return self._decision(req, reply)

    def _decision(self, req: AdmissionRequest, reply: list[Any]) -> Decision:
        status, now, bucket_s = int(reply[0]), float(_text(reply[1])), int(reply[2])
        ticket = Ticket(tenant_id=req.tenant_id, request_id=req.request_id, subjects=req.subjects, tokens=req.tokens,
                        cost_usd=req.cost_usd, day=_text(reply[3]), month=_text(reply[4]), bucket_s=bucket_s,
                        lease_s=req.lease_s)  # fmt: skip
        usages = [_usage(reply, 5 + i * _USAGE_FIELDS) for i in range(len(req.subjects))]
        at = 5 + len(req.subjects) * _USAGE_FIELDS
        raw = [int(v) for v in reply[at + 1: at + 1 + 3 * int(reply[at])]]
        failures = [Failure(raw[j] - 1, DIMENSIONS[raw[j + 1] - 1], None if raw[j + 2] < 0 else float(raw[j + 2]))
                    for j in range(0, len(raw), 3)]  # fmt: skip
        return decide(req, now=now, usages=usages, failures=failures, ticket=ticket,
                      consumed=status == 1 and not failures)  # fmt: skip

    def _unavailable(self, req: AdmissionRequest, now: float, day: str, month: str, error: Exception) -> Decision:
        if not self._fail_open:
            raise AdmissionUnavailable() from error
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("limit store unreachable; admitting without limits (fail_open): %s", type(error).__name__,
                        extra={"tenant_id": req.tenant_id})  # fmt: skip
        ticket = Ticket(tenant_id=req.tenant_id, request_id=req.request_id, subjects=req.subjects, tokens=req.tokens,
                        cost_usd=req.cost_usd, day=day, month=month, bucket_s=math.floor(now), lease_s=req.lease_s,
                        degraded=True)  # fmt: skip
        return Decision(admitted=True, ticket=ticket, degraded=True)

    # ------------------------------------------------------------------------------------------------ settlement
    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: float, final: bool, now: float) -> SettleResult:
        if tokens < 0 or cost_usd < 0:
            raise ValueError("tokens and cost_usd must be >= 0")
        return await self._settle(ticket, tokens, to_micro(cost_usd), 1 if final else 0, now)

    async def release(self, ticket: Ticket, *, now: float) -> None:
        await self._settle(ticket, 0, 0, 2, now)

    async def _settle(self, ticket: Ticket, tokens: int, micro: int, mode: int, now: float) -> SettleResult:
        if ticket.degraded:
            return SettleResult(budget_exhausted=False, degraded=True)
        keys = [self._key(ticket.tenant_id, "r", ticket.request_id),
                *self._subject_keys(ticket.tenant_id, ticket.subjects, ticket.month)]  # fmt: skip
        args: list[str | int | float] = [self._now_arg(now), tokens, micro, mode, ticket.lease_s, ticket.request_id,
                                         self._record_ttl, MONTH_TTL_S, ticket.tokens, to_micro(ticket.cost_usd),
                                         ticket.bucket_s, self._margin, ticket.day]  # fmt: skip
        for sub in ticket.subjects:
            lim = sub.limits
            args += [int(lim.windowed), int(lim.max_concurrency is not None), _limit(lim.daily_token_budget),
                     _limit(lim.monthly_token_budget), _limit(lim.cost_micro)]  # fmt: skip
        try:
            reply = await self._settle_script(keys, args)
        except Exception:  # the request was served; never fail it here (the ledger still bills it)
            log.warning("limit store settle failed (mode %d)", mode, exc_info=True,
                        extra={"tenant_id": ticket.tenant_id})  # fmt: skip
            return SettleResult(budget_exhausted=False, degraded=True)
        values = [int(v) for v in reply]  # applied, then per subject (flag, headroom) x (day, month, cost)
        tok = [values[j + 1] for j in range(1, len(values), 6) if values[j]] + \
              [values[j + 3] for j in range(1, len(values), 6) if values[j + 2]]  # fmt: skip
        usd = [values[j + 5] for j in range(1, len(values), 6) if values[j + 4]]
        return settled(tok, usd, duplicate=values[0] == 0)

    # ------------------------------------------------------------------------------------------------ seeding, reads
    async def seed_usage(self, *, tenant_id: str, level: Level, subject_id: str, period: str, tokens: int,
                         cost_usd: float) -> None:  # fmt: skip
        is_day = check_period(period).startswith("d:")
        month = "m:" + period[2:9]
        key = self._key(tenant_id, "b", level, subject_id, month)
        await self._seed_script([key], [period if is_day else "tok", tokens,
                                        -1 if is_day else to_micro(cost_usd), MONTH_TTL_S])  # fmt: skip

    async def snapshot(self, *, tenant_id: str, subject: Subject, now: float) -> dict[str, Any]:
        """A read-only view (a pipeline, not a script): fine for GET /limits, not used to decide anything."""
        day, month = periods(now)
        window, slots, budget = self._subject_keys(tenant_id, [subject], month)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(window)
            pipe.zcount(slots, f"({now!r}", "+inf")
            pipe.hmget(budget, ["tok", "usd", day])
            flat, in_flight, (month_tok, month_usd, day_tok) = await pipe.execute()
        u = Usage(in_flight=int(in_flight), day_tokens=int(day_tok or 0), month_tokens=int(month_tok or 0),
                  month_micro=int(month_usd or 0))  # fmt: skip
        start = math.floor(now) - 60
        for field, value in flat.items():
            name = _text(field)
            if name[0] in "rt" and name[1:].isdigit() and int(name[1:]) >= start:
                if name[0] == "r":
                    u.requests += int(value)
                else:
                    u.tokens += int(value)
        return usage_dict(u, day=day, month=month)


def _usage(reply: list[Any], at: int) -> Usage:
    v = [int(x) for x in reply[at: at + _USAGE_FIELDS]]
    return Usage(requests=v[0], tokens=v[1], newest_request_s=None if v[2] < 0 else v[2],
                 newest_token_s=None if v[3] < 0 else v[3], in_flight=v[4], day_tokens=v[5], month_tokens=v[6],
                 month_micro=v[7])  # fmt: skip
