"""Child process of the kill -9 test: records usage events from many concurrent producers until killed, flushing to
SQL in the background every 20 ms, and writes each event id to stdout once its ``record()`` has returned.

    python ledger_crash_child.py <sqlalchemy url> <journal dir> <run tag> [always|interval]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import UsageEvent
from tenantlm.storage.sql.engine import Database

PRODUCERS = 64


def event(event_id: str, n: int) -> UsageEvent:
    return UsageEvent(id=event_id, tenant_id=f"ten_{n % 3}", key_id=f"key_{n % 5}", end_user=None,
                      model=f"model-{n % 2}", provider="fake", upstream_model="up", region="local",
                      prompt_tokens=n % 97, completion_tokens=n % 13, cached_tokens=0, latency_ms=1.0, ttft_ms=None,
                      status="ok", http_status=200, cost_usd=(n % 97) * 1e-6, created_at=time.time())


async def main(url: str, directory: str, run: str, sync: str = "always") -> None:
    db = Database.from_url(url)
    ledger = Ledger(db=db, directory=Path(directory), max_segment_bytes=32 * 1024,
                    sync="interval" if sync == "interval" else "always")
    await ledger.start()
    await ledger.recover()
    flusher = asyncio.create_task(ledger.run_flusher(interval_s=0.02))

    async def producer(p: int) -> None:
        n = 0
        while True:
            e = event(f"{run}-{p}-{n}:0", n)
            await ledger.record(e)
            os.write(1, e.id.encode() + b"\n")
            n += 1
            await asyncio.sleep(0)  # as a request path would: with sync=interval record() does not suspend

    await asyncio.gather(flusher, *(producer(p) for p in range(PRODUCERS)))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
