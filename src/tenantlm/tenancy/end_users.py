"""End users inside a tenant: named per request, counted in memory, written in batches off the request path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tenantlm.errors import InvalidRequest
from tenantlm.tenancy.store import TenancyStore

MAX_END_USER_LEN = 256


@dataclass(slots=True)
class _Seen:
    requests: int
    first: float
    last: float


def pick_end_user(*, header: str | None, body_user: object, body_safety_id: object) -> str | None:
    """The end user a request speaks for: the ``X-TenantLM-User`` header, else ``safety_identifier``, else ``user``.

    This names a person *inside* the authenticated tenant; it never selects the tenant.
    """
    for value, param in ((header, "X-TenantLM-User"), (body_safety_id, "safety_identifier"), (body_user, "user")):
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) > MAX_END_USER_LEN or not value.isprintable():
            raise InvalidRequest(f"{param} must be a printable string of at most {MAX_END_USER_LEN} characters",
                                 param=param)
        return value
    return None


class EndUserRecorder:
    def __init__(self, *, store: TenancyStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[str, dict[str, _Seen]] = {}
        self._flushing = asyncio.Lock()

    def record(self, *, tenant_id: str, user_id: str) -> None:
        now = self.clock()
        per_tenant = self._pending.setdefault(tenant_id, {})
        seen = per_tenant.get(user_id)
        if seen is None:
            per_tenant[user_id] = _Seen(1, now, now)
        else:
            seen.requests += 1
            seen.last = now

    async def flush(self) -> None:
        """Write what is buffered. One flush at a time: a caller that flushes before it reads (the admin listing)
        waits for a flush already running, whose rows it would otherwise miss."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for tenant_id, users in pending.items():
            rows = [(u, s.requests, s.first, s.last) for u, s in users.items()]
            try:
                await self.store.upsert_end_users(tenant_id=tenant_id, seen=rows)
            except sa.exc.IntegrityError:
                continue  # the tenant was deleted meanwhile: nothing to keep
            except Exception:
                self._merge_back(tenant_id, users)
                raise

    async def forget_tenant(self, *, tenant_id: str) -> None:
        """Drop what is buffered for a tenant being erased (its rows go with the tenant)."""
        self._pending.pop(tenant_id, None)

    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Forget one end user: what is buffered and the stored row (first and last seen, request count)."""
        async with self._flushing:  # a flush running now would write the row back after the delete
            self._pending.get(tenant_id, {}).pop(end_user, None)
            return await self.store.delete_end_user(tenant_id=tenant_id, user_id=end_user)

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> list[dict[str, Any]]:
        await self.flush()
        row = await self.store.end_user(tenant_id=tenant_id, user_id=end_user)
        return [] if row is None else [row]

    def _merge_back(self, tenant_id: str, users: dict[str, _Seen]) -> None:
        per_tenant = self._pending.setdefault(tenant_id, {})
        for user_id, old in users.items():
            cur = per_tenant.get(user_id)
            per_tenant[user_id] = old if cur is None else _Seen(cur.requests + old.requests, old.first, cur.last)
