"""Start real TenantLM servers (``tenantlm serve`` in a subprocess) and the fake upstream for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

ADMIN_KEY = "test-platform-admin-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready at {url} after {timeout}s:\n{log.read_text()[-4000:]}")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_fake_upstream(tmp: Path, *, tokens: int = 16, token_latency_ms: float = 0.0) -> Process:
    port = free_port()
    log = tmp / f"fake-upstream-{port}.log"
    cmd = [sys.executable, "-m", "tenantlm.cli", "fake-upstream", "--port", str(port), "--tokens", str(tokens),
           "--token-latency-ms", str(token_latency_ms)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/v1/models", proc, 30, log)
    return Process(proc, log, url)


@dataclass
class ServerConfig:
    providers: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Seed plans. The suites default to generous ones so that limits only bite where a test sets them.
    plans: dict[str, Any] = field(default_factory=lambda: {
        name: {"description": f"test {name}", "limits": {"rpm": None, "tpm": None, "max_concurrency": None,
                                                          "monthly_token_budget": None,
                                                          "monthly_cost_budget_usd": None}}
        for name in ("free", "pro", "enterprise")})


def catalog_config(upstream_url: str | None, *, local: bool = True) -> ServerConfig:
    """Local models, in-process fakes, and (when given) an OpenAI-compatible upstream with a fallback chain."""
    providers: list[dict[str, Any]] = [{"name": "fake", "type": "fake", "tokens": 8}]
    models: list[dict[str, Any]] = [
        {"name": "fake-chat", "provider": "fake", "kind": "chat", "input_price_per_1m": 1.0,
         "output_price_per_1m": 2.0},
        {"name": "fake-embed", "provider": "fake", "kind": "embedding", "dimensions": 8},
    ]
    if local:
        providers.append({"name": "local", "type": "local"})
        models += [{"name": "smollm2-135m-instruct", "provider": "local", "kind": "chat"},
                   {"name": "all-minilm-l6-v2", "provider": "local", "kind": "embedding", "dimensions": 384}]
    if upstream_url:
        providers.append({"name": "upstream", "type": "openai_compatible", "base_url": upstream_url + "/v1",
                          "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05})
        providers.append({"name": "dead", "type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                          "max_retries": 0, "connect_timeout_s": 0.5})
        models += [{"name": "proxied-chat", "provider": "upstream", "upstream_model": "fake-upstream-model"},
                   {"name": "proxied-embed", "provider": "upstream", "kind": "embedding", "dimensions": 8},
                   {"name": "dead-chat", "provider": "dead", "fallbacks": ["proxied-chat"]}]
    return ServerConfig(providers=providers, models=models)


def start_server(tmp: Path, config: ServerConfig, *, database_url: str | None = None,
                 migrate_url: str | None = None, warmup: bool = True, timeout: float = 120,
                 data_dir: Path | None = None) -> Process:
    port = free_port()
    data_dir = data_dir or tmp / f"data-{port}"
    cfg_file = tmp / f"config-{port}.yaml"
    cfg_file.write_text(yaml.safe_dump({"providers": config.providers, "models": config.models,
                                        "plans": config.plans}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
    env.update({"TENANTLM_ADMIN_KEY": ADMIN_KEY, "TENANTLM_LOG_JSON": "true", "TENANTLM_WARMUP": str(warmup).lower(),
                "TENANTLM_MAX_BODY_BYTES": str(1024 * 1024), **config.env})
    if database_url:
        env["TENANTLM_DATABASE_URL"] = database_url
    if migrate_url:
        env["TENANTLM_DATABASE_MIGRATE_URL"] = migrate_url
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "tenantlm.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
           "--config", str(cfg_file)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/readyz", proc, timeout, log)
    return Process(proc, log, url)


@dataclass
class Tenant:
    id: str
    name: str
    admin_key: str
    member_key: str
    viewer_key: str


@dataclass
class Live:
    url: str
    process: Process
    backend: str

    def admin(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=60)

    def sdk(self, key: str, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, **kw)

    def new_tenant(self, name: str, **fields: Any) -> Tenant:
        with self.admin() as c:
            r = c.post("/admin/v1/tenants", json={"name": name, **fields})
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            keys = {}
            for role in ("admin", "member", "viewer"):
                kr = c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": f"{role}-key", "role": role})
                assert kr.status_code == 201, kr.text
                keys[role] = kr.json()["key"]
        return Tenant(tid, name, keys["admin"], keys["member"], keys["viewer"])


def cli(server: Live, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    """Run ``tenantlm`` against a live server, as an operator would (no stdin, so confirmations need --yes)."""
    env = {**os.environ, "TENANTLM_URL": server.url, "TENANTLM_ADMIN_KEY": key}
    return subprocess.run([sys.executable, "-m", "tenantlm.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``tenantlm ARGS`` to completion with no TENANTLM_* variable from the caller's environment (only ``env``'s),
    as an operator would from a shell (no stdin)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
    return subprocess.run([sys.executable, "-m", "tenantlm.cli", *args], env={**clean, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def move_tenant(live: Live, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /admin/v1/tenants/{id}/tier with ``body`` and poll the tenant until its move ends; it must be done."""
    with live.admin() as c:
        r = c.post(f"/admin/v1/tenants/{tenant_id}/tier", json=body)
        assert r.status_code == 202, r.text
        got = r.json()
        while got["tier_move"]["phase"] not in ("done", "failed"):
            time.sleep(0.05)
            got = c.get(f"/admin/v1/tenants/{tenant_id}").json()
    assert got["tier_move"]["phase"] == "done", got["tier_move"]
    return dict(got)


@dataclass
class TenantLoad:
    """Threads sending a tenant's requests until stopped, one thread per (client, kind): "chat", "upload" (kept in
    ``uploaded``), "list" or "search" (of ``store_id``, expecting the lava document first). Every failure is kept in
    ``failures``, none is retried (give the clients ``max_retries=0``)."""

    workers: list[tuple[openai.OpenAI, str]]
    store_id: str | None = None
    served: int = 0
    failures: list[str] = field(default_factory=list)
    uploaded: dict[str, bytes] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, sdk: openai.OpenAI, kind: str, n: int) -> None:
        if kind == "chat":
            out = sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": f"{n}"}])
            assert out.choices[0].message.content
        elif kind == "upload":
            data = f"file {n} {uuid.uuid4().hex}".encode()
            f = sdk.files.create(file=(f"f{n}.txt", data), purpose="assistants")
            with self.lock:
                self.uploaded[f.id] = data
        elif kind == "search":
            assert self.store_id is not None
            hits = sdk.vector_stores.search(self.store_id, query="lava magma")
            assert hits.data and "lava" in hits.data[0].content[0].text
        else:
            assert sdk.files.list().data is not None

    def _worker(self, sdk: openai.OpenAI, kind: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self._one(sdk, kind, n)
            except Exception as exc:  # every failure is counted and shown, none is retried
                with self.lock:
                    self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                with self.lock:
                    self.served += 1

    def __enter__(self) -> TenantLoad:
        self.threads = [threading.Thread(target=self._worker, args=w, daemon=True) for w in self.workers]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
