"""Gateway overhead: /v1/chat/completions through TenantLM vs the fake provider served directly.

Usage::

    python bench/overhead.py [--duration 10] [--warmup 2] [--concurrency 1,16,64] [--out bench/results/overhead.json]

Starts, on 127.0.0.1 and free ports with a temporary data dir, the fake upstream (``tenantlm fake-upstream``) and
TenantLM (``tenantlm serve``), creates a tenant and a member key, then for each concurrency N drives three targets
with ``wrk`` (N connections, min(N, 2) threads, closed loop) and the same non-streaming chat body:

- ``direct``: the fake upstream itself (the baseline; no auth, raw ASGI + orjson);
- ``gw-fake``: TenantLM -> the in-process ``fake`` provider (model ``fake-chat``);
- ``gw-proxied``: TenantLM -> ``openai_compatible`` provider -> the same fake upstream over HTTP (model ``proxied``).

Before each measured cell one request is checked to be a valid ``chat.completion`` with usage, so an error path is
never benchmarked; the upstream's request counter is read around each cell to confirm where requests went.
Both servers and the load generator share this machine's cores: the CPU each used during a cell is reported.
Both subprocesses are stopped by PID at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
TOKENS = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_TIMEOUT = "10s"
# % of one core used by all other processes, above which a cell is flagged as contaminated. Approximate: /proc/stat
# is tick-sampled while per-process times are exact, so a quiet machine reads anywhere from about -15 to +15.
OTHER_CPU_WARN = 25

# wrk calls done() once, in the main thread, with the summary of all threads. Latencies are in microseconds.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"err_connect":%.0f,"err_read":%.0f,' ..
    '"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,"mean_us":%.2f,"stdev_us":%.2f,"min_us":%.0f,' ..
    '"max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"p999_us":%.0f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


# --- processes ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (from /proc), or 0 if it is gone."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def machine_cpu_seconds() -> dict[str, float]:
    """CPU time of all cores so far, from /proc/stat: processes (user + nice + system), interrupts (irq + softirq,
    where loopback networking is mostly charged) and steal (time the hypervisor gave to someone else)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return {"procs": (v[0] + v[1] + v[2]) / CLK_TCK, "irq": (v[5] + v[6]) / CLK_TCK, "steal": v[7] / CLK_TCK}


def _wait_ready(proc: Proc, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} (its log follows)")
        try:
            if httpx.get(proc.url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {proc.url}{path} after {timeout}s (its log follows)")


def _spawn(name: str, cmd: list[str], tmp: Path, env: dict[str, str], procs: list[Proc]) -> Proc:
    port = int(cmd[cmd.index("--port") + 1])
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    proc = Proc(name, popen, log, f"http://127.0.0.1:{port}")
    procs.append(proc)
    return proc


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
    env.update({"TENANTLM_ADMIN_KEY": ADMIN_KEY, "TENANTLM_WARMUP": "false", "TENANTLM_ACCESS_LOG": "false",
                "TENANTLM_LOG_LEVEL": "WARNING"})
    return env


def start_upstream(tmp: Path, procs: list[Proc]) -> Proc:
    cmd = [sys.executable, "-m", "tenantlm.cli", "fake-upstream", "--host", "127.0.0.1", "--port", str(free_port()),
           "--tokens", str(TOKENS)]
    proc = _spawn("fake-upstream", cmd, tmp, _base_env(), procs)
    _wait_ready(proc, "/v1/models", 30)
    return proc


def start_lean_upstream(tmp: Path, procs: list[Proc]) -> Proc:
    """``bench/lean_upstream.py``: the fake model's replies at ~30 µs per request (see its docstring)."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "lean_upstream.py"), "--host", "127.0.0.1",
           "--port", str(free_port()), "--tokens", str(TOKENS)]
    proc = _spawn("lean-upstream", cmd, tmp, _base_env(), procs)
    _wait_ready(proc, "/v1/models", 30)
    return proc


def start_gateway(tmp: Path, upstream: Proc, procs: list[Proc], extra_env: dict[str, str]) -> Proc:
    cfg = {"providers": [{"name": "fake", "type": "fake", "tokens": TOKENS},
                         {"name": "up", "type": "openai_compatible", "base_url": upstream.url + "/v1"}],
           "models": [{"name": "fake-chat", "provider": "fake"}, {"name": "proxied", "provider": "up"}]}
    cfg_file = tmp / "tenantlm.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "tenantlm.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
           "--data-dir", str(tmp / "data"), "--config", str(cfg_file)]
    proc = _spawn("tenantlm", cmd, tmp, {**_base_env(), **extra_env}, procs)
    _wait_ready(proc, "/readyz", 120)
    return proc


def create_member_key(gateway: Proc) -> str:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        r = c.post("/admin/v1/tenants", json={"name": "bench"})
        if r.status_code != 201:
            raise RuntimeError(f"creating the tenant: HTTP {r.status_code} {r.text[:500]}")
        tid = r.json()["id"]
        # Limits that never refuse here: the overhead of checking them is part of what is measured.
        big = 10**12
        limits = {"rpm": big, "tpm": big, "max_concurrency": 10**6, "monthly_token_budget": big,
                  "monthly_cost_budget_usd": 1e9}
        r = c.put(f"/admin/v1/tenants/{tid}/limits", json=limits)
        if r.status_code != 200:
            raise RuntimeError(f"setting limits: HTTP {r.status_code} {r.text[:500]}")
        r = c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": "bench", "role": "member"})
        if r.status_code != 201:
            raise RuntimeError(f"creating the key: HTTP {r.status_code} {r.text[:500]}")
        return str(r.json()["key"])


# --- targets and checks -------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    description: str
    url: str
    model: str
    api_key: str | None
    check_model: bool = True  # a peer gateway may relabel the model in its reply

    def body(self) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": TOKENS}

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def check_chat(target: Target) -> dict[str, Any]:
    """One request; raise unless it is a 200 chat.completion with consistent usage. Returns the usage."""
    r = httpx.post(target.url, json=target.body(), headers=target.headers(), timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{target.name}: check request got HTTP {r.status_code}: {r.text[:500]}")
    data = r.json()
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    problems = []
    if data.get("object") != "chat.completion":
        problems.append(f"object={data.get('object')!r}")
    if data.get("model") != target.model and target.api_key and target.check_model:
        problems.append(f"model={data.get('model')!r}")
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str) or not message["content"]:
        problems.append(f"message={message!r}")
    if choice.get("finish_reason") not in ("stop", "length"):
        problems.append(f"finish_reason={choice.get('finish_reason')!r}")
    counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    if not all(isinstance(n, int) for n in counts) or counts[0] + counts[1] != counts[2] or not 0 < counts[1] <= TOKENS:
        problems.append(f"usage={usage!r}")
    if problems:
        raise RuntimeError(f"{target.name}: invalid chat.completion ({', '.join(problems)}): {r.text[:500]}")
    return dict(usage)


def upstream_requests(upstream: Proc) -> int:
    """The fake upstream's request counter (it counts every request, this stats call included)."""
    return int(httpx.get(upstream.url + "/fake/stats", timeout=10).json()["requests"])


# --- wrk ----------------------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required: install it (Debian: apt-get install -y wrk) and rerun")
    return found


def write_script(target: Target, tmp: Path) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {target.api_key}"' if target.api_key else ""
    path = tmp / f"{target.name}.lua"
    path.write_text(LUA_TEMPLATE.format(body=json.dumps(target.body()), auth=auth))
    return path


def run_wrk(wrk: str, script: Path, url: str, connections: int, seconds: int) -> dict[str, float]:
    threads = min(connections, 2)
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT, "--latency",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return {k: float(v) for k, v in json.loads(line[len("BENCH_JSON "):]).items()}
    raise RuntimeError(f"wrk gave no summary (rc={out.returncode}):\n{out.stdout}\n{out.stderr}")


# --- one cell -----------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    target: str
    concurrency: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    upstream_calls: int
    upstream_calls_ok: bool
    cpu_pct: dict[str, float]
    check_usage: dict[str, Any]
    added: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def measure(wrk: str, target: Target, script: Path, conc: int, args: argparse.Namespace, upstream: Proc,
            gateway: Proc | None) -> Cell:
    usage = check_chat(target)
    if args.warmup > 0:
        run_wrk(wrk, script, target.url, conc, args.warmup)
    time.sleep(0.5)  # let the last warm-up requests drain
    before_up = upstream_requests(upstream)
    cpu0 = {"tenantlm": gateway.cpu_seconds() if gateway else 0.0, "upstream": upstream.cpu_seconds(),
            **machine_cpu_seconds()}
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    s = run_wrk(wrk, script, target.url, conc, args.duration)
    wall = time.monotonic() - t0
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = {"tenantlm": gateway.cpu_seconds() if gateway else 0.0, "upstream": upstream.cpu_seconds(),
            **machine_cpu_seconds()}
    time.sleep(0.5)  # requests cut off by wrk's stop may still reach the upstream
    calls = upstream_requests(upstream) - before_up - 1  # minus the first stats call
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in cpu0}
    cpu["wrk"] = round(100 * ((wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)) / wall, 1)
    # every other process on the machine (other users' jobs, kernel threads)
    cpu["other"] = round(cpu.pop("procs") - cpu["tenantlm"] - cpu["upstream"] - cpu["wrk"], 1)
    requests = int(s["requests"])
    # direct and gw-proxied: every completed request hit the upstream once, plus the few that wrk cut off when it
    # stopped (seen: up to conc with this wrk; 2 * conc + 2 allowed); gw-fake: none may reach it.
    expected_ok = calls == 0 if target.name == "gw-fake" else requests <= calls <= requests + 2 * conc + 2
    return Cell(
        target=target.name, concurrency=conc, threads=min(conc, 2), duration_s=round(s["duration_us"] / 1e6, 3),
        requests=requests, rps=round(requests / (s["duration_us"] / 1e6), 1),
        p50_ms=s["p50_us"] / 1000, p90_ms=s["p90_us"] / 1000, p99_ms=s["p99_us"] / 1000,
        p999_ms=s["p999_us"] / 1000, mean_ms=round(s["mean_us"] / 1000, 3), max_ms=s["max_us"] / 1000,
        non_2xx=int(s["err_status"]),
        socket_errors={k: int(s[f"err_{k}"]) for k in ("connect", "read", "write", "timeout")},
        upstream_calls=calls, upstream_calls_ok=expected_ok, cpu_pct=cpu, check_usage=usage)


def add_comparisons(cells: list[Cell]) -> None:
    base = {c.concurrency: c for c in cells if c.target == "direct"}
    for c in cells:
        b = base.get(c.concurrency)
        if c.target == "direct" or b is None:
            continue
        c.added = {"p50_ms": round(c.p50_ms - b.p50_ms, 3), "p99_ms": round(c.p99_ms - b.p99_ms, 3),
                   "rps_ratio": round(c.rps / b.rps, 3) if b.rps else 0.0}


# --- report -------------------------------------------------------------------------------------------------------
def machine_info(wrk: str) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "unknown")
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout
    src = subprocess.run([sys.executable, "-c", "import os, tenantlm; print(os.path.dirname(tenantlm.__file__))"],
                         capture_output=True, text=True, check=False).stdout.strip()
    git = subprocess.run(["git", "-C", src or str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", src or str(ROOT), "status", "--porcelain", "."], capture_output=True,
                           text=True, check=False).stdout.strip()
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "wrk": wrk_version.split("Copyright")[0].strip(),
            "tenantlm_src": src, "git_commit": git or None, "src_uncommitted_changes": bool(dirty) if git else None,
            "loadavg_at_start": os.getloadavg()}


def _flag(c: Cell) -> str:
    notes = []
    if c.errors:
        notes.append(f"**{c.non_2xx} non-2xx, {sum(c.socket_errors.values())} socket errors**")
    if not c.upstream_calls_ok:
        notes.append(f"**upstream saw {c.upstream_calls} calls**")
    if c.cpu_pct["other"] > OTHER_CPU_WARN:
        notes.append(f"**other load {c.cpu_pct['other']:.0f} % CPU**")
    return "; ".join(notes) or "0"


def markdown(cells: list[Cell], info: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {info['nproc']} cores ({info['cpu_model']}), Python {info['python']}, {info['wrk']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}.",
        f"wrk closed loop, {args.duration} s per cell after {args.warmup} s warm-up, threads = min(connections, 2), "
        f"non-streaming chat, {TOKENS} completion tokens.",
        "The load generator, the upstream and the gateways share these cores (nothing pinned): CPU % is each "
        "process's CPU time over the cell's wall time (100 % = one core; 'other' = all other processes, flagged "
        f"above {OTHER_CPU_WARN} %; interrupt and steal time are in the JSON).",
        "",
        "| target | conc | req/s | p50 ms | p99 ms | errors | added p50 ms | added p99 ms | req/s vs direct "
        "| CPU % tenantlm / upstream / wrk / other |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for c in cells:
        add = c.added
        vs = "baseline | baseline | 1.000" if c.target == "direct" else "n/a | n/a | n/a"
        if add:
            vs = f"{add['p50_ms']:+.3f} | {add['p99_ms']:+.3f} | {add['rps_ratio']:.3f}"
        cpu = " / ".join(f"{c.cpu_pct[k]:.0f}" for k in ("tenantlm", "upstream", "wrk", "other"))
        lines.append(f"| {c.target} | {c.concurrency} | {c.rps:.1f} | {c.p50_ms:.3f} | {c.p99_ms:.3f} | {_flag(c)} | "
                     f"{vs} | {cpu} |")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="seconds measured per (target, concurrency)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load before each measurement")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts")
    p.add_argument("--targets", default="direct,gw-fake,gw-proxied", help="subset of direct,gw-fake,gw-proxied")
    p.add_argument("--server-env", action="append", default=[], metavar="TENANTLM_X=VALUE",
                   help="extra environment for the TenantLM server (repeatable; for experiments)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = p.parse_args(argv)
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    args.targets = [x.strip() for x in str(args.targets).split(",") if x.strip()]
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    wrk = ensure_wrk()
    info = machine_info(wrk)
    upstream = start_upstream(tmp, procs)
    info["pids"] = {"upstream": upstream.popen.pid}
    print(f"fake upstream pid {upstream.popen.pid} at {upstream.url}", file=sys.stderr)
    all_targets = [Target("direct", "fake upstream served directly", upstream.url + "/v1/chat/completions", "fake",
                          None)]
    gateway = None
    if any(t.startswith("gw-") for t in args.targets):
        gateway = start_gateway(tmp, upstream, procs, dict(e.split("=", 1) for e in args.server_env))
        key = create_member_key(gateway)
        info["pids"]["tenantlm"] = gateway.popen.pid
        print(f"TenantLM pid {gateway.popen.pid} at {gateway.url}", file=sys.stderr)
        chat_url = gateway.url + "/v1/chat/completions"
        all_targets += [Target("gw-fake", "TenantLM -> in-process fake provider", chat_url, "fake-chat", key),
                        Target("gw-proxied", "TenantLM -> openai_compatible -> fake upstream", chat_url, "proxied",
                               key)]
    targets = [t for t in all_targets if t.name in args.targets]
    scripts = {t.name: write_script(t, tmp) for t in targets}
    cells: list[Cell] = []
    for conc in args.concurrency:
        for t in targets:
            print(f"  {t.name:<11} c={conc:<3} ...", end="", flush=True, file=sys.stderr)
            cell = measure(wrk, t, scripts[t.name], conc, args, upstream, gateway)
            print(f" {cell.rps:8.1f} req/s  p50 {cell.p50_ms:7.3f} ms  p99 {cell.p99_ms:7.3f} ms  "
                  f"errors {cell.errors}", file=sys.stderr)
            cells.append(cell)
    add_comparisons(cells)
    table = markdown(cells, info, args)
    print(table)
    bad = [c for c in cells if c.errors or not c.upstream_calls_ok]
    if bad:
        print(f"\nWARNING: {len(bad)} cell(s) had errors or unexpected upstream call counts (flagged above).")
    noisy = [c for c in cells if c.cpu_pct["other"] > OTHER_CPU_WARN]
    if noisy:
        print(f"\nWARNING: {len(noisy)} cell(s) ran while something else used the CPU (flagged above): rerun on a "
              "quiet machine before quoting them.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "overhead", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": "python bench/overhead.py " + " ".join(sys.argv[1:]), "machine": info,
              "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
                           "completion_tokens": TOKENS, "wrk_timeout": WRK_TIMEOUT,
                           "server_env": args.server_env},
              "targets": {t.name: {"description": t.description, "model": t.model} for t in targets},
              "cells": [{**asdict(c), "errors": c.errors} for c in cells], "markdown": table}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 1 if bad else 0


def run_guarded(run_fn: Callable[[argparse.Namespace, Path, list[Proc]], int], args: argparse.Namespace,
                prefix: str) -> int:
    """Run a bench in a temporary dir; on failure show the servers' log tails; always stop every server by PID."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            return run_fn(args, Path(tmp), procs)
        except (RuntimeError, httpx.HTTPError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            for p in procs:
                print(f"--- {p.name} log tail ---\n{p.tail()}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print(f"interrupted ({str(exc) or 'Ctrl-C'}); stopping the servers", file=sys.stderr)
            return 130
        finally:
            for p in reversed(procs):
                p.stop()


def main(argv: list[str] | None = None) -> int:
    return run_guarded(run, parse_args(argv), "tenantlm-bench-")


if __name__ == "__main__":
    sys.exit(main())
