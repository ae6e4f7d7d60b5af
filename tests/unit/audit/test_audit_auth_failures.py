"""Auth failures are aggregated in memory: one audit entry per tenant per window, coarse subjects, no secrets."""

from __future__ import annotations

from typing import Any

import pytest

from tenantlm.audit.auth_failures import AuthFailureAggregator, client_network, key_id_prefix
from tenantlm.audit.models import AuditEntry

TOKEN = "tlm_0123456789abcdef" + "S3cr3t" * 7 + "x"


class FakeAudit:
    def __init__(self) -> None:
        self.appended: list[dict[str, Any]] = []
        self.fail = False

    async def append(self, **kw: Any) -> AuditEntry:
        if self.fail:
            raise RuntimeError("database down")
        self.appended.append(kw)
        return AuditEntry(seq=len(self.appended), ts_us=0, prev_hash=bytes(32), hash=bytes(32), format_version=2, **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: Any) -> tuple[AuthFailureAggregator, FakeAudit, Clock]:
    audit, clock = FakeAudit(), Clock()
    return AuthFailureAggregator(audit, window_s=60, clock=clock, **kw), audit, clock  # type: ignore[arg-type]


def test_subjects_are_coarse() -> None:
    assert client_network("203.0.113.77") == "203.0.113.0/24"
    assert client_network("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert client_network("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert client_network("not an ip") == "invalid" and client_network(None) is None
    assert key_id_prefix("0123456789abcdef") == "01234567"
    assert key_id_prefix(TOKEN) == "01234567"  # a whole token handed in by mistake is cut to its id prefix
    assert key_id_prefix("tlmadmin_fedcba9876543210") == "fedcba98"
    assert key_id_prefix("ab/../") == "invalid"


async def test_one_entry_per_window_with_buckets() -> None:
    agg, audit, clock = make()
    for i in range(5):
        agg.record(reason="invalid_key", client=f"198.51.100.{i}", key_id=TOKEN)
    agg.record(reason="revoked", client="198.51.100.9", key_id="aaaabbbbccccdddd", tenant_id="ten_a")
    agg.record(reason="Weird Reason!", client=None)
    assert agg.pending == 7
    clock.now += 59
    assert await agg.flush() == [] and audit.appended == []
    clock.now += 1
    written = await agg.flush()
    assert len(written) == 2 and agg.pending == 0
    platform, tenant = audit.appended
    assert platform["action"] == "auth.failures" and platform["actor"] == "system:auth"
    assert platform["tenant_id"] is None
    assert platform["details"]["total"] == 6
    assert platform["details"]["buckets"][0] == {"reason": "invalid_key", "client_network": "198.51.100.0/24",
                                                 "key_id_prefix": "01234567", "count": 5}
    assert platform["details"]["buckets"][1]["reason"] == "other"
    assert tenant["tenant_id"] == "ten_a" and tenant["details"]["total"] == 1
    assert "S3cr3t" not in repr(audit.appended)
    assert platform["details"]["window_end"] - platform["details"]["window_start"] == 60
    assert await agg.flush(force=True) == []  # nothing new: nothing written


async def test_bucket_cap_and_force_flush() -> None:
    agg, audit, _ = make(max_buckets=3)
    for i in range(10):
        agg.record(reason="invalid_key", client=f"10.0.{i}.1")
    await agg.flush(force=True)
    (entry,) = audit.appended
    assert len(entry["details"]["buckets"]) == 3 and entry["details"]["unbucketed"] == 7
    assert entry["details"]["total"] == 10


async def test_failed_flush_keeps_the_counts() -> None:
    agg, audit, clock = make()
    agg.record(reason="invalid_key", client="10.0.0.1", tenant_id="ten_a")
    agg.record(reason="invalid_key", client="10.0.0.2")
    clock.now += 61
    audit.fail = True
    with pytest.raises(RuntimeError):
        await agg.flush()
    agg.record(reason="invalid_key", client="10.0.0.3")
    assert agg.pending == 3
    audit.fail = False
    await agg.flush()
    totals = {e["tenant_id"]: e["details"]["total"] for e in audit.appended}
    assert totals == {None: 2, "ten_a": 1}
