"""Cache figures: hit vs miss latency through the full path, hit ratio and cost saved on a replayed workload, and the
semantic cache's precision at its default threshold.

Usage::

    python bench/cache.py [--samples 300] [--requests 2000] [--prompts 400] [--out bench/results/cache.json]

- **latency**: a ``tenantlm serve`` (SQLite, embedded memory cache) in front of two fake upstreams
  (``tenantlm fake-upstream``, 64 completion tokens: ``instant`` answers at once, so the gateway's own work is all
  that differs; ``paced`` waits 2 ms a token, 128 ms an answer, a fast real model). One client, keep-alive,
  sequential. Three tenants: cache off, exact cache, semantic cache (MiniLM embeddings of the prompt, the server's
  local embedder). Per sample a fresh prompt is sent to the cache-off tenant, then twice to the cached tenant (a
  miss, then a hit). Reported: p50/p90/p99 ms of each.
- **workload**: ``--requests`` requests drawn (seeded) from ``--prompts`` distinct prompts with Zipf weights
  (s = 1.1: a few frequent questions, a long tail), replayed against an exact-cache tenant of the ``instant`` model
  (priced 0.15 / 0.60 USD per 1M tokens, the default hit price factor 0). Reported: the hit ratio seen in the
  ``x-tenantlm-cache`` headers, the best possible (1 - distinct / requests), and the cost from the usage API: what
  was billed, and what the hits would have cost as model calls (their tokens at the catalog price).
- **semantic precision**: ``bench/data/cache/pairs.jsonl`` (40 paraphrase pairs, 40 non-paraphrase pairs, most of
  them near misses: another country, number, verb or negation). Each side is reduced as the cache reduces a last
  user message (``respcache.keys.semantic_text``) and embedded with the server's local all-MiniLM-L6-v2 embedder;
  a pair is a hit when the cosine reaches the threshold. Reported per threshold: precision (hits that are
  paraphrases), recall (paraphrases that hit) and the false hits.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from live import Live, Tenant, catalog_config, start_fake_upstream, start_server
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.respcache import keys
from tenantlm.respcache.policy import DEFAULT_THRESHOLD
from tenantlm.settings import ProviderConfig

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("account", "bridge", "candle", "desert", "engine", "forest", "garden", "harbor", "island", "jacket",
         "kettle", "ladder", "magnet", "needle", "orange", "pencil", "quartz", "rocket", "saddle", "tunnel",
         "umbrella", "violin", "window", "yogurt", "zipper", "anchor", "basket", "cactus", "dragon", "feather",
         "glacier", "helmet", "insect", "jungle", "kitten", "lantern", "meadow", "noodle", "oyster", "parrot",
         "quiver", "ribbon", "salmon", "tomato", "utensil", "valley", "walnut", "pyramid", "compass", "thunder",
         "invoice", "refund", "password", "shipping", "warranty", "discount", "battery", "printer", "sandwich",
         "volcano", "theorem", "poetry", "tennis", "galaxy", "mortgage", "vaccine", "puzzle", "castle", "orbit")
PRICE_IN, PRICE_OUT = 0.15, 0.60
THRESHOLDS = (0.85, 0.9, DEFAULT_THRESHOLD, 0.97)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": round(statistics.fmean(ordered), 3)}


def cached_tenant(live: Live, cache: dict[str, Any] | None) -> Tenant:
    t = live.new_tenant(f"bench-{uuid.uuid4().hex[:8]}")
    if cache is not None:
        with live.admin() as c:
            r = c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"cache": cache}})
            r.raise_for_status()
    return t


def ask(client: httpx.Client, key: str, model: str, text: str) -> tuple[float, str | None]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 64}
    started = time.perf_counter()
    r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    elapsed = (time.perf_counter() - started) * 1000
    r.raise_for_status()
    return elapsed, r.headers.get("x-tenantlm-cache")


def latency(live: Live, model: str, samples: int, semantic: bool) -> dict[str, Any]:
    off = cached_tenant(live, None)
    exact = cached_tenant(live, {"exact": True})
    sem = cached_tenant(live, {"semantic": True}) if semantic else None
    out: dict[str, list[float]] = {"off": [], "exact_miss": [], "exact_hit": [], "semantic_miss": [],
                                   "semantic_hit": []}
    rng = random.Random(5)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for i in range(-20, samples):  # the first 20 warm up (connections, the embedder), not recorded
            # random words: prompts that differ in meaning too, so a semantic lookup does not match an earlier one
            prompt = " ".join(rng.choice(WORDS) for _ in range(14)) + "?"
            rows = [("off", off, prompt + " (off)", None), ("exact_miss", exact, prompt, "miss"),
                    ("exact_hit", exact, prompt, "hit")]
            if sem is not None:
                rows += [("semantic_miss", sem, prompt, "miss"), ("semantic_hit", sem, prompt, "hit")]
            for name, tenant, text, expected in rows:
                ms, header = ask(client, tenant.member_key, model, text)
                if header != expected:
                    raise RuntimeError(f"{name}: expected x-tenantlm-cache {expected}, got {header}")
                if i >= 0:
                    out[name].append(ms)
    return {name: percentiles(v) for name, v in out.items() if v}


def workload(live: Live, model: str, requests: int, prompts: int) -> dict[str, Any]:
    rng = random.Random(17)
    weights = [1 / (k + 1) ** 1.1 for k in range(prompts)]
    picks = rng.choices(range(prompts), weights=weights, k=requests)
    t = cached_tenant(live, {"exact": True})
    hits = 0
    started = time.perf_counter()
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for k in picks:
            _, header = ask(client, t.member_key, model, f"frequently asked question number {k}?")
            hits += header == "hit"
    elapsed = time.perf_counter() - started
    rows = usage_rows(live, t.id, requests)
    billed = sum(r["cost_usd"] for r in rows.values())
    hit_row = rows.get("cache", {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "requests": 0})
    hits_as_calls = (hit_row["prompt_tokens"] * PRICE_IN + hit_row["completion_tokens"] * PRICE_OUT) / 1e6
    return {"requests": requests, "distinct_prompts": len(set(picks)), "hits": hits,
            "hit_ratio": round(hits / requests, 4), "best_hit_ratio": round(1 - len(set(picks)) / requests, 4),
            "ledger_hits": hit_row["requests"], "cached_tokens": hit_row["cached_tokens"],
            "billed_usd": round(billed, 6), "hits_priced_as_model_calls_usd": round(hits_as_calls, 6),
            "cost_saved_share": round(hits_as_calls / (billed + hits_as_calls), 4) if billed + hits_as_calls else 0,
            "seconds": round(elapsed, 2)}


def usage_rows(live: Live, tenant_id: str, requests: int) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 30
    with live.admin() as c:
        while True:
            data = c.get(f"/admin/v1/tenants/{tenant_id}/usage", params={"group_by": "provider"}).json()["data"]
            if sum(r["requests"] for r in data) >= requests or time.monotonic() > deadline:
                return {r["provider"]: r for r in data}
            time.sleep(0.5)


async def precision(path: Path) -> dict[str, Any]:
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    texts = [keys.semantic_text({"messages": [{"role": "user", "content": p[side]}]}) or ""
             for p in pairs for side in ("a", "b")]
    provider = LocalEmbeddingProvider(ProviderConfig(name="local", type="local"))  # as the server configures it
    try:
        result = await provider.embed(texts, model="all-minilm-l6-v2")
    finally:
        await provider.aclose()
    vectors = np.asarray(result.vectors, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = [float(vectors[2 * i] @ vectors[2 * i + 1]) for i in range(len(pairs))]
    out: dict[str, Any] = {"pairs": len(pairs), "paraphrases": sum(p["paraphrase"] for p in pairs), "thresholds": {}}
    for threshold in THRESHOLDS:
        hit = [s >= threshold for s in scores]
        tp = sum(h and p["paraphrase"] for h, p in zip(hit, pairs, strict=True))
        fp = [(p["a"], p["b"], round(s, 3)) for h, p, s in zip(hit, pairs, scores, strict=True)
              if h and not p["paraphrase"]]
        out["thresholds"][str(threshold)] = {
            "hits": sum(hit), "precision": round(tp / sum(hit), 4) if sum(hit) else None,
            "recall": round(tp / out["paraphrases"], 4), "false_hits": fp}
    para = [s for s, p in zip(scores, pairs, strict=True) if p["paraphrase"]]
    other = [s for s, p in zip(scores, pairs, strict=True) if not p["paraphrase"]]
    out["cosine"] = {"paraphrase": percentiles(para), "non_paraphrase": percentiles(other),
                     "non_paraphrase_max": round(max(other), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    results["semantic_precision"] = asyncio.run(precision(ROOT / "bench" / "data" / "cache" / "pairs.jsonl"))
    print(json.dumps(results["semantic_precision"], indent=1), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        instant = start_fake_upstream(Path(tmp), tokens=64)
        paced = start_fake_upstream(Path(tmp), tokens=64, token_latency_ms=2.0)
        config = catalog_config(None, local=True)
        for name, upstream in (("instant", instant), ("paced", paced)):
            config.providers.append({"name": name, "type": "openai_compatible", "base_url": upstream.url + "/v1"})
            config.models.append({"name": name, "provider": name, "upstream_model": "fake",
                                  "input_price_per_1m": PRICE_IN, "output_price_per_1m": PRICE_OUT})
        server = start_server(Path(tmp), config, warmup=False)
        try:
            live = Live(server.url, server, "sqlite")
            results["latency_ms"] = {"instant": latency(live, "instant", args.samples, semantic=True),
                                     "paced": latency(live, "paced", args.samples // 3, semantic=False)}
            print(json.dumps(results["latency_ms"], indent=1), flush=True)
            results["workload"] = workload(live, "instant", args.requests, args.prompts)
            print(json.dumps(results["workload"], indent=1), flush=True)
        finally:
            server.stop()
            instant.stop()
            paced.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
