"""What a tenant's cache does: the ``cache`` object of a tenant's settings and of a plan's limits.

    {"exact": true, "semantic": false, "semantic_threshold": 0.95, "personal": false}

Every field is optional. The effective policy is the built-in default (everything off), overlaid field by field by
the plan's ``cache`` object, then by the tenant's ``settings.cache`` object. A PATCH replaces the tenant's object as
a whole (settings merge key by key at the top level); ``null`` removes it, so the plan's default applies again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from tenantlm.errors import InvalidRequest

SETTING = "cache"
DEFAULT_THRESHOLD = 0.95
MIN_THRESHOLD = 0.5  # below this, MiniLM calls unrelated sentences alike: a tenant cannot set it
THRESHOLD_HEADER = "x-tenantlm-cache-threshold"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    exact: bool = False
    semantic: bool = False
    semantic_threshold: float = DEFAULT_THRESHOLD
    personal: bool = False

    @property
    def enabled(self) -> bool:
        return self.exact or self.semantic

    def over(self, values: dict[str, Any] | None) -> CachePolicy:
        """This policy with the fields of a validated partial object on top."""
        return replace(self, **values) if values else self


OFF = CachePolicy()
_FIELDS = {f.name: f.type for f in fields(CachePolicy)}


def check_cache(value: Any, param: str = f"settings.{SETTING}") -> dict[str, Any]:
    """Validate a (partial) cache object; returns it cleaned. Raises ``InvalidRequest`` naming the field."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be a JSON object with any of: {', '.join(_FIELDS)}", param=param)
    out: dict[str, Any] = {}
    for name, v in value.items():
        where = f"{param}.{name}"
        if name not in _FIELDS:
            raise InvalidRequest(f"unknown field {where!r}; known: {', '.join(_FIELDS)}", param=where)
        out[name] = _threshold(v, where) if name == "semantic_threshold" else _flag(v, where)
    return out


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} must be true or false", param=where)
    return value


def _threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not MIN_THRESHOLD <= value <= 1.0:
        raise InvalidRequest(f"{where} must be a number between {MIN_THRESHOLD} and 1", param=where)
    return float(value)


def plan_policy(value: Any) -> CachePolicy | None:
    """A plan's (or a tenant override's) stored cache object as a policy over the default; None when absent."""
    return None if not value else OFF.over(value)


def effective_policy(plan: CachePolicy | None, tenant_settings: dict[str, Any]) -> CachePolicy:
    return (plan or OFF).over(tenant_settings.get(SETTING))


def request_threshold(raw: str | None) -> float | None:
    """The similarity a request asks for (``x-tenantlm-cache-threshold``): it can only raise the tenant's."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"the {THRESHOLD_HEADER} header must be a number between 0 and 1",
                             param=THRESHOLD_HEADER)
    return value
