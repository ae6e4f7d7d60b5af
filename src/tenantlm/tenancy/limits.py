"""Plans and limits: what a tenant, one of its keys or one of its end users may consume.

A tenant's effective limits are its plan's limits overlaid field by field with the tenant's overrides (an override
of ``null`` means "unlimited", an absent field means "as the plan says"). Keys and end users carry *sub-limits*: they
can only narrow what the tenant has, never widen it, because admission checks every level together.

Every limit is optional; ``None`` is unlimited. Budgets count tokens per UTC day / calendar month and cost in USD per
calendar month. ``weight`` is the tenant's share in the fair scheduler (2 = twice the service of weight 1 when both
are backlogged); ``priority`` is a strict class (higher first); ``max_queue_wait_s`` bounds how long a request may
wait for capacity before it gets 429; ``default_max_tokens`` is what admission reserves for output when a request
names no ``max_tokens`` (it never rejects a request for lacking one). ``max_file_bytes`` bounds one uploaded file
and ``storage_bytes`` all of a tenant's files together.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from tenantlm.errors import InvalidRequest
from tenantlm.respcache.policy import CachePolicy, check_cache, plan_policy

DEFAULT_WEIGHT = 1.0
DEFAULT_QUEUE_WAIT_S = 30.0
DEFAULT_MAX_TOKENS = 1024
MAX_INT = 10**15
MIB, GIB = 1 << 20, 1 << 30


@dataclass(frozen=True, slots=True)
class SubLimits:
    """Limits that a key or an end user may be given, inside its tenant's."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    daily_token_budget: int | None = None
    monthly_token_budget: int | None = None
    monthly_cost_budget_usd: float | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(frozen=True, slots=True)
class TenantLimits:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    max_queue_wait_s: float = DEFAULT_QUEUE_WAIT_S
    daily_token_budget: int | None = None
    monthly_token_budget: int | None = None
    monthly_cost_budget_usd: float | None = None
    weight: float = DEFAULT_WEIGHT
    priority: int = 0
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_file_bytes: int | None = None  # one upload (/v1/files): over it, 413
    storage_bytes: int | None = None  # all of the tenant's files: over it, 429 insufficient_quota
    cache: CachePolicy | None = None  # the response cache's default for the plan's tenants (respcache.policy)

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def sub(self) -> SubLimits:
        return SubLimits(**{f.name: getattr(self, f.name) for f in fields(SubLimits)})


TENANT_FIELDS = frozenset(f.name for f in fields(TenantLimits))
SUB_FIELDS = frozenset(f.name for f in fields(SubLimits))
# Fields that cannot be "unlimited": null resets them to the default.
_NOT_NULL = {"max_queue_wait_s": DEFAULT_QUEUE_WAIT_S, "weight": DEFAULT_WEIGHT, "priority": 0,
             "default_max_tokens": DEFAULT_MAX_TOKENS}


def _check_value(name: str, value: Any, param: str) -> Any:
    if value is None:
        return None
    if name == "cache":
        return check_cache(value, param)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{param} must be a number or null", param=param)
    if name in {"monthly_cost_budget_usd", "max_queue_wait_s", "weight"}:
        low = 0.0 if name != "weight" else 0.001
        high = {"weight": 1000.0, "max_queue_wait_s": 3600.0}.get(name, 1e12)
        if not low <= value <= high:
            raise InvalidRequest(f"{param} must be between {low:g} and {high:g}", param=param)
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(f"{param} must be a whole number", param=param)
    low, high = (-10, 10) if name == "priority" else ((1, 1_000_000) if name == "default_max_tokens" else (0, MAX_INT))
    if not low <= value <= high:
        raise InvalidRequest(f"{param} must be between {low} and {high}", param=param)
    return int(value)


def check_overrides(body: Any, *, allowed: frozenset[str], param: str = "") -> dict[str, Any]:
    """Validate a JSON object of limit fields; returns the cleaned mapping (values may be None)."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"{param or 'the body'} must be a JSON object", param=param or None)
    out: dict[str, Any] = {}
    for name, value in body.items():
        where = f"{param}.{name}" if param else name
        if name not in allowed:
            raise InvalidRequest(f"unknown limit {where!r}; known: {', '.join(sorted(allowed))}", param=where)
        out[name] = _check_value(name, value, where)
    return out


def tenant_limits(plan: dict[str, Any], overrides: dict[str, Any]) -> TenantLimits:
    """The effective limits: the plan's, then the tenant's overrides on top."""
    values = {k: v for k, v in {**plan, **overrides}.items() if k in TENANT_FIELDS}
    for name, default in _NOT_NULL.items():
        if values.get(name) is None:
            values[name] = default
    values["cache"] = plan_policy(values.get("cache"))
    return TenantLimits(**values)


def sub_limits(values: dict[str, Any] | None) -> SubLimits:
    return SubLimits(**{k: v for k, v in (values or {}).items() if k in SUB_FIELDS})


# Created at first start when absent; the operator edits them through the admin API (or declares others in YAML).
DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "free": {"description": "Evaluation: modest rates and a small monthly budget.",
             "limits": {"rpm": 60, "tpm": 60_000, "max_concurrency": 4, "max_queue_wait_s": 10.0,
                        "monthly_token_budget": 2_000_000, "monthly_cost_budget_usd": 5.0, "weight": 1.0,
                        "priority": 0, "default_max_tokens": 512, "max_file_bytes": 10 * MIB,
                        "storage_bytes": 100 * MIB}},
    "pro": {"description": "Production: higher rates, larger budget, four times the fair share of free.",
            "limits": {"rpm": 1_200, "tpm": 1_000_000, "max_concurrency": 32, "max_queue_wait_s": 30.0,
                       "monthly_token_budget": 200_000_000, "monthly_cost_budget_usd": 1_000.0, "weight": 4.0,
                       "priority": 0, "default_max_tokens": 1024, "max_file_bytes": 512 * MIB,
                       "storage_bytes": 10 * GIB}},
    "enterprise": {"description": "No budget caps; sixteen times the fair share of free.",
                   "limits": {"rpm": 12_000, "tpm": 10_000_000, "max_concurrency": 256, "max_queue_wait_s": 60.0,
                              "weight": 16.0, "priority": 0, "default_max_tokens": 2048,
                              "max_file_bytes": 512 * MIB, "storage_bytes": 100 * GIB}},
}
