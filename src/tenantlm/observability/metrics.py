"""Prometheus metrics with a tenant label of bounded cardinality.

The first ``max_tenants`` tenants seen get their own label value; later ones share ``"other"``, so a deployment with
a hundred thousand tenants cannot blow up the time-series count. Each app builds its own registry (no globals).

A deleted tenant's series are removed (``Metrics.forget_tenant``, called by the tenant eraser): its id leaves every
label set and frees its slot for another tenant. A request of that tenant still in flight when it is deleted is
counted under ``"other"`` when it ends, so the id does not come back.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

OTHER = "other"
NONE = "none"
# Deleted tenants remembered so that their late requests are labelled "other"; the oldest are dropped past this.
RETIRED_MAX = 1024


class TenantLabels:
    def __init__(self, max_tenants: int) -> None:
        self.max_tenants = max_tenants
        self._known: set[str] = set()
        self._retired: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first

    def __call__(self, tenant_id: str | None) -> str:
        if not tenant_id:
            return NONE
        if tenant_id in self._known:
            return tenant_id
        if len(self._known) < self.max_tenants and tenant_id not in self._retired:
            self._known.add(tenant_id)
            return tenant_id
        return OTHER

    def retire(self, tenant_id: str) -> bool:
        """Stop labelling ``tenant_id`` (deleted): True when it had a label of its own, whose series must go."""
        self._retired[tenant_id] = None
        if len(self._retired) > RETIRED_MAX:
            del self._retired[next(iter(self._retired))]
        if tenant_id in self._known:
            self._known.discard(tenant_id)
            return True
        return False


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RequestTally(Collector):
    """The three metrics every request touches (requests, latency, tokens), kept as plain numbers and turned into
    Prometheus samples only when scraped.

    prometheus_client's Counter and Histogram take a lock and make several calls per increment; on the request path
    that cost as much as some of the gateway's own steps (callgrind: ~3.5 % of a request's instructions). These are
    updated on the event loop's thread only, and read there too (``/metrics`` is served on the loop), so they need
    no lock. The exposition is the same: ``tenantlm_requests_total``, ``tenantlm_request_duration_seconds_bucket``/
    ``_sum``/``_count``, ``tenantlm_tokens_total``, with ``_created`` for the counters."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}  # (route, method, status, tenant)
        self.latency: dict[tuple[str, str], list[float]] = {}  # (route, tenant) -> per-bucket counts + [sum]
        self.tokens: dict[tuple[str, str, str], int] = {}  # (tenant, model, kind)
        self.created: dict[tuple[str, ...], float] = {}

    def count_request(self, key: tuple[str, str, str, str], seconds: float) -> None:
        requests = self.requests
        if key in requests:
            requests[key] += 1
        else:
            requests[key] = 1
            self.created[key] = time.time()
        where = (key[0], key[3])  # (route, tenant)
        slot = self.latency.get(where)
        if slot is None:
            slot = self.latency[where] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        slot[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        slot[-1] += seconds

    def count_tokens(self, key: tuple[str, str, str], n: int) -> None:
        tokens = self.tokens
        if key in tokens:
            tokens[key] += n
        else:
            tokens[key] = n
            self.created[key] = time.time()

    def forget(self, tenant: str) -> None:
        """Drop every series labelled ``tenant``."""
        for table, position in ((self.requests, 3), (self.latency, 1), (self.tokens, 0)):
            self._drop(table, position, tenant)

    def _drop(self, table: dict[Any, Any], position: int, tenant: str) -> None:
        for key in [k for k in table if k[position] == tenant]:
            del table[key]
            self.created.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("tenantlm_requests", "HTTP requests served",
                                       labels=["route", "method", "status", "tenant"])
        for rkey, n in list(self.requests.items()):
            requests.add_metric(rkey, n, created=self.created.get(rkey))
        yield requests
        latency = HistogramMetricFamily("tenantlm_request_duration_seconds", "Time to the end of the response",
                                        labels=["route", "tenant"])
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
        for lkey, slot in list(self.latency.items()):
            counts: list[tuple[str, float]] = []
            running = 0.0
            for bound, seen in zip(bounds, slot[:-1], strict=True):
                running += seen
                counts.append((bound, running))
            latency.add_metric(lkey, counts, sum_value=slot[-1])
        yield latency
        tokens = CounterMetricFamily("tenantlm_tokens", "Tokens processed", labels=["tenant", "model", "kind"])
        for tkey, used in list(self.tokens.items()):
            tokens.add_metric(tkey, used, created=self.created.get(tkey))
        yield tokens


class Metrics:
    def __init__(self, *, max_tenants: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.tenant_label = TenantLabels(max_tenants)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.tally = RequestTally()
        self.registry.register(self.tally)
        self.errors = Counter("tenantlm_errors", "Error responses by OpenAI error type", ["tenant", "type"],
                              registry=self.registry)
        self.queue_depth = Gauge("tenantlm_scheduler_queue_depth", "Requests waiting for a model slot",
                                 ["tenant", "model"], registry=self.registry)
        self.queue_wait = Histogram("tenantlm_scheduler_wait_seconds", "Time a request waited for a model slot",
                                    ["tenant", "model"], registry=self.registry,
                                    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_refused = Counter("tenantlm_scheduler_refused", "Requests refused by the scheduler",
                                     ["tenant", "model", "reason"], registry=self.registry)
        self.cache_lookups = Counter("tenantlm_cache_lookups", "Response-cache lookups of cacheable requests",
                                     ["tenant", "model", "result"], registry=self.registry)
        # the labelled metrics above by id, for child(); each has "tenant" as its first label
        self._labelled = {id(m): m for m in (self.errors, self.queue_depth, self.queue_wait, self.queue_refused,
                                             self.cache_lookups)}

    def forget_tenant(self, *, tenant_id: str) -> None:
        """Remove a deleted tenant's series from every metric (its later requests count under "other")."""
        if not self.tenant_label.retire(tenant_id):
            return
        self.tally.forget(tenant_id)
        for cached in [k for k in self._children if k[1][0] == tenant_id]:
            metric, labels = self._labelled[cached[0]], cached[1]
            metric.remove(*labels)
            del self._children[cached]

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
        self.tally.count_request((route, method, str(status), self.tenant_label(tenant_id)), seconds)

    def observe_tokens(self, *, tenant_id: str, model: str, prompt: int, completion: int) -> None:
        tenant = self.tenant_label(tenant_id)
        if prompt:
            self.tally.count_tokens((tenant, model, "prompt"), prompt)
        if completion:
            self.tally.count_tokens((tenant, model, "completion"), completion)

    def observe_cache(self, *, tenant_id: str, model: str, hit: bool) -> None:
        self.child(self.cache_lookups, (self.tenant_label(tenant_id), model, "hit" if hit else "miss")).inc()

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
