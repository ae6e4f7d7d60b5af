"""Fair scheduling of upstream model capacity among tenants (weighted Virtual Token Counter, Sheng et al. OSDI 2024).

- ``vtc``: the pure rule (counters, lift, dispatch order, charging); no asyncio.
- ``scheduler``: ``FairScheduler``, one upstream model's capacity behind per-tenant queues, as an async context
  manager (``slot()``), with queue limits, max wait and cancellation safety.
- ``registry``: one scheduler per model; each replica schedules ceil(capacity / live replicas).
- ``models``: errors (``QueueFull``, ``QueueTimeout``: 429 with retry-after), stats, the observer port.
"""

from tenantlm.scheduling.models import (
    NullObserver,
    QueueFull,
    QueueTimeout,
    RefusalReason,
    SchedulerObserver,
    SchedulerStats,
    TenantStats,
)
from tenantlm.scheduling.registry import (
    RedisReplicaCount,
    ReplicaCount,
    SchedulerRegistry,
    StaticReplicaCount,
    default_headroom,
    share,
)
from tenantlm.scheduling.scheduler import FairScheduler, Grant
from tenantlm.scheduling.vtc import VirtualTokenCounter

__all__ = [
    "FairScheduler",
    "Grant",
    "NullObserver",
    "QueueFull",
    "QueueTimeout",
    "RedisReplicaCount",
    "RefusalReason",
    "ReplicaCount",
    "SchedulerObserver",
    "SchedulerRegistry",
    "SchedulerStats",
    "StaticReplicaCount",
    "TenantStats",
    "VirtualTokenCounter",
    "default_headroom",
    "share",
]
