"""The request log: opt-in per tenant (``settings.request_log_days``, 0 = off), sealed with the tenant's data key.

Capturing is an O(1) append on the request path; sealing and writing happen in ``flush`` (a background task, every
couple of seconds), and ``sweep`` deletes what is past its tenant's retention. Entries buffered in memory when the
process dies are lost: this is a debugging and compliance aid, not the billing ledger.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.requestlog.store import LogRow, RequestLogStore
from tenantlm.tenancy.models import Tenant

log = logging.getLogger("tenantlm.requestlog")
KIND = "request_log"
MAX_DAYS = 3650
SETTING = "request_log_days"


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...

    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...

    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes
                            ) -> bytes | None: ...


def retention_days(tenant: Tenant) -> int:
    value = tenant.settings.get(SETTING, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_retention(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DAYS:
        raise InvalidRequest(f"settings.{SETTING} must be a whole number of days from 0 (off) to {MAX_DAYS}",
                             param=f"settings.{SETTING}")
    return value


@dataclass(slots=True)
class _Pending:
    row: LogRow
    payload: dict[str, Any]


class RequestLogService:
    def __init__(self, *, store: RequestLogStore, sealer: Sealer, clock: Callable[[], float] = time.time,
                 max_pending: int = 10_000) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: list[_Pending] = []

    def capture(self, *, tenant: Tenant, key_id: str | None, request_id: str | None, model: str, endpoint: str,
                status: int, request: dict[str, Any], response: dict[str, Any] | None,
                end_user: str | None = None) -> None:
        days = retention_days(tenant)
        if days <= 0:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        now = self.clock()
        row = LogRow(tenant_id=tenant.id, id="rl_" + uuid.uuid4().hex, created_at=now, expires_at=now + days * 86400.0,
                     key_id=key_id, model=model, endpoint=endpoint, status=status, sealed=b"", end_user=end_user)
        self._pending.append(_Pending(row, {"request_id": request_id, "request": request, "response": response}))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        by_tenant: dict[str, list[LogRow]] = {}
        for item in pending:
            try:
                sealed = await self.sealer.seal(tenant_id=item.row.tenant_id, kind=KIND, record_id=item.row.id,
                                                plaintext=orjson.dumps(item.payload))
            except Exception:  # e.g. the tenant was shredded meanwhile: its entry must not be written
                log.warning("request log entry dropped: sealing failed", exc_info=True)
                continue
            by_tenant.setdefault(item.row.tenant_id, []).append(dataclasses.replace(item.row, sealed=sealed))
        for tenant_id, rows in by_tenant.items():
            try:
                await self.store.insert(tenant_id=tenant_id, rows=rows)
            except Exception:
                log.warning("request log write failed for %d entries", len(rows), exc_info=True)

    async def list(self, *, tenant_id: str, before: float | None, limit: int) -> list[dict[str, Any]]:
        await self.flush()
        return [r.meta() for r in await self.store.list(tenant_id=tenant_id, before=before, limit=limit)]

    async def read(self, *, tenant_id: str, entry_id: str) -> dict[str, Any]:
        row = await self.store.get(tenant_id=tenant_id, entry_id=entry_id)
        if row is None:
            raise NotFound(f"no request log entry {entry_id!r}", param="request_id")
        return {**row.meta(), **await self._open(row)}

    async def _open(self, row: LogRow) -> dict[str, Any]:
        plain = await self.sealer.open(tenant_id=row.tenant_id, kind=KIND, record_id=row.id, ciphertext=row.sealed)
        data: dict[str, Any] = orjson.loads(plain)
        return data

    async def export(self, *, tenant_id: str) -> AsyncIterator[dict[str, Any]]:
        await self.flush()
        async for row in self._rows(tenant_id):
            yield {**row.meta(), **await self._open(row)}

    async def _rows(self, tenant_id: str) -> AsyncIterator[LogRow]:
        after: str | None = None
        while True:
            rows = await self.store.all_sealed(tenant_id=tenant_id, after_id=after, limit=500)
            for row in rows:
                yield row
            if len(rows) < 500:
                return
            after = rows[-1].id

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal entries written under an older data-key version with the current one."""
        moved = 0
        async for row in self._rows(tenant_id):
            fresh = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=KIND, record_id=row.id,
                                                    ciphertext=row.sealed)
            if fresh is not None:
                await self.store.replace_sealed(tenant_id=tenant_id, entry_id=row.id, sealed=fresh)
                moved += 1
        return moved

    async def retention_changed(self, *, tenant_id: str, days: int) -> None:
        self._pending = [p for p in self._pending if p.row.tenant_id != tenant_id or days > 0]
        await self.store.clamp_retention(tenant_id=tenant_id, days=days)

    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Delete every entry of one end user of the tenant (buffered ones included)."""
        self._pending = [p for p in self._pending
                         if p.row.tenant_id != tenant_id or p.row.end_user != end_user]
        return await self.store.delete_end_user(tenant_id=tenant_id, end_user=end_user)

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> builtins.list[dict[str, Any]]:
        await self.flush()
        rows = await self.store.end_user_entries(tenant_id=tenant_id, end_user=end_user)
        return [{**row.meta(), **await self._open(row)} for row in rows]

    async def forget_tenant(self, *, tenant_id: str) -> None:
        self._pending = [p for p in self._pending if p.row.tenant_id != tenant_id]
        await self.store.delete_tenant(tenant_id=tenant_id)

    async def sweep(self) -> int:
        return await self.store.platform_sweep(now=self.clock())
