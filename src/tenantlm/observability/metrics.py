"""Prometheus metrics with a tenant label of bounded cardinality.

The first ``max_tenants`` tenants seen get their own label value; later ones share ``"other"``, so a deployment with
a hundred thousand tenants cannot blow up the time-series count. Each app builds its own registry (no globals).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OTHER = "other"
NONE = "none"


class TenantLabels:
    def __init__(self, max_tenants: int) -> None:
        self.max_tenants = max_tenants
        self._known: set[str] = set()

    def __call__(self, tenant_id: str | None) -> str:
        if not tenant_id:
            return NONE
        if tenant_id in self._known:
            return tenant_id
        if len(self._known) < self.max_tenants:
            self._known.add(tenant_id)
            return tenant_id
        return OTHER


class Metrics:
    def __init__(self, *, max_tenants: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.tenant_label = TenantLabels(max_tenants)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.requests = Counter("tenantlm_requests", "HTTP requests served", ["route", "method", "status", "tenant"],
                                registry=self.registry)
        self.latency = Histogram(
            "tenantlm_request_duration_seconds", "Time to the end of the response", ["route", "tenant"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)
        self.tokens = Counter("tenantlm_tokens", "Tokens processed", ["tenant", "model", "kind"],
                              registry=self.registry)
        self.errors = Counter("tenantlm_errors", "Error responses by OpenAI error type", ["tenant", "type"],
                              registry=self.registry)
        self.queue_depth = Gauge("tenantlm_scheduler_queue_depth", "Requests waiting for a model slot",
                                 ["tenant", "model"], registry=self.registry)
        self.queue_wait = Histogram("tenantlm_scheduler_wait_seconds", "Time a request waited for a model slot",
                                    ["tenant", "model"], registry=self.registry,
                                    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_refused = Counter("tenantlm_scheduler_refused", "Requests refused by the scheduler",
                                     ["tenant", "model", "reason"], registry=self.registry)

    def scheduler_observer(self, model: str) -> SchedulerMetrics:
        return SchedulerMetrics(self, model)

    def child(self, metric: Any, key: tuple[str, ...]) -> Any:
        """``metric.labels(*key)``, remembered: prometheus_client validates and locks on every ``labels`` call,
        which on the request path costs more than the increment. Every label here is bounded (route templates, the
        tenant label above, catalog models), so the cache is too."""
        child = self._children.get((id(metric), key))
        if child is None:
            child = self._children[(id(metric), key)] = metric.labels(*key)
        return child

    def observe_request(self, *, route: str, method: str, status: int, tenant_id: str | None, seconds: float) -> None:
        tenant = self.tenant_label(tenant_id)
        self.child(self.requests, (route, method, str(status), tenant)).inc()
        self.child(self.latency, (route, tenant)).observe(seconds)

    def observe_tokens(self, *, tenant_id: str, model: str, prompt: int, completion: int) -> None:
        tenant = self.tenant_label(tenant_id)
        if prompt:
            self.child(self.tokens, (tenant, model, "prompt")).inc(prompt)
        if completion:
            self.child(self.tokens, (tenant, model, "completion")).inc(completion)

    def observe_error(self, *, tenant_id: str | None, type_: str) -> None:
        self.child(self.errors, (self.tenant_label(tenant_id), type_)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SchedulerMetrics:
    """The fair scheduler's observer: per-tenant queue depth, wait and refusals (tenant label bounded as above)."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.m = metrics
        self.model = model

    def queued(self, tenant_id: str, depth: int) -> None:
        self.m.child(self.m.queue_depth, (self.m.tenant_label(tenant_id), self.model)).set(depth)

    def waited(self, tenant_id: str, seconds: float) -> None:
        if seconds > 0:
            self.m.child(self.m.queue_wait, (self.m.tenant_label(tenant_id), self.model)).observe(seconds)

    def refused(self, tenant_id: str, reason: str) -> None:
        self.m.child(self.m.queue_refused, (self.m.tenant_label(tenant_id), self.model, reason)).inc()
