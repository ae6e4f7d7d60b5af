"""A flood of well-formed, made-up API keys against a live server: every one is a 401, the server's memory stays
flat, and authentication's database reads stay bounded (no read per made-up key id)."""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live import ADMIN_KEY, Live, ServerConfig, start_server

ALPHABET = string.ascii_letters + string.digits


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config = ServerConfig(providers=[{"name": "fake", "type": "fake"}],
                          models=[{"name": "fake-chat", "provider": "fake"}],
                          env={"TENANTLM_KEY_INDEX_REFRESH_S": "0.02"})
    proc = start_server(tmp_path_factory.mktemp("unknown-keys"), config, warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


def _made_up(kind: str) -> str:
    body = secrets.token_hex(8) + "".join(secrets.choice(ALPHABET) for _ in range(43))
    return ("tlmadmin_" if kind == "admin" else "tlm_") + body


async def _flood(url: str, n: int) -> list[int]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> int:
            async with sem:
                r = await client.get("/v1/models", headers={
                    "authorization": f"Bearer {_made_up('admin' if i % 2 else 'tenant')}"})
                return r.status_code

        return await asyncio.gather(*(one(i) for i in range(n)))


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1))


def _reads(live: Live) -> dict[str, float]:
    text = httpx.get(f"{live.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^tenantlm_auth_store_reads_total\{kind="(\w+)"\} (\S+)$', text, re.M)}


def test_made_up_keys_cost_flat_memory_and_bounded_reads(live: Live) -> None:
    tenant = live.new_tenant(f"real-{secrets.token_hex(4)}")
    assert live.sdk(tenant.member_key).models.list().data  # a real key loads once
    assert set(asyncio.run(_flood(live.url, 1_000))) == {401}  # warm-up: allocator, caches, buffers
    pid = live.process.proc.pid
    rss_before, reads_before, started = _rss_kib(pid), _reads(live), time.monotonic()
    assert set(asyncio.run(_flood(live.url, 5_000))) == {401}
    elapsed = time.monotonic() - started
    rss_after, reads_after = _rss_kib(pid), _reads(live)
    assert reads_after["key"] == reads_before["key"]  # not one key record read for 5,000 made-up ids
    refreshes = reads_after["index"] - reads_before["index"]
    assert refreshes <= elapsed / 0.02 + 2, (refreshes, elapsed)  # at most one per refresh interval
    assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)  # flat (KiB): nothing kept per made-up key
    assert live.sdk(tenant.member_key).models.list().data  # and the real key still works
