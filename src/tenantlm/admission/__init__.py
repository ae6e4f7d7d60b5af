"""Admission: limits and budgets checked and reserved atomically before a request runs, settled after.

Levels key -> end user -> tenant, dimensions rpm / tpm / concurrency / daily and monthly token budgets / monthly
cost budget: all pass together or nothing is consumed (DESIGN.md invariant 5). The LimitStore port has two
adapters: :class:`MemoryLimitStore` (embedded) and :class:`RedisLimitStore` (one Lua script per admission and one
per settle, exact for any number of replicas). The Redis adapter is imported lazily so that the embedded server does
not need the ``redis`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tenantlm.admission.memory import MemoryLimitStore
from tenantlm.admission.models import (
    AdmissionRequest,
    AdmissionUnavailable,
    Decision,
    Limits,
    QuotaExceeded,
    RateStatus,
    SettleResult,
    Subject,
    Ticket,
    format_duration,
)
from tenantlm.admission.port import LimitStore
from tenantlm.admission.service import AdmissionService, reservation_tokens

if TYPE_CHECKING:
    from tenantlm.admission.redis_store import RedisLimitStore

__all__ = ["AdmissionRequest", "AdmissionService", "AdmissionUnavailable", "Decision", "LimitStore", "Limits",
           "MemoryLimitStore", "QuotaExceeded", "RateStatus", "RedisLimitStore", "SettleResult", "Subject", "Ticket",
           "format_duration", "reservation_tokens"]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "RedisLimitStore":
        from tenantlm.admission.redis_store import RedisLimitStore

        return RedisLimitStore
    raise AttributeError(name)
