"""The two upstream HTTP clients side by side: CPU per request of the native client (providers/h1.py) and httpx
(``http_pool: httpx``), against the fake upstream.

Usage::

    python bench/upstream_clients.py [--requests 3000] [--concurrency 16] [--rounds 2]

Starts ``tenantlm fake-upstream`` on a free 127.0.0.1 port (stopped by PID at the end), then, in this process on
uvloop, sends ``--requests`` non-streaming chat completions per client with ``--concurrency`` in flight, ``--rounds``
times in alternation. Reported: requests/s and this process's CPU time per request (user + system), which is the
client's cost (the upstream runs in its own process). The fake upstream shares the machine, so requests/s also
depends on it; CPU per request does not.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as oh  # bench scripts are not a package: imported by path

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16})
HEADERS = {"content-type": "application/json"}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(name: str, call: Callable[[], Awaitable[bytes]], n: int, conc: int) -> dict[str, float | str]:
    for _ in range(50):  # warm the pool
        await call()
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            body = await call()
            if b'"choices"' not in body:
                raise RuntimeError(f"{name}: unexpected reply {body[:200]!r}")

    t0, c0 = time.perf_counter(), cpu_s()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"client": name, "req_per_s": round(n / wall), "cpu_us_per_request": round(cpu / n * 1e6, 1)}


async def run(url: str, args: argparse.Namespace) -> list[dict[str, float | str]]:
    from tenantlm.providers.h1 import H1Pool

    pool = H1Pool(url + "/v1", headers=HEADERS.items())
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)  # as the provider configures it
    client = httpx.AsyncClient(base_url=url + "/v1", limits=limits)

    async def native() -> bytes:
        return (await pool.request("POST", "/chat/completions", BODY)).content

    async def with_httpx() -> bytes:
        return (await client.post("/chat/completions", content=BODY, headers=HEADERS)).content

    rows = []
    try:
        for _ in range(args.rounds):
            for name, call in (("native (h1)", native), ("httpx", with_httpx)):
                rows.append(await measure(name, call, args.requests, args.concurrency))
                print(rows[-1], file=sys.stderr)
    finally:
        await pool.aclose()
        await client.aclose()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    port = oh.free_port()
    up = subprocess.Popen([sys.executable, "-m", "tenantlm.cli", "fake-upstream", "--host", "127.0.0.1", "--port",
                           str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or up.poll() is not None:
                    raise SystemExit("the fake upstream did not start") from None
                time.sleep(0.2)
        import uvloop

        rows = uvloop.run(run(url, args))
    finally:
        up.terminate()
        up.wait(10)
    print("| client | req/s | CPU µs / request |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['client']} | {r['req_per_s']} | {r['cpu_us_per_request']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
