"""The rules both stores share, outside any storage: budget periods, when a refused request may retry, which
refusal is reported, the rate headers, and the messages.

A store does the part that must be atomic (read every level's usage, check, consume) and reports what it read as
:class:`Usage` per subject plus the :class:`Failure` list; :func:`decide` turns that into the :class:`Decision`.
Keeping this here means the memory store and the Redis Lua script cannot drift apart on anything but the atomic
core, which the contract suite runs against both.

Rolling windows. rpm and tpm count per-second buckets: the window at time ``now`` counts every bucket whose second
is ``>= floor(now) - 60`` (61 buckets, plus any "future" bucket written by a replica whose clock runs ahead). An
event at time ``t`` lies in bucket ``floor(t)``; every event an exact sliding log would count, ``t > now - 60``, has
``floor(t) >= floor(now) - 60``, so the buckets are never more permissive than the exact log; they are stricter by
at most one second (events in ``[floor(now) - 60, now - 60]`` still count). A bucket leaves the window at
``second + 61``. A token bucket was rejected: refilled continuously, it admits up to twice the limit within 60 s.
"""

from __future__ import annotations

import calendar
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenantlm.admission.models import (
    BUDGETS,
    MICRO,
    AdmissionRequest,
    Decision,
    Dimension,
    RateStatus,
    SettleResult,
    Subject,
    Ticket,
    format_duration,
    to_micro,
)

WINDOW_S = 60
BUCKET_LIFE_S = WINDOW_S + 1  # a bucket counts until its second + 61
CONCURRENCY_RETRY_S = 1.0  # a slot frees whenever any in-flight request ends: no better estimate exists
MONTH_TTL_S = 35 * 86_400  # a month's budget counters (day fields included) outlive it, then expire on their own
DIMENSIONS: tuple[Dimension, ...] = ("rpm", "tpm", "max_concurrency", "daily_token_budget", "monthly_token_budget",
                                     "monthly_cost_budget_usd")  # fmt: skip
_LEVEL_NAMES = {"key": "API key", "end_user": "end user", "tenant": "tenant"}
_LABELS = {"rpm": "requests per minute", "tpm": "tokens per minute", "max_concurrency": "concurrent requests",
           "daily_token_budget": "daily token budget", "monthly_token_budget": "monthly token budget",
           "monthly_cost_budget_usd": "monthly cost budget"}  # fmt: skip


@dataclass(slots=True, kw_only=True)
class Usage:
    """What one subject had used when the request was checked (before it was consumed)."""

    requests: int = 0  # in the rolling window
    tokens: int = 0
    newest_request_s: int | None = None  # newest non-empty bucket (the window is empty at its second + 61)
    newest_token_s: int | None = None
    in_flight: int = 0
    day_tokens: int = 0
    month_tokens: int = 0
    month_micro: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """A dimension that refused. ``retry_at`` (epoch seconds) is set by the store for rpm/tpm, from its buckets."""

    index: int  # into AdmissionRequest.subjects
    dimension: Dimension
    retry_at: float | None = None


def periods(now: float) -> tuple[str, str]:
    """The UTC day and calendar-month budget periods of ``now``: ("d:2026-11-23", "m:2026-11")."""
    return _periods_of_second(math.floor(now))


@functools.lru_cache(maxsize=8)  # called on every admission: the same second's answer is reused
def _periods_of_second(second: int) -> tuple[str, str]:
    t = time.gmtime(second)
    return f"d:{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", f"m:{t.tm_year:04d}-{t.tm_mon:02d}"


def period_end(period: str) -> float:
    """When the period ends (the next one starts), in epoch seconds. Raises ValueError on a malformed period."""
    kind, _, rest = period.partition(":")
    parts = [int(p) for p in rest.split("-")]
    if kind == "d" and len(parts) == 3:
        return calendar.timegm((parts[0], parts[1], parts[2], 0, 0, 0)) + 86_400.0
    if kind == "m" and len(parts) == 2:
        year, month = (parts[0] + 1, 1) if parts[1] == 12 else (parts[0], parts[1] + 1)
        return float(calendar.timegm((year, month, 1, 0, 0, 0)))
    raise ValueError(f"bad period {period!r}; expected 'd:YYYY-MM-DD' or 'm:YYYY-MM'")


def check_period(period: str) -> str:
    """Validates a period string (the canonical form `periods` produces) and returns it."""
    end = period_end(period)
    canonical = periods(end - 1)[0 if period.startswith("d:") else 1]
    if canonical != period:
        raise ValueError(f"bad period {period!r}; expected {canonical!r}")
    return period


def window_retry_at(buckets: Mapping[int, int], *, used: int, need: int, limit: int) -> float | None:
    """When ``need`` more fits under ``limit``, as buckets leave the window oldest first (None: it never fits)."""
    if need > limit:
        return None
    left = used
    for second in sorted(buckets):
        left -= buckets[second]
        if left + need <= limit:
            return float(second + BUCKET_LIFE_S)
    return None


def limits_fail(sub: Subject, u: Usage, *, tokens: int, micro: int) -> list[Dimension]:
    """The dimensions of one subject that the request would overflow (window retry times are the store's part)."""
    lim, out = sub.limits, list[Dimension]()
    if lim.rpm is not None and u.requests + 1 > lim.rpm:
        out.append("rpm")
    if lim.tpm is not None and u.tokens + tokens > lim.tpm:
        out.append("tpm")
    if lim.max_concurrency is not None and u.in_flight + 1 > lim.max_concurrency:
        out.append("max_concurrency")
    if lim.daily_token_budget is not None and u.day_tokens + tokens > lim.daily_token_budget:
        out.append("daily_token_budget")
    if lim.monthly_token_budget is not None and u.month_tokens + tokens > lim.monthly_token_budget:
        out.append("monthly_token_budget")
    if lim.cost_micro is not None and u.month_micro + micro > lim.cost_micro:
        out.append("monthly_cost_budget_usd")
    return out


def decide(req: AdmissionRequest, *, now: float, usages: Sequence[Usage], failures: Sequence[Failure],
           ticket: Ticket, consumed: bool) -> Decision:  # fmt: skip
    """The Decision for what a store read and found. ``consumed``: the request was counted (for the headers)."""
    requests, tokens = rate_statuses(req, usages, now=now, consumed=consumed)
    if not failures:
        return Decision(admitted=True, ticket=ticket, requests=requests, tokens=tokens)
    waits = [_retry_after(req, f, ticket, now) for f in failures]
    order = [math.inf if w is None else w for w in waits]
    # A budget refusal wins: retrying in seconds will not help, and the caller must see insufficient_quota.
    pool = [i for i, f in enumerate(failures) if f.dimension in BUDGETS] or list(range(len(failures)))
    chosen = max(pool, key=lambda i: order[i])
    known = [w for w in waits if w is not None]
    retry_after = None if len(known) < len(waits) else max(known)
    f = failures[chosen]
    sub = req.subjects[f.index]
    return Decision(
        admitted=False,
        code="insufficient_quota" if f.dimension in BUDGETS else "rate_limit_exceeded",
        level=sub.level,
        dimension=f.dimension,
        message=_message(req, sub, f.dimension, usages[f.index], retry_after),
        retry_after_s=retry_after,
        requests=requests,
        tokens=tokens,
    )


def _retry_after(req: AdmissionRequest, f: Failure, ticket: Ticket, now: float) -> float | None:
    lim = req.subjects[f.index].limits
    if f.dimension in ("rpm", "tpm"):
        return None if f.retry_at is None else max(0.001, f.retry_at - now)
    if f.dimension == "max_concurrency":
        return None if lim.max_concurrency == 0 else CONCURRENCY_RETRY_S
    if f.dimension == "daily_token_budget":
        too_big = req.tokens > (lim.daily_token_budget or 0)
        return None if too_big else period_end(ticket.day) - now
    if f.dimension == "monthly_token_budget":
        too_big = req.tokens > (lim.monthly_token_budget or 0)
    else:
        too_big = to_micro(req.cost_usd) > to_micro(lim.monthly_cost_budget_usd or 0.0)
    return None if too_big else period_end(ticket.month) - now


def rate_statuses(req: AdmissionRequest, usages: Sequence[Usage], *, now: float,
                  consumed: bool) -> tuple[RateStatus | None, RateStatus | None]:  # fmt: skip
    """The requests and tokens windows of the most constrained level (least remaining, then smallest limit; the
    first such level on a tie)."""
    second = math.floor(now)
    need_requests, need_tokens = (1, req.tokens) if consumed else (0, 0)
    # the tightest row so far of each window: (remaining, limit, newest bucket); a RateStatus is built for the
    # chosen ones only
    req_row: tuple[int, int, int | None] | None = None
    tok_row: tuple[int, int, int | None] | None = None
    for sub, u in zip(req.subjects, usages, strict=True):
        lim = sub.limits
        if lim.rpm is not None:
            row = _row(lim.rpm, u.requests, u.newest_request_s, need_requests, second)
            if req_row is None or row[:2] < req_row[:2]:
                req_row = row
        if lim.tpm is not None:
            row = _row(lim.tpm, u.tokens, u.newest_token_s, need_tokens, second)
            if tok_row is None or row[:2] < tok_row[:2]:
                tok_row = row
    return _status(req_row, now), _status(tok_row, now)


def _row(limit: int, used: int, newest: int | None, need: int, second: int) -> tuple[int, int, int | None]:
    if need > 0 and (newest is None or second > newest):
        newest = second  # this request's bucket is now the newest
    remaining = limit - used - need
    return (remaining if remaining > 0 else 0), limit, newest


def _status(row: tuple[int, int, int | None] | None, now: float) -> RateStatus | None:
    if row is None:
        return None
    remaining, limit, newest = row
    reset = 0.0 if newest is None else newest + BUCKET_LIFE_S - now
    return RateStatus(limit=limit, remaining=remaining, reset_s=reset if reset > 0.0 else 0.0)


def _message(req: AdmissionRequest, sub: Subject, dim: Dimension, u: Usage, retry_after: float | None) -> str:
    """A message for the caller: which limit, on which level, the numbers; never an id or a secret."""
    where = f"the {_LABELS[dim]} of this {_LEVEL_NAMES[sub.level]}"
    limit = getattr(sub.limits, dim)
    used, requested = _numbers(req, dim, u)
    if dim == "monthly_cost_budget_usd":
        numbers = f"limit ${limit:.2f}, used ${used / MICRO:.2f}, requested ${requested / MICRO:.4f}"
    else:
        numbers = f"limit {limit}, used {used}, requested {requested}"
    if retry_after is None:
        return f"Request too large for {where} ({numbers}); it can never be admitted. Reduce max_tokens or the input."
    lead = "You exceeded" if dim in BUDGETS else "Rate limit reached for"
    when = "It resets in" if dim in BUDGETS else "Please try again in"
    return f"{lead} {where} ({numbers}). {when} {format_duration(retry_after)}."


def _numbers(req: AdmissionRequest, dim: Dimension, u: Usage) -> tuple[int, int]:
    return {
        "rpm": (u.requests, 1),
        "tpm": (u.tokens, req.tokens),
        "max_concurrency": (u.in_flight, 1),
        "daily_token_budget": (u.day_tokens, req.tokens),
        "monthly_token_budget": (u.month_tokens, req.tokens),
        "monthly_cost_budget_usd": (u.month_micro, to_micro(req.cost_usd)),
    }[dim]


def settle_targets(*, mode: int, reserved: int, actual_before: int, reported: int) -> tuple[int, int]:
    """(amount to hold charged, actual so far) after a settle. Modes: 0 streaming, 1 final, 2 release.

    Streaming keeps the whole reservation charged until the end and charges beyond it as soon as actual usage
    exceeds it; a cumulative figure lower than one already reported is ignored (settles may arrive out of order).
    Final replaces the charge with the reported actual. Release charges what was reported before it (0 when the
    request failed before any usage).
    """
    if mode == 0:
        actual = max(actual_before, reported)
        return max(reserved, actual), actual
    actual = reported if mode == 1 else actual_before
    return actual, actual


def settled(tok: list[int], usd: list[int], *, duplicate: bool) -> SettleResult:
    """A SettleResult from the headrooms of every token and cost budget of the ticket's levels."""
    least_tok = min(tok) if tok else None
    least_usd = min(usd) if usd else None
    exhausted = (least_tok is not None and least_tok <= 0) or (least_usd is not None and least_usd <= 0)
    return SettleResult(budget_exhausted=exhausted,
                        remaining_tokens=None if least_tok is None else max(0, least_tok),
                        remaining_cost_usd=None if least_usd is None else max(0, least_usd) / MICRO,
                        duplicate=duplicate)  # fmt: skip


def usage_dict(u: Usage, *, day: str, month: str) -> dict[str, Any]:
    """The snapshot shape both stores return."""
    return {"requests": u.requests, "tokens": u.tokens, "in_flight": u.in_flight, "day": day,
            "daily_tokens": u.day_tokens, "month": month, "monthly_tokens": u.month_tokens,
            "monthly_cost_usd": u.month_micro / MICRO}  # fmt: skip
