"""Admission's data types: what is limited (Limits, Subject), what is asked (AdmissionRequest), what is answered
(Decision with its Ticket, SettleResult), and the errors a refusal or an unreachable store becomes.

Every type is a slotted dataclass with keyword-only fields, so nobody confuses ``tokens`` with ``cost_usd`` by
position. What is kept and handed back is frozen: Limits (cached and shared between requests), Subject and Ticket (a
Ticket handed back to ``settle`` cannot have been altered on the way). The question and the answers (AdmissionRequest,
Decision, RateStatus, SettleResult) are built on every request and used once by the caller; they are not frozen,
because a frozen dataclass stores each field through ``object.__setattr__``: freezing these four too cost 3.6 % more
instructions per chat request (``bench/instructions.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tenantlm.errors import RateLimited, ServiceUnavailable

Level = Literal["key", "end_user", "tenant"]
Dimension = Literal["rpm", "tpm", "max_concurrency", "daily_token_budget", "monthly_token_budget",
                    "monthly_cost_budget_usd"]  # fmt: skip
RefusalCode = Literal["rate_limit_exceeded", "insufficient_quota"]
BUDGETS: frozenset[str] = frozenset({"daily_token_budget", "monthly_token_budget", "monthly_cost_budget_usd"})
MICRO = 1_000_000  # cost is counted in integer micro-dollars: sums of floats drift, sums of ints do not


def to_micro(usd: float) -> int:
    """USD as integer micro-dollars (rounded to the nearest micro-dollar)."""
    return round(usd * MICRO)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one level may consume. ``None`` is unlimited, on every field."""

    rpm: int | None = None  # requests per rolling 60 s
    tpm: int | None = None  # tokens per rolling 60 s
    max_concurrency: int | None = None  # requests in flight
    daily_token_budget: int | None = None  # tokens per UTC day
    monthly_token_budget: int | None = None  # tokens per UTC calendar month
    monthly_cost_budget_usd: float | None = None
    # Derived in __post_init__, once rather than on every request (a level's Limits object is reused while its
    # limits stand). windowed: this level has a rolling-window limit (rpm or tpm), so its per-second buckets are kept
    windowed: bool = field(init=False, repr=False, compare=False)
    cost_micro: int | None = field(init=False, repr=False, compare=False)  # the cost budget in micro-dollars

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency", "daily_token_budget", "monthly_token_budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an int >= 0 or None, got {value!r}")
        cost = self.monthly_cost_budget_usd
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"monthly_cost_budget_usd must be a finite number >= 0 or None, got {cost!r}")
        object.__setattr__(self, "windowed", self.rpm is not None or self.tpm is not None)
        object.__setattr__(self, "cost_micro", None if cost is None else to_micro(cost))


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """One level that is limited. The caller builds the ids: a key id, ``f"{tenant_id}/{end_user}"``, a tenant id."""

    level: Level
    id: str
    limits: Limits


@dataclass(slots=True, kw_only=True)
class AdmissionRequest:
    """One request asking to be admitted. All subjects pass together or nothing is consumed."""

    tenant_id: str
    request_id: str  # unique per request; the reservation id
    subjects: tuple[Subject, ...]  # e.g. (key, end_user, tenant)
    tokens: int  # reserved estimate (prompt estimate + max_tokens)
    cost_usd: float  # reserved cost estimate
    lease_s: float = 600.0  # a concurrency slot not settled within this is reclaimed (crashed replica)

    def __post_init__(self) -> None:
        if not self.tenant_id or not self.request_id:
            raise ValueError("tenant_id and request_id must be non-empty")
        if self.tokens < 0 or not (math.isfinite(self.cost_usd) and self.cost_usd >= 0):
            raise ValueError("tokens and cost_usd must be >= 0")
        if not (math.isfinite(self.lease_s) and self.lease_s > 0):
            raise ValueError("lease_s must be > 0")
        seen: set[tuple[str, str]] = set()  # a loop: a comprehension would be a call
        for sub in self.subjects:
            name = (sub.level, sub.id)
            if name in seen:
                raise ValueError("a subject appears twice: it would be charged twice")
            seen.add(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """An admitted request's reservation: everything ``settle``/``release`` need to find what was charged.

    ``day``/``month`` are the budget periods charged ("d:2026-11-23", "m:2026-11"): a stream that crosses midnight
    is settled in the period it was admitted in. ``bucket_s`` is the second whose window bucket holds the reserved
    tokens. ``degraded`` tickets were admitted without the store (fail-open): settling them does nothing.
    """

    tenant_id: str
    request_id: str
    subjects: tuple[Subject, ...]
    tokens: int
    cost_usd: float
    day: str
    month: str
    bucket_s: int
    lease_s: float
    degraded: bool = False


@dataclass(slots=True, kw_only=True)
class RateStatus:
    """One rolling window as OpenAI's headers describe it: the limit, what is left, and the seconds until the
    window is back to its initial state (empty)."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True, kw_only=True)
class Decision:
    """The answer to an admission. Refusals name the level and dimension that refused and when to retry
    (``retry_after_s`` None: retrying cannot help, e.g. the request alone is larger than the limit)."""

    admitted: bool
    ticket: Ticket | None = None
    code: RefusalCode | None = None
    level: Level | None = None
    dimension: Dimension | None = None
    message: str = ""
    retry_after_s: float | None = None
    requests: RateStatus | None = None  # from the most constrained level with an rpm limit
    tokens: RateStatus | None = None  # from the most constrained level with a tpm limit
    degraded: bool = False  # admitted without the store (fail-open while it was unreachable)

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers; the requests or tokens trio is omitted when no level limits it."""
        out: dict[str, str] = {}
        requests, tokens = self.requests, self.tokens
        if requests is not None:
            out["x-ratelimit-limit-requests"] = str(requests.limit)
            out["x-ratelimit-remaining-requests"] = str(requests.remaining)
            out["x-ratelimit-reset-requests"] = format_duration(requests.reset_s)
        if tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(tokens.limit)
            out["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
            # both windows usually reset together (this request's bucket is the newest of both): format once
            same = requests is not None and requests.reset_s == tokens.reset_s
            out["x-ratelimit-reset-tokens"] = out["x-ratelimit-reset-requests"] if same else \
                format_duration(tokens.reset_s)  # fmt: skip
        return out

    def error(self) -> RateLimited:
        """The 429 this refusal becomes (``QuotaExceeded`` for budgets), with retry-after and the rate headers."""
        if self.admitted:
            raise ValueError("an admitted decision is not an error")
        cls = QuotaExceeded if self.code == "insufficient_quota" else RateLimited
        return cls(self.message, retry_after=self.retry_after_s, headers=self.headers())


@dataclass(slots=True, kw_only=True)
class SettleResult:
    """After a settle: whether a budget is used up for this request, and the smallest headroom left to it.

    ``remaining_tokens``/``remaining_cost_usd`` are what this request may still consume before some token/cost
    budget reaches zero (None: no such budget). ``duplicate``: the ticket was already finalized, nothing changed.
    ``degraded``: the store could not be reached; nothing was recorded.
    """

    budget_exhausted: bool
    remaining_tokens: int | None = None
    remaining_cost_usd: float | None = None
    duplicate: bool = False
    degraded: bool = False


class QuotaExceeded(RateLimited):
    """429 insufficient_quota: a token or cost budget is used up (OpenAI's type and code for it)."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class AdmissionUnavailable(ServiceUnavailable):
    """503: the limit store cannot be reached and the deployment fails closed (the default)."""

    def __init__(self, message: str = "Rate limiting is temporarily unavailable; please retry shortly.",
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(message, **kw)


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it (Go's style): "20ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms" if ms > 0 else "0ms"
    secs, frac = divmod(ms, 1000)
    # "1.5s", "1.25s", "1.125s": the milliseconds without trailing zeros (or no fraction at all)
    text = f"{secs % 60}.{frac:03d}".rstrip("0") if frac else str(secs % 60)
    if secs < 60:
        return f"{text}s"
    minutes = secs // 60
    if minutes < 60:
        return f"{minutes}m{text}s"
    return f"{minutes // 60}h{minutes % 60}m{text}s"

