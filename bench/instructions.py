"""Instructions per chat request, counted by valgrind's callgrind: a deterministic measure of the gateway's own work
on the request path, for changes far smaller than this shared VM's ±10 % timing noise.

Usage::

    python bench/instructions.py [--requests 1000] [--warmup 300] [--src LABEL=PATH ...]
                                 [--out bench/results/instructions.json]

Needs valgrind (``apt-get install valgrind``). Starts ``tenantlm fake-upstream`` on 127.0.0.1, then, for each
``--src`` (a source tree to import ``tenantlm`` from, e.g. a ``git worktree`` of an older commit; default: this
checkout), one ``tenantlm serve`` under ``valgrind --tool=callgrind --instr-atstart=no``, with the tenant and key
that ``bench/p1_gateways.py`` sets up (every kind of limit, key sub-limits, the fair scheduler, the ledger). It sends
``--warmup`` non-streaming chat completions with instrumentation off, switches it on, sends ``--requests`` more one at
a time over one keep-alive connection, and reports the instructions executed per request by all of the gateway's
threads (user space; system calls are not counted). Gateways are stopped by PID at the end.

What runs on a timer rather than per request is switched off for the count (settings below, and
``bench/instructions_site/sitecustomize.py``): under valgrind a request takes ~20x longer, so periodic work would be
charged to far fewer requests than in real use. The journal's fdatasync is a no-op there, so the figure leaves out
the fsync's wait, which no instruction count can show. Repeated runs of the same code agree within ~0.1 %.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as oh  # bench scripts are not a package: imported by path
import p1_gateways as p1

SITE = Path(__file__).resolve().parent / "instructions_site"
QUIET = {"TENANTLM_LEDGER_FLUSH_INTERVAL_S": "3600", "TENANTLM_KEY_CACHE_TTL_S": "3600",
         "TENANTLM_AUDIT_CHECKPOINT_INTERVAL_S": "3600", "TENANTLM_RETENTION_SWEEP_S": "3600",
         "PYTHONHASHSEED": "0", "TENANTLM_BENCH_INSTRUCTIONS": "1"}
BODY = json.dumps({"model": "proxied", "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
                   "max_tokens": 16})


def send(port: int, key: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", BODY, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    finally:
        conn.close()


def total_instructions(directory: Path) -> int:
    """The sum of the ``totals:`` lines of the dumps callgrind wrote (the one asked for; the one at exit is 0)."""
    total = 0
    for dump in directory.glob("callgrind.out*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(label: str, src: Path, tmp: Path, upstream: oh.Proc, procs: list[oh.Proc], args: argparse.Namespace
            ) -> dict[str, object]:  # fmt: skip
    where = tmp / label
    where.mkdir()
    spawn = oh._spawn

    def under_valgrind(name: str, cmd: list[str], tmp_: Path, env: dict[str, str], procs_: list[oh.Proc]) -> oh.Proc:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp_}/callgrind.out",
               "--dump-instr=no", "--collect-jumps=no", *cmd]
        return spawn(name, cmd, tmp_, env, procs_)

    wait_ready = oh._wait_ready
    oh._spawn = under_valgrind
    oh._wait_ready = lambda proc, path, timeout: wait_ready(proc, path, 900)
    try:
        gateway = oh.start_gateway(where, upstream, procs, {**QUIET, "PYTHONPATH": f"{SITE}:{src}"})
    finally:
        oh._spawn, oh._wait_ready = spawn, wait_ready
    started = time.monotonic()
    key = p1.limited_key(gateway)
    port = int(gateway.url.rsplit(":", 1)[1])
    pid = str(gateway.popen.pid)
    send(port, key, args.warmup)
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    send(port, key, args.requests)
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    gateway.stop()
    procs.remove(gateway)
    total = total_instructions(where)
    if total <= 0:
        raise RuntimeError(f"callgrind wrote no counts for {label} (see {where})")
    result = {"label": label, "src": str(src), "requests": args.requests, "instructions": total,
              "per_request": round(total / args.requests), "seconds": round(time.monotonic() - started, 1)}
    print(f"  {label:<16} {result['per_request']:>12,} instructions/request  ({args.requests} requests)",
          file=sys.stderr)
    return result


def run(args: argparse.Namespace, tmp: Path, procs: list[oh.Proc]) -> int:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install valgrind)")
    upstream = oh.start_upstream(tmp, procs)
    results = [measure(label, src, tmp, upstream, procs, args) for label, src in args.src]
    base = results[0]["per_request"]
    for r in results:
        r["vs_first"] = round(int(str(r["per_request"])) / int(str(base)), 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "instructions", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/instructions.py " + " ".join(sys.argv[1:]), "results": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def parse_src(value: str) -> tuple[str, Path]:
    label, sep, path = value.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError("--src takes LABEL=PATH (a directory that contains the tenantlm package)")
    src = Path(path).resolve()
    if not (src / "tenantlm" / "__init__.py").exists():
        raise argparse.ArgumentTypeError(f"{src} has no tenantlm package")
    return label, src


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--src", type=parse_src, action="append", default=[],
                   help="LABEL=PATH of a source tree to count (repeatable; default: this checkout's src)")
    p.add_argument("--out", type=Path, default=oh.ROOT / "bench" / "results" / "instructions.json")
    args = p.parse_args(argv)
    if not args.src:
        args.src = [("this-checkout", oh.ROOT / "src")]
    if args.requests < 1 or args.warmup < 0:
        p.error("--requests must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return oh.run_guarded(run, parse_args(argv), "tenantlm-instructions-")


if __name__ == "__main__":
    sys.exit(main())
