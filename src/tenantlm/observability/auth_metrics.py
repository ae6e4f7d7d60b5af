"""Authentication's database reads as Prometheus counters: ``tenantlm_auth_store_reads_total{kind}``, where kind is
``key`` (a key record loaded) or ``index`` (a refresh of the known key ids). A flood of made-up keys moves neither
much: that is what this lets an operator see."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tenantlm.tenancy.auth import AuthStats


class AuthReads(Collector):
    def __init__(self, stats: AuthStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        reads = CounterMetricFamily("tenantlm_auth_store_reads", "Database reads made by authentication",
                                    labels=["kind"])
        reads.add_metric(["key"], self.stats.key_loads)
        reads.add_metric(["index"], self.stats.index_refreshes)
        yield reads
