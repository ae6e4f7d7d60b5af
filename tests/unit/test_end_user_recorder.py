"""End users are counted in memory and flushed in batches; a flush returns only once what was buffered before it,
including what a flush already running took, is written (the admin listing flushes, then reads)."""

from __future__ import annotations

import asyncio
from typing import Any

from tenantlm.tenancy.end_users import EndUserRecorder


class SlowStore:
    """Its first write waits until ``open`` is set; later ones go through at once."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int]] = []
        self.open = asyncio.Event()
        self.calls = 0

    async def upsert_end_users(self, *, tenant_id: str, seen: list[tuple[str, int, float, float]]) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.open.wait()
        self.rows += [(tenant_id, user, requests) for user, requests, _, _ in seen]


async def test_a_flush_waits_for_the_one_already_running() -> None:
    store = SlowStore()
    recorder = EndUserRecorder(store=store, clock=lambda: 1.0)  # type: ignore[arg-type]
    recorder.record(tenant_id="t", user_id="u1")
    recorder.record(tenant_id="t", user_id="u1")
    background = asyncio.create_task(recorder.flush())  # takes u1 and waits on the store
    await asyncio.sleep(0)
    recorder.record(tenant_id="t", user_id="u2")
    reader: Any = asyncio.create_task(recorder.flush())  # what the admin listing does before it reads
    await asyncio.sleep(0.01)
    assert not reader.done()  # it would read before u1 is written otherwise
    store.open.set()
    await reader
    assert sorted(store.rows) == [("t", "u1", 2), ("t", "u2", 1)]
    await background
