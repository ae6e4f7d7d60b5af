"""Authentication failures, counted in memory and written to the audit log as one ``auth.failures`` entry per tenant
per window, so that a credential-stuffing burst costs a handful of rows, not one per attempt.

Only coarse subjects are kept: the client's network (IPv4 /24, IPv6 /48) and the first 8 characters of the key id the
caller presented. Never a token: whatever arrives as ``key_id`` is cut to its prefix before it is stored anywhere.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenantlm.audit.models import AuditEntry
from tenantlm.audit.ports import AuditAppender

ACTION = "auth.failures"
ACTOR = "system:auth"
KEY_ID_PREFIX_LEN = 8
_TOKEN_PREFIXES = ("tlmadmin_", "tlm_")
_REASON = re.compile(r"^[a-z0-9_.-]{1,48}$")

Bucket = tuple[str, str | None, str | None]  # (reason, client network, key id prefix)


def client_network(address: str | None) -> str | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return "invalid"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def key_id_prefix(key_id: str | None) -> str | None:
    if not key_id:
        return None
    for prefix in _TOKEN_PREFIXES:
        if key_id.startswith(prefix):
            key_id = key_id[len(prefix):]
            break
    cut = key_id[:KEY_ID_PREFIX_LEN]
    return cut if cut.isalnum() else "invalid"


@dataclass
class _Window:
    started: float
    counts: dict[str | None, dict[Bucket, int]] = field(default_factory=dict)
    overflow: dict[str | None, int] = field(default_factory=dict)
    buckets: int = 0

    def merge(self, other: _Window) -> None:
        self.started = min(self.started, other.started)
        for tenant_id, per in other.counts.items():
            mine = self.counts.setdefault(tenant_id, {})
            for bucket, n in per.items():
                mine[bucket] = mine.get(bucket, 0) + n
        for tenant_id, n in other.overflow.items():
            self.overflow[tenant_id] = self.overflow.get(tenant_id, 0) + n
        self.buckets = sum(len(v) for v in self.counts.values())


class AuthFailureAggregator:
    def __init__(self, audit: AuditAppender, *, window_s: float = 60.0, max_buckets: int = 200,
                 clock: Callable[[], float] = time.time) -> None:
        self.audit = audit
        self.window_s = window_s
        self.max_buckets = max_buckets
        self.clock = clock
        self._window: _Window | None = None

    def record(self, *, reason: str, client: str | None = None, key_id: str | None = None,
               tenant_id: str | None = None) -> None:
        """Count one failure. ``reason`` is a short code (``invalid_key``, ``revoked``, ``expired``, ...);
        ``tenant_id`` only when the presented key id resolved to a tenant (its admins then see the entry)."""
        w = self._window
        if w is None:
            w = self._window = _Window(started=self.clock())
        bucket: Bucket = (reason if _REASON.match(reason) else "other", client_network(client),
                          key_id_prefix(key_id))
        per = w.counts.setdefault(tenant_id, {})
        if bucket in per:
            per[bucket] += 1
        elif w.buckets < self.max_buckets:
            per[bucket] = 1
            w.buckets += 1
        else:
            w.overflow[tenant_id] = w.overflow.get(tenant_id, 0) + 1

    @property
    def pending(self) -> int:
        w = self._window
        return 0 if w is None else sum(sum(p.values()) for p in w.counts.values()) + sum(w.overflow.values())

    async def flush(self, *, force: bool = False) -> list[AuditEntry]:
        """Append the window's entries once it is ``window_s`` old (or now, with ``force``)."""
        w = self._window
        now = self.clock()
        if w is None or (not force and now - w.started < self.window_s):
            return []
        self._window = None
        written: list[AuditEntry] = []
        tenants = sorted(set(w.counts) | set(w.overflow), key=lambda t: t or "")
        for i, tenant_id in enumerate(tenants):
            try:
                written.append(await self.audit.append(
                    actor=ACTOR, action=ACTION, tenant_id=tenant_id, request_id=None,
                    details=_details(w, tenant_id, now)))
            except Exception:
                self._merge_back(w, tenants[i:])
                raise
        return written

    def _merge_back(self, w: _Window, tenants: list[str | None]) -> None:
        rest = _Window(started=w.started, counts={t: w.counts[t] for t in tenants if t in w.counts},
                       overflow={t: w.overflow[t] for t in tenants if t in w.overflow})
        if self._window is not None:
            rest.merge(self._window)
        rest.buckets = sum(len(v) for v in rest.counts.values())
        self._window = rest


def _details(w: _Window, tenant_id: str | None, now: float) -> dict[str, Any]:
    per = w.counts.get(tenant_id, {})
    rows = sorted(per.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "", item[0][2] or ""))
    buckets = [{"reason": r, "client_network": c, "key_id_prefix": k, "count": n} for (r, c, k), n in rows]
    overflow = w.overflow.get(tenant_id, 0)
    return {"window_start": round(w.started, 3), "window_end": round(now, 3),
            "total": sum(per.values()) + overflow, "buckets": buckets, "unbucketed": overflow}
