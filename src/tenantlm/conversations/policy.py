"""The tenant settings of conversation memory, validated for ``PATCH /admin/v1/tenants/{id}`` (each 400 names its
``param``), and how the service reads them from a tenant's settings.

- ``memory``: ``{"policy": "window" | "summary", "long_term": false}``. ``window`` sends the most recent turns that fit
  the model's context; ``summary`` sends those too, preceded by a summary of the older ones written by the tenant's
  model. ``long_term`` opts the tenant into long-term memory per end user.
- ``conversation_retention_days``: conversations older than this many days are erased (0: kept).
- ``session_ttl_minutes``: a conversation idle this long ends as ``POST /v1/conversations/{id}/end`` ends it (0: off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tenantlm.errors import InvalidRequest

MEMORY = "memory"
RETENTION_DAYS = "conversation_retention_days"
SESSION_TTL = "session_ttl_minutes"
POLICIES = ("window", "summary")
MAX_RETENTION_DAYS = 36_500
MAX_SESSION_TTL_MINUTES = 525_600  # a year


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    policy: Literal["window", "summary"] = "window"
    long_term: bool = False


def check_memory(value: Any) -> dict[str, Any]:
    param = f"settings.{MEMORY}"
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param} must be an object like {{\"policy\": \"window\", \"long_term\": false}}",
                             param=param)
    for key in value:
        if key not in ("policy", "long_term"):
            raise InvalidRequest(f"unknown key {key!r} in {param}; known: long_term, policy", param=f"{param}.{key}")
    policy = value.get("policy", "window")
    if policy not in POLICIES:
        raise InvalidRequest(f"{param}.policy must be one of {', '.join(POLICIES)}", param=f"{param}.policy")
    long_term = value.get("long_term", False)
    if not isinstance(long_term, bool):
        raise InvalidRequest(f"{param}.long_term must be true or false", param=f"{param}.long_term")
    return {"policy": policy, "long_term": long_term}


def _whole_number(name: str, maximum: int, unit: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
            raise InvalidRequest(f"settings.{name} must be a whole number of {unit} from 0 (off) to {maximum}",
                                 param=f"settings.{name}")
        return value
    return check


check_retention_days = _whole_number(RETENTION_DAYS, MAX_RETENTION_DAYS, "days")
check_session_ttl = _whole_number(SESSION_TTL, MAX_SESSION_TTL_MINUTES, "minutes")

SETTINGS: dict[str, Callable[[Any], Any]] = {MEMORY: check_memory, RETENTION_DAYS: check_retention_days,
                                             SESSION_TTL: check_session_ttl}


def memory_policy(settings: Mapping[str, Any]) -> MemoryPolicy:
    value = settings.get(MEMORY) or {}
    return MemoryPolicy(policy="summary" if value.get("policy") == "summary" else "window",
                        long_term=bool(value.get("long_term", False)))


def retention_days(settings: Mapping[str, Any]) -> int:
    return int(settings.get(RETENTION_DAYS) or 0)


def session_ttl_minutes(settings: Mapping[str, Any]) -> int:
    return int(settings.get(SESSION_TTL) or 0)
