"""The scheduler's errors, read-only snapshots and the observer port (what the integrator feeds Prometheus from).

Both refusals are :class:`tenantlm.errors.RateLimited` (429 ``rate_limit_exceeded``): ``retry_after`` (seconds,
the base class's field, which also sets the ``retry-after`` / ``retry-after-ms`` headers) is the scheduler's estimate
of when a slot would be free for this tenant; ``reason`` says which limit refused it. Messages name no other tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from tenantlm.errors import RateLimited

RefusalReason = Literal["tenant_queue_full", "queue_full", "queue_timeout"]


class QueueFull(RateLimited):
    """Refused on arrival: the tenant's queue for this model, or the model's whole queue, is at its limit."""

    def __init__(self, message: str, *, reason: RefusalReason, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.reason: RefusalReason = reason


class QueueTimeout(RateLimited):
    """Waited its max wait for capacity and was taken out of the queue (it holds no slot)."""

    def __init__(self, message: str, *, waited_s: float, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.reason: RefusalReason = "queue_timeout"
        self.waited_s = waited_s


@dataclass(frozen=True, slots=True)
class TenantStats:
    """One tenant in one priority class. ``counter`` is its VTC counter in virtual tokens (weighted service)."""

    tenant_id: str
    priority: int
    queued: int
    in_flight: int
    counter: float


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    model: str
    capacity: int
    in_flight: int
    queued: int
    mean_service_s: float | None
    tenants: tuple[TenantStats, ...]


class SchedulerObserver(Protocol):
    """Called synchronously on the event loop, on the hot path: keep it cheap and never raise."""

    def queued(self, tenant_id: str, depth: int) -> None:
        """The tenant's queue depth (all priority classes of this model) changed to ``depth``."""

    def waited(self, tenant_id: str, seconds: float) -> None:
        """A request was granted after waiting ``seconds`` (0.0 on the fast path)."""

    def refused(self, tenant_id: str, reason: RefusalReason) -> None:
        """A request got QueueFull or QueueTimeout."""


class NullObserver:
    """The default: observes nothing."""

    def queued(self, tenant_id: str, depth: int) -> None:
        return None

    def waited(self, tenant_id: str, seconds: float) -> None:
        return None

    def refused(self, tenant_id: str, reason: RefusalReason) -> None:
        return None
