"""A deleted tenant's labelled series leave /metrics; its slot is freed and its late requests count as "other"."""

from __future__ import annotations

from tenantlm.observability.metrics import Metrics


def _observe_everything(m: Metrics, tenant_id: str) -> None:
    m.observe_request(route="/v1/chat/completions", method="POST", status=200, tenant_id=tenant_id, seconds=0.01)
    m.observe_tokens(tenant_id=tenant_id, model="fake-chat", prompt=3, completion=5)
    m.observe_error(tenant_id=tenant_id, type_="invalid_request_error")
    observer = m.scheduler_observer("fake-chat")
    observer.queued(tenant_id, 2)
    observer.waited(tenant_id, 0.2)
    observer.refused(tenant_id, "queue_full")


def _series_of(m: Metrics, tenant_id: str) -> list[str]:
    return [line for line in m.render().decode().splitlines() if f'tenant="{tenant_id}"' in line]


def test_forgetting_a_tenant_removes_its_series_and_keeps_the_others() -> None:
    m = Metrics(max_tenants=10)
    _observe_everything(m, "ten_gone")
    _observe_everything(m, "ten_kept")
    before = _series_of(m, "ten_gone")
    names = {line.split("{")[0] for line in before}
    assert {"tenantlm_requests_total", "tenantlm_request_duration_seconds_bucket", "tenantlm_tokens_total",
            "tenantlm_errors_total", "tenantlm_scheduler_queue_depth", "tenantlm_scheduler_wait_seconds_bucket",
            "tenantlm_scheduler_refused_total"} <= names
    kept = _series_of(m, "ten_kept")
    m.forget_tenant(tenant_id="ten_gone")
    assert _series_of(m, "ten_gone") == []
    assert _series_of(m, "ten_kept") == kept


def test_a_request_ending_after_the_delete_counts_as_other_and_the_slot_is_reused() -> None:
    m = Metrics(max_tenants=1)
    _observe_everything(m, "ten_gone")
    m.forget_tenant(tenant_id="ten_gone")
    m.observe_request(route="/v1/embeddings", method="POST", status=200, tenant_id="ten_gone", seconds=0.01)
    assert _series_of(m, "ten_gone") == []
    assert _series_of(m, "other")
    m.observe_tokens(tenant_id="ten_next", model="fake-chat", prompt=1, completion=0)
    assert _series_of(m, "ten_next")  # the deleted tenant's label slot went to the next tenant


def test_forgetting_a_tenant_that_shared_the_other_label_keeps_the_shared_series() -> None:
    m = Metrics(max_tenants=1)
    _observe_everything(m, "ten_first")
    _observe_everything(m, "ten_overflow")  # past max_tenants: counted under "other"
    other = _series_of(m, "other")
    m.forget_tenant(tenant_id="ten_overflow")
    assert _series_of(m, "other") == other and _series_of(m, "ten_first")
