"""P1: the fake upstream directly vs TenantLM with its full admission path vs the LiteLLM proxy, same upstream.

Usage::

    python bench/p1_gateways.py [--rounds 3] [--duration 10] [--warmup 2] [--concurrency 1,16,64]
                                [--skip-litellm] [--upstream lean|fake] [--out bench/results/p1_gateways.json]

Everything binds to 127.0.0.1 on free ports and is stopped by PID at the end. Targets, all driven by ``wrk`` with the
same non-streaming chat body (see ``bench/overhead.py``, whose machinery this reuses):

- ``direct``: the upstream itself — its own throughput, to show it is not the bottleneck. By default that is
  ``bench/lean_upstream.py`` (the fake model's replies on a bare asyncio protocol, ~30 µs per request); with
  ``--upstream fake`` it is ``tenantlm fake-upstream`` (an ASGI app under uvicorn), as in the runs before
  2026-11-29 22:30Z. At one connection every process in the chain sleeps between requests, and on this VM the
  ASGI fake then costs 260-300 µs of CPU per request instead of its ~130 back to back: a quarter of TenantLM's
  request cycle, the same constant added to every gateway, which pulls every ratio towards 1. The lean one costs
  65-125 µs there (docs/benchmarks.md). Every target below uses the same upstream;
- ``tenantlm``: ``tenantlm serve`` (one process, SQLite) -> ``openai_compatible`` -> the same upstream, with a tenant
  that has rpm, tpm, concurrency, monthly token and cost budgets set, a key with its own rpm/tpm sub-limits, the
  fair scheduler in front of the model and the usage ledger on: every request is authenticated, admitted on all
  levels, scheduled, proxied, settled and metered;
- ``tenantlm-interval``: the same with ``TENANTLM_LEDGER_SYNC=interval`` (usage events written to the journal before
  the response and fsynced every 50 ms, instead of fsynced before the response): what the fsync costs;
- ``litellm``: the LiteLLM proxy at a pinned version (default 1.106.2; never 1.82.7/1.82.8), installed by this
  script into its own venv under ``~/.cache/tenantlm/``, one worker, with per-deployment rpm/tpm limits and a global
  budget. LiteLLM's *virtual keys* (per-key budgets) need its Postgres database and Prisma query engine, which
  Prisma downloads at run time from its own servers; this machine can only reach PyPI, Debian and npm, so the
  comparison uses the master key with the limits LiteLLM can enforce without a database. Say so when quoting it.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as oh  # bench scripts are not a package: imported by path

LITELLM_VERSION = "1.106.2"
BAD_LITELLM = {"1.82.7", "1.82.8"}  # published with malware; never install
LITELLM_KEY = "sk-bench-master-0123456789"
BIG = 10**9


def litellm_venv(version: str) -> Path:
    if version in BAD_LITELLM:
        raise SystemExit(f"refusing LiteLLM {version}: that release was malicious")
    venv = Path.home() / ".cache" / "tenantlm" / f"litellm-{version}"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy]=={version} into {venv} (about 2 minutes)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={version}"], check=True)
    shown = subprocess.run([str(venv / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True,
                           check=True).stdout
    if f"Version: {version}" not in shown:
        raise SystemExit(f"{venv} does not hold litellm {version}")
    return venv


def start_litellm(tmp: Path, upstream: oh.Proc, procs: list[oh.Proc], version: str) -> oh.Proc:
    venv = litellm_venv(version)
    cfg = {
        "model_list": [{"model_name": "proxied",
                        "litellm_params": {"model": "openai/fake-upstream-model", "api_base": upstream.url + "/v1",
                                           "api_key": "sk-unused", "rpm": BIG, "tpm": BIG},
                        "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}],
        "litellm_settings": {"max_budget": 1e9, "budget_duration": "30d", "drop_params": True},
        "router_settings": {"provider_budget_config": {"openai": {"budget_limit": 1e9, "time_period": "30d"}}},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    cfg_file = tmp / "litellm.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    port = oh.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTLM_", "LITELLM_", "OPENAI_"))}
    env.update({"LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"})
    cmd = [str(venv / "bin" / "litellm"), "--config", str(cfg_file), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1"]
    proc = oh._spawn("litellm", cmd, tmp, env, procs)
    oh._wait_ready(proc, "/health/liveliness", 180)
    return proc


def limited_key(gateway: oh.Proc) -> str:
    """A tenant with every kind of limit set (high enough never to refuse here) and a key with sub-limits."""
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {oh.ADMIN_KEY}"}, timeout=30) as c:
        tid = c.post("/admin/v1/tenants", json={"name": "p1", "plan": "pro"}).json()["id"]
        limits = {"rpm": BIG, "tpm": BIG, "max_concurrency": 100_000, "monthly_token_budget": BIG * 1000,
                  "monthly_cost_budget_usd": 1e9, "daily_token_budget": BIG * 100, "weight": 1}
        r = c.put(f"/admin/v1/tenants/{tid}/limits", json=limits)
        if r.status_code != 200:
            raise RuntimeError(f"setting limits: HTTP {r.status_code} {r.text[:300]}")
        key = c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": "p1", "role": "member"}).json()
        r = c.put(f"/admin/v1/tenants/{tid}/keys/{key['id']}/limits", json={"rpm": BIG, "tpm": BIG})
        if r.status_code != 200:
            raise RuntimeError(f"setting key limits: HTTP {r.status_code} {r.text[:300]}")
        return str(key["key"])


def run(args: argparse.Namespace, tmp: Path, procs: list[oh.Proc]) -> int:
    wrk = oh.ensure_wrk()
    info = oh.machine_info(wrk)
    upstream = oh.start_lean_upstream(tmp, procs) if args.upstream == "lean" else oh.start_upstream(tmp, procs)
    gateway = oh.start_gateway(tmp, upstream, procs, {})
    what = ("lean upstream (bench/lean_upstream.py)" if args.upstream == "lean"
            else "fake upstream (tenantlm fake-upstream)")
    targets = [oh.Target("direct", f"{what} served directly", upstream.url + "/v1/chat/completions", "fake", None),
               oh.Target("tenantlm", f"TenantLM, full admission path -> openai_compatible -> {what}",
                         gateway.url + "/v1/chat/completions", "proxied", limited_key(gateway))]
    servers: dict[str, oh.Proc | None] = {"direct": None, "tenantlm": gateway}
    if not args.skip_interval:
        (tmp / "interval").mkdir()
        relaxed = oh.start_gateway(tmp / "interval", upstream, procs, {"TENANTLM_LEDGER_SYNC": "interval"})
        targets.append(oh.Target("tenantlm-interval", "the same, with TENANTLM_LEDGER_SYNC=interval (usage events "
                                 "written before the response, fsynced every 50 ms)",
                                 relaxed.url + "/v1/chat/completions", "proxied", limited_key(relaxed)))
        servers["tenantlm-interval"] = relaxed
    if not args.skip_litellm:
        peer = start_litellm(tmp, upstream, procs, args.litellm_version)
        targets.append(oh.Target("litellm", f"LiteLLM {args.litellm_version} proxy -> {what}",
                                 peer.url + "/v1/chat/completions", "proxied", LITELLM_KEY, check_model=False))
        servers["litellm"] = peer
    info["pids"] = {"upstream": upstream.popen.pid, **{k: v.popen.pid for k, v in servers.items() if v}}
    scripts = {t.name: oh.write_script(t, tmp) for t in targets}
    measured: list[list[oh.Cell]] = []
    for round_ in range(args.rounds):
        # Each round measures every target at every concurrency; odd rounds take the targets in reverse, so no
        # target always runs right after the same neighbour or at the same point of a VM's slow phase.
        order = targets if round_ % 2 == 0 else targets[::-1]
        this: list[oh.Cell] = []
        for conc in args.concurrency:
            for t in order:
                print(f"  round {round_ + 1}/{args.rounds} {t.name:<9} c={conc:<3} ...", end="", flush=True,
                      file=sys.stderr)
                cell = oh.measure(wrk, t, scripts[t.name], conc, args, upstream, servers[t.name])
                print(f" {cell.rps:8.1f} req/s  p50 {cell.p50_ms:8.3f} ms  p99 {cell.p99_ms:8.3f} ms  "
                      f"errors {cell.errors}", file=sys.stderr)
                this.append(cell)
        measured.append(this)
    cells = median_cells(measured, targets, args.concurrency)
    oh.add_comparisons(cells)
    ratios = _ratios(cells, "tenantlm")
    relaxed_ratios = _ratios(cells, "tenantlm-interval")
    per_round = [_ratios(r, "tenantlm") for r in measured]
    table = oh.markdown(cells, info, args)
    if args.rounds > 1:
        table = (f"Each row: the median of {args.rounds} interleaved rounds by req/s (every round's cells are in the "
                 "JSON).\n" + table)
    print(table)
    print("\nTenantLM req/s ÷ LiteLLM req/s" + (f" (medians of {args.rounds} rounds)" if args.rounds > 1 else "") + ":",
          ratios or "(LiteLLM skipped)")
    if args.rounds > 1 and ratios:
        print("  by round:", per_round)
    if relaxed_ratios:
        print("TenantLM (ledger sync=interval) req/s ÷ LiteLLM req/s:", relaxed_ratios)
    bad = [c for r in measured for c in r if c.errors or not c.upstream_calls_ok]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "p1_gateways", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/p1_gateways.py " + " ".join(sys.argv[1:]), "machine": info,
        "settings": {"upstream": args.upstream, "rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "concurrency": args.concurrency,
                     "litellm_version": None if args.skip_litellm else args.litellm_version},
        "targets": {t.name: t.description for t in targets}, "tenantlm_over_litellm_rps": ratios,
        "tenantlm_interval_over_litellm_rps": relaxed_ratios, "tenantlm_over_litellm_rps_by_round": per_round,
        "cells": [{**asdict(c), "errors": c.errors} for c in cells],
        "rounds": [[{**asdict(c), "errors": c.errors} for c in r] for r in measured], "markdown": table},
        indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 1 if bad else 0


def median_cells(measured: list[list[oh.Cell]], targets: list[oh.Target], concurrency: list[int]
                 ) -> list[oh.Cell]:
    """Per target and concurrency, the round whose req/s is the median (the lower middle one for an even count):
    a whole measured cell, so its latencies and CPU belong to the same 10 s as its throughput."""
    out = []
    for conc in concurrency:
        for t in targets:
            runs = sorted((c for r in measured for c in r if c.target == t.name and c.concurrency == conc),
                          key=lambda c: c.rps)
            out.append(copy.deepcopy(runs[(len(runs) - 1) // 2]))
    return out


def _ratios(cells: list[oh.Cell], name: str) -> dict[int, float]:
    return {c.concurrency: round(t.rps / c.rps, 1) for c in cells if c.target == "litellm"
            for t in cells if t.target == name and t.concurrency == c.concurrency and c.rps > 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="measure every cell this many times, interleaved; report "
                                                          "the median cell of each (default 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--litellm-version", default=LITELLM_VERSION)
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--upstream", choices=("lean", "fake"), default="lean",
                   help="lean: bench/lean_upstream.py (default); fake: tenantlm fake-upstream, as in runs before "
                        "2026-11-29 22:30Z")
    p.add_argument("--skip-interval", action="store_true", help="leave out the tenantlm-interval target")
    p.add_argument("--out", type=Path, default=oh.ROOT / "bench" / "results" / "p1_gateways.json")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    args.server_env = []
    return args


def main(argv: list[str] | None = None) -> int:
    return oh.run_guarded(run, parse_args(argv), "tenantlm-p1-")


if __name__ == "__main__":
    sys.exit(main())
