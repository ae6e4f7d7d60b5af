"""Every request an upstream reads is one attempt in the tenant's usage, through a live ``tenantlm serve`` and the
official SDK: nothing below the provider's retry policy sends a request twice (DESIGN.md invariant 4; RFC 9112
§9.3.1 forbids resending a POST on a connection that closed without a response).

The upstreams here are raw TCP servers that count every request they read in full. One answers the first request on
each connection and then reads the next one and closes the connection without a word (what an upstream does that
closes a keep-alive connection as a request arrives, or dies while running it); the other never answers at all."""

from __future__ import annotations

import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from live import Live, ServerConfig, start_server

COMPLETION = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
              b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}')
REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(COMPLETION)
         + COMPLETION)
MSG = [{"role": "user", "content": "hello"}]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a connection left open by the gateway does not hold the test run at exit


@dataclass
class RawUpstream:
    """Answers the first ``answers`` requests on each connection, then reads one more and closes the connection."""

    answers: int
    receipts: list[bool] = field(default_factory=list)  # one per request read in full: answered or not
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: _Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> RawUpstream:
        upstream = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for _ in range(upstream.answers):
                    if not upstream.read_request(self.rfile):
                        return
                    upstream.record(True)
                    self.wfile.write(REPLY)
                if upstream.read_request(self.rfile):
                    upstream.record(False)  # and the connection closes without a response

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def record(self, answered: bool) -> None:
        with self.lock:
            self.receipts.append(answered)

    @staticmethod
    def read_request(rfile: Any) -> bool:
        """Read one request's head and body; False when the client closed the connection first."""
        length = 0
        while True:
            line = rfile.readline()
            if not line:
                return False
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return len(rfile.read(length)) == length


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, RawUpstream]]:
    made = {"once0": RawUpstream(answers=1).start(), "once2": RawUpstream(answers=1).start(),
            "mute": RawUpstream(answers=0).start()}
    yield made
    for upstream in made.values():
        upstream.stop()


@pytest.fixture(scope="module")
def live(upstreams: dict[str, RawUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    retries = {"once0": 0, "once2": 2, "mute": 0}
    providers = [{"name": name, "type": "openai_compatible", "base_url": upstream.url, "max_retries": retries[name],
                  "backoff_base_s": 0.01, "backoff_max_s": 0.02, "breaker_failures": 1000}
                 for name, upstream in upstreams.items()]
    models = [{"name": f"{name}-chat", "provider": name} for name in upstreams]
    proc = start_server(tmp_path_factory.mktemp("upstream-attempts"),
                        ServerConfig(providers=providers, models=models), warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


def usage_by_status(live: Live, tenant_id: str, *, expect: int) -> dict[str, int]:
    """Requests per status in the tenant's usage once the ledger has flushed ``expect`` of them."""
    deadline = time.monotonic() + 15
    while True:
        with live.admin() as c:
            r = c.get(f"/admin/v1/tenants/{tenant_id}/usage", params={"group_by": "status"})
        assert r.status_code == 200, r.text
        by_status = {row["status"]: row["requests"] for row in r.json()["data"]}
        if sum(by_status.values()) >= expect or time.monotonic() > deadline:
            return by_status
        time.sleep(0.3)


def send(live: Live, model: str, n: int) -> tuple[str, int]:
    """``n`` chat requests through the SDK (no client retries); the tenant's id and how many were answered."""
    tenant = live.new_tenant(f"attempts-{uuid.uuid4().hex[:8]}")
    sdk = live.sdk(tenant.member_key, max_retries=0)
    served = 0
    for _ in range(n):
        try:
            sdk.chat.completions.create(model=model, messages=MSG)
            served += 1
        except openai.InternalServerError as exc:
            assert exc.status_code == 503 and exc.code == "upstream_unavailable"
    return tenant.id, served


@pytest.mark.parametrize("name", ["once0", "once2", "mute"])
def test_every_request_the_upstream_read_is_one_metered_attempt(live: Live, upstreams: dict[str, RawUpstream],
                                                                 name: str) -> None:
    upstream = upstreams[name]
    tenant_id, served = send(live, f"{name}-chat", 10)
    receipts = list(upstream.receipts)
    by_status = usage_by_status(live, tenant_id, expect=len(receipts))
    assert sum(by_status.values()) == len(receipts), (by_status, receipts)  # one ledger event per request read
    assert by_status.get("ok", 0) == receipts.count(True) == served
    assert by_status.get("error", 0) == receipts.count(False) >= 1  # the closes happened and were metered
    if name == "once2":
        assert served == 10  # the provider's own retries, on a fresh connection, got every request answered
    if name == "mute":
        assert served == 0 and len(receipts) == 10
