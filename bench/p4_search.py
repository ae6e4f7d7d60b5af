"""P4: vector search — the embedded per-store index (``tenantlm.knowledge.index``) against the raw libraries.

Usage::

    python bench/p4_search.py [--sizes 10000,100000] [--choice-sizes 2000,5000,10000,20000,100000] [--queries 500]
                              [--budget-mb 256] [--stores 1000] [--sections many,choice,overhead,cold]
                              [--out bench/results/p4_search.json]

faiss is compared when ``import faiss`` works; it is not a dependency of TenantLM. To include it, install it into a
throwaway virtualenv holding nothing else and put that on the path::

    python -m venv /tmp/faiss-venv && /tmp/faiss-venv/bin/pip install --no-deps faiss-cpu
    PYTHONPATH=src:/tmp/faiss-venv/lib/python3.11/site-packages python bench/p4_search.py

Data: 384-d vectors shaped like text embeddings, since uniform random vectors are HNSW's worst case and unlike
real ones: points of a mixture of n/100 Gaussian clusters (centres ~ N(0, 4 I), spread N(0, I)) in a 32-d latent
space, projected into 384-d by a fixed Gaussian matrix, plus N(0, 16) noise in each of the 384 dimensions, then
normalised. Queries are fresh draws from the same mixture. Truth is exact top-10 by cosine (numpy).

Sections:
- choice: numpy exact vs usearch HNSW vs faiss HNSWFlat (same M=16, efConstruction=64, efSearch=64, the same
  threads) at each size: build seconds, p50/p99 of one query at a time, recall@10, memory; an efSearch sweep.
- overhead: ``IndexCache.search`` (await, one event loop) against the raw library call on the very same index
  object, interleaved query by query: TenantLM's own cost.
- filters (run with overhead): filtered search at the largest size, as a set and as a predicate, at several
  selectivities: latency and recall against the exact filtered top-10.
- cold: the first search of a store whose vectors are sealed in SQLite (one AES-GCM record per chunk, opened with
  the tenant's data key): read + open + exact index + search; and, above the exact threshold, the seconds until
  the HNSW graph is swapped in behind it.
- minilm (not in the default sections: it needs the ``local`` extra and embeds at ~80 texts/s here): recall and
  latency of usearch (and faiss) on real all-MiniLM-L6-v2 embeddings of ``--minilm-n`` generated sentences, to check
  that the synthetic mixture is not kinder to the graph than real text is.
- many: ``--stores`` stores of 1,000 chunks (100 tenants) under a ``--budget-mb`` budget: how many fit, evictions,
  search latency for a Zipf-skewed stream of searches (hits and misses), and the process RSS with the stores
  loaded and once every tenant is idle (evicted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import usearch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from usearch.index import Index

from tenantlm.crypto import aead
from tenantlm.knowledge.index.cache import IndexCache
from tenantlm.knowledge.index.local import ExactIndex, HnswIndex, IndexPolicy

DIM = 384
K = 10
POLICY = IndexPolicy()
GOAL_P99_MS = 5.0
GOAL_OVERHEAD_MS = 1.0

try:
    import faiss  # type: ignore[import-not-found]
except ImportError:  # not a TenantLM dependency
    faiss = None


# -- data and measurement ---------------------------------------------------------------------------------------------

def clustered(n: int, *, seed: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((32, dim)).astype(np.float32)
    centres = 2.0 * rng.standard_normal((max(8, n // 100), 32)).astype(np.float32)
    latent = centres[rng.integers(len(centres), size=n)] + rng.standard_normal((n, 32)).astype(np.float32)
    x = latent @ projection + 4.0 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors and ``queries`` fresh ones from the same mixture (one draw, split)."""
    data = clustered(n + queries, seed=n)
    return data[:n], data[n:]


def truth_top(corpus_: np.ndarray, queries: np.ndarray, k: int = K) -> list[set[int]]:
    out = []
    for start in range(0, len(queries), 100):
        scores = queries[start:start + 100] @ corpus_.T
        out += [set(np.argpartition(-row, k)[:k].tolist()) for row in scores]
    return out


def recall(found: list[list[int]], truth: list[set[int]]) -> float:
    return sum(len(set(f) & t) for f, t in zip(found, truth, strict=True)) / sum(len(t) for t in truth)


def pct(latencies_s: list[float]) -> dict[str, float]:
    ms = np.array(latencies_s) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def timed(fn: Callable[[np.ndarray], list[int]], queries: np.ndarray) -> tuple[list[list[int]], dict[str, float]]:
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(fn(q))
        lat.append(time.perf_counter() - t)
    return found, pct(lat)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS shows what is still held rather than what is cached."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def mb(n: float) -> float:
    return round(n / 2**20, 1)


def numpy_top(rows: np.ndarray, kernel: str = "vecdot") -> Callable[[np.ndarray], list[int]]:
    """Exact top-10 with numpy: ``rows @ q`` (the BLAS) or ``np.vecdot`` (the calling thread), then argpartition."""
    def search(q: np.ndarray) -> list[int]:
        scores = np.vecdot(rows, q) if kernel == "vecdot" else rows @ q
        part = np.argpartition(-scores, K)[:K]
        return part[np.argsort(-scores[part])].tolist()
    return search


# -- choice: which library ------------------------------------------------------------------------------------------

def choice(sizes: list[int], n_queries: int, threads: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        data, queries = corpus(n, n_queries)
        truth = truth_top(data, queries)
        t = time.perf_counter()
        exact = np.ascontiguousarray(data / np.linalg.norm(data, axis=1, keepdims=True))
        build = time.perf_counter() - t
        for kernel in ("vecdot", "matmul"):  # matmul last: the BLAS threads it wakes keep spinning for a while
            found, lat = timed(numpy_top(exact, kernel), queries)
            rows.append({"n": n, "library": f"numpy exact ({kernel})", "build_s": round(build, 3), **lat,
                         "recall@10": recall(found, truth), "memory_mb": mb(exact.nbytes)})
        rows += usearch_rows(n, data, queries, truth, threads)
        if faiss is not None:
            rows += faiss_rows(n, data, queries, truth, threads)
        for r in rows[-10:]:
            if r["n"] == n:
                print(json.dumps(r))
    return rows


def usearch_rows(n: int, data: np.ndarray, queries: np.ndarray, truth: list[set[int]],
                 threads: int) -> list[dict[str, Any]]:
    gc.collect()
    malloc_trim()
    before = rss()
    graph = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=POLICY.connectivity,
                  expansion_add=POLICY.expansion_add, expansion_search=POLICY.expansion_search)
    t = time.perf_counter()
    graph.add(np.arange(n), data, threads=threads)
    build = time.perf_counter() - t
    held = rss() - before
    rows = []
    for ef in (32, 64, 128):
        graph.expansion_search = ef
        found, lat = timed(lambda q: graph.search(q, K, threads=1).keys.tolist(), queries)
        rows.append({"n": n, "library": f"usearch {usearch.__version__} HNSW", "M": POLICY.connectivity,
                     "efConstruction": POLICY.expansion_add, "efSearch": ef, "build_threads": threads,
                     "build_s": round(build, 2), **lat, "recall@10": recall(found, truth),
                     "memory_mb": mb(held), "reported_memory_mb": mb(graph.memory_usage)})
    return rows


def faiss_rows(n: int, data: np.ndarray, queries: np.ndarray, truth: list[set[int]],
               threads: int) -> list[dict[str, Any]]:
    gc.collect()
    malloc_trim()
    faiss.omp_set_num_threads(threads)
    before = rss()
    index = faiss.IndexHNSWFlat(DIM, POLICY.connectivity, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = POLICY.expansion_add
    t = time.perf_counter()
    index.add(data)
    build = time.perf_counter() - t
    held = rss() - before
    faiss.omp_set_num_threads(1)  # one query at a time, as a request does
    rows = []
    for ef in (32, 64, 128):
        index.hnsw.efSearch = ef
        found, lat = timed(lambda q: index.search(q[None, :], K)[1][0].tolist(), queries)
        rows.append({"n": n, "library": f"faiss {faiss.__version__} IndexHNSWFlat", "M": POLICY.connectivity,
                     "efConstruction": POLICY.expansion_add, "efSearch": ef, "build_threads": threads,
                     "build_s": round(build, 2), **lat, "recall@10": recall(found, truth), "memory_mb": mb(held)})
    return rows


# -- overhead: TenantLM's index layer vs the library on the same index ------------------------------------------------

async def overhead(sizes: list[int], n_queries: int,
                   n_filter_queries: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The overhead rows, and the filter rows (measured on the largest store while it is loaded)."""
    rows, filter_rows = [], []
    for n in sizes:
        data, queries = corpus(n, n_queries)
        truth = truth_top(data, queries)
        cache = await loaded_cache({("ten_a", "vs_1"): (np.arange(n), data)})
        index = cache._entries[("ten_a", "vs_1")].index  # the bench reaches inside to call the library directly
        if isinstance(index, HnswIndex):
            graph = index._graph
            assert graph is not None
            raw = usearch_call(graph)
            library = "usearch Index.search(q, 10, threads=1)"
        else:
            assert isinstance(index, ExactIndex)
            raw, library = numpy_top(index.snapshot()[1]), "np.vecdot + argpartition"
        lat_raw, lat_ours, found_raw, found_ours = [], [], [], []
        for round_ in range(2):
            for q in queries:  # interleaved, each first in turn, so the load of the machine and warm caches are shared
                raw_first = round_ == 0
                if raw_first:
                    t0 = time.perf_counter()
                    found_raw.append(raw(q))
                    lat_raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                hits = await cache.search(tenant_id="ten_a", store_id="vs_1", query=q, k=K)
                lat_ours.append(time.perf_counter() - t0)
                found_ours.append([i for i, _ in hits])
                if not raw_first:
                    t0 = time.perf_counter()
                    found_raw.append(raw(q))
                    lat_raw.append(time.perf_counter() - t0)
        raw_p, ours_p = pct(lat_raw), pct(lat_ours)
        if n == max(sizes):
            filter_rows = await filters(cache, data, queries[:n_filter_queries])
        row = {"n": n, "index": index.kind, "library_call": library, "library": raw_p, "tenantlm": ours_p,
               "overhead_p50_ms": round(ours_p["p50_ms"] - raw_p["p50_ms"], 3),
               "overhead_p99_ms": round(ours_p["p99_ms"] - raw_p["p99_ms"], 3),
               "overhead_mean_ms": round(ours_p["mean_ms"] - raw_p["mean_ms"], 3),
               "recall@10_library": recall(found_raw, truth * 2), "recall@10_tenantlm": recall(found_ours, truth * 2),
               "meets_p99_goal": ours_p["p99_ms"] <= GOAL_P99_MS,
               "meets_overhead_goal": ours_p["p99_ms"] - raw_p["p99_ms"] <= GOAL_OVERHEAD_MS}
        print(json.dumps(row))
        rows.append(row)
        await cache.aclose()
    return rows, filter_rows


def usearch_call(graph: Index) -> Callable[[np.ndarray], list[int]]:
    return lambda q: graph.search(q, K, threads=1).keys.tolist()


async def loaded_cache(stores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> IndexCache:
    async def load(*, tenant_id: str, store_id: str) -> tuple[np.ndarray, np.ndarray]:
        return stores[(tenant_id, store_id)]

    cache = IndexCache(load=load, budget_bytes=1 << 40)
    for tenant_id, store_id in stores:
        await cache.search(tenant_id=tenant_id, store_id=store_id, query=np.ones(DIM, dtype=np.float32), k=1)
    await cache.wait_idle()  # large stores: their graph swapped in
    return cache


# -- filters ---------------------------------------------------------------------------------------------------------

async def filters(cache: IndexCache, data: np.ndarray, queries: np.ndarray) -> list[dict[str, Any]]:
    n = len(data)
    rng = np.random.default_rng(5)
    rows = []
    for fraction in (0.5, 0.05, 0.005, 0.0005):
        allowed = set(rng.choice(n, size=max(1, int(fraction * n)), replace=False).tolist())
        mask = np.zeros(n, dtype=bool)
        mask[list(allowed)] = True
        sub = np.flatnonzero(mask)
        truth = [set(sub[np.argpartition(-s, min(K, len(sub) - 1))[:K]].tolist()) for s in queries @ data[sub].T]
        for form in ("set", "predicate"):
            flt: Any = allowed if form == "set" else allowed.__contains__
            found, lat = [], []
            for q in queries:
                t = time.perf_counter()
                hits = await cache.search(tenant_id="ten_a", store_id="vs_1", query=q, k=K, allowed=flt)
                lat.append(time.perf_counter() - t)
                found.append([i for i, _ in hits])
            row = {"n": n, "allowed": len(allowed), "form": form, **pct(lat), "recall@10": recall(found, truth)}
            print(json.dumps(row))
            rows.append(row)
    return rows


# -- cold: first search of a store whose vectors are sealed in SQLite -----------------------------------------------

class SealedVectors:
    """Vectors at rest as the embedded deployment keeps content: one AES-GCM sealed record per chunk in SQLite."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = AESGCM(aead.new_key())
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS vectors (tenant_id TEXT, store_id TEXT, chunk_id INTEGER, "
                       "sealed BLOB, PRIMARY KEY (tenant_id, store_id, chunk_id))")

    def write(self, tenant_id: str, store_id: str, vectors: np.ndarray) -> None:
        rows = [(tenant_id, store_id, i, aead.seal(self.key, 1, tenant_id=tenant_id, kind="vector",
                                                   record_id=str(i), plaintext=v.tobytes()))
                for i, v in enumerate(vectors)]
        with sqlite3.connect(self.path) as db:
            db.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?)", rows)

    def read(self, tenant_id: str, store_id: str) -> tuple[np.ndarray, np.ndarray]:
        with sqlite3.connect(self.path) as db:
            found = db.execute("SELECT chunk_id, sealed FROM vectors WHERE tenant_id = ? AND store_id = ?",
                               (tenant_id, store_id)).fetchall()
        ids = np.fromiter((r[0] for r in found), dtype=np.int64, count=len(found))
        plain = b"".join(aead.open_sealed(self.key, tenant_id=tenant_id, kind="vector", record_id=str(i),
                                          ciphertext=sealed) for i, sealed in found)
        return ids, np.frombuffer(plain, dtype=np.float32).reshape(len(found), DIM)

    async def load(self, *, tenant_id: str, store_id: str) -> tuple[np.ndarray, np.ndarray]:
        return await asyncio.to_thread(self.read, tenant_id, store_id)


async def cold(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = SealedVectors(Path(tmp) / "vectors.db")
        for n in sizes:
            data, queries = corpus(n, 1)
            storage.write("ten_a", f"vs_{n}", data)
            for attempt in range(repeats if n <= POLICY.exact_max else 1):  # a graph build is long: once
                reads: list[float] = []
                cache = IndexCache(load=partial(timed_load, storage, reads), budget_bytes=1 << 40)
                t = time.perf_counter()
                hits = await cache.search(tenant_id="ten_a", store_id=f"vs_{n}", query=queries[0], k=K)
                first = time.perf_counter() - t
                assert len(hits) == K
                t = time.perf_counter()
                await cache.wait_idle()
                graph = time.perf_counter() - t
                t = time.perf_counter()
                await cache.search(tenant_id="ten_a", store_id=f"vs_{n}", query=queries[0], k=K)
                warm = time.perf_counter() - t
                row = {"n": n, "run": attempt, "read_and_open_s": round(reads[0], 3), "first_search_s": round(first, 3),
                       "graph_ready_after_s": round(first + graph, 2) if cache.stats().rebuilds else None,
                       "warm_search_ms": round(warm * 1e3, 3)}
                print(json.dumps(row))
                rows.append(row)
                await cache.aclose()
    return rows


async def timed_load(storage: SealedVectors, reads: list[float], **kw: str) -> tuple[np.ndarray, np.ndarray]:
    t = time.perf_counter()
    out = await storage.load(**kw)
    reads.append(time.perf_counter() - t)
    return out


# -- many stores under a budget ---------------------------------------------------------------------------------------

async def many(stores: int, per_store: int, budget_mb: int, searches: int) -> dict[str, Any]:
    keys = [(f"ten_{i % 100:03d}", f"vs_{i // 100:03d}") for i in range(stores)]
    seeds = {key: i for i, key in enumerate(keys)}
    load_s: list[float] = []

    async def load(*, tenant_id: str, store_id: str) -> tuple[np.ndarray, np.ndarray]:
        # stands in for a read from storage: the vectors are made on demand, so the process holds none of its own
        t = time.perf_counter()
        rng = np.random.default_rng(seeds[(tenant_id, store_id)])
        vectors = rng.standard_normal((per_store, DIM), dtype=np.float32)
        load_s.append(time.perf_counter() - t)
        return np.arange(per_store), vectors

    gc.collect()
    malloc_trim()
    rss_start = rss()
    cache = IndexCache(load=load, budget_bytes=budget_mb * 2**20)
    query = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    for tenant_id, store_id in keys:  # every store searched once
        await cache.search(tenant_id=tenant_id, store_id=store_id, query=query, k=K)
    after_all = cache.stats()
    rss_full = rss()
    # a skewed stream: store ranks drawn from Zipf(1.1), so some tenants are busy and most are seldom seen
    rng = np.random.default_rng(1)
    ranks = np.minimum(rng.zipf(1.1, size=searches), stores) - 1
    order = rng.permutation(stores)
    hit_lat, miss_lat = [], []
    for rank in ranks:
        tenant_id, store_id = keys[order[rank]]
        held = cache.held(tenant_id=tenant_id, store_id=store_id)
        t = time.perf_counter()
        await cache.search(tenant_id=tenant_id, store_id=store_id, query=query, k=K)
        (hit_lat if held else miss_lat).append(time.perf_counter() - t)
    churn = cache.stats()
    one_store = churn.bytes / max(1, churn.indexes)
    await cache.aclose()  # every tenant idle: nothing held
    gc.collect()
    rss_idle = rss()
    malloc_trim()
    rss_idle_trimmed = rss()
    result = {
        "stores": stores, "chunks_per_store": per_store, "budget_mb": budget_mb,
        "bytes_per_store_mb": round(one_store / 2**20, 3), "stores_held_under_budget": after_all.indexes,
        "after_one_pass": {"loads": after_all.loads, "evicted": after_all.evicted, "held_mb": mb(after_all.bytes)},
        "zipf_stream": {"searches": searches, "hit_rate": round(len(hit_lat) / searches, 3),
                        "hits": pct(hit_lat) if hit_lat else None, "misses": pct(miss_lat) if miss_lat else None,
                        "all": pct(hit_lat + miss_lat), "loads": churn.loads - after_all.loads,
                        "evicted": churn.evicted - after_all.evicted},
        "load_ms_mean": round(1e3 * float(np.mean(load_s)), 2),
        "rss_mb": {"start": mb(rss_start), "budget_full": mb(rss_full), "all_idle": mb(rss_idle),
                   "all_idle_after_malloc_trim": mb(rss_idle_trimmed)},
        "held_after_idle": {"indexes": cache.stats().indexes, "bytes": cache.stats().bytes},
    }
    print(json.dumps(result))
    return result


# -- minilm: the same comparison on real embeddings of generated text ----------------------------------------------

WORDS = {
    "who": ["customer", "supplier", "engineer", "auditor", "tenant", "manager", "courier", "nurse", "teacher",
            "driver", "analyst", "lawyer"],
    "did": ["reported", "cancelled", "approved", "delayed", "refunded", "shipped", "escalated", "renewed",
            "disputed", "archived"],
    "what": ["invoice", "order", "contract", "ticket", "shipment", "subscription", "payment", "warranty", "claim",
             "report", "license", "booking"],
    "about": ["a damaged package", "the late delivery", "a billing error", "the new pricing", "a security incident",
              "the quarterly audit", "a login problem", "the data export", "a duplicate charge",
              "the holiday schedule", "an expired card", "the onboarding call"],
    "where": ["in Berlin", "in Lagos", "in Osaka", "in Lima", "at the warehouse", "at headquarters", "online",
              "by phone"],
}


def generated_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = {k: rng.integers(len(v), size=n) for k, v in WORDS.items()}
    return [f"The {WORDS['who'][pick['who'][i]]} {WORDS['did'][pick['did'][i]]} {WORDS['what'][pick['what'][i]]} "
            f"#{rng.integers(10_000)} about {WORDS['about'][pick['about'][i]]} {WORDS['where'][pick['where'][i]]}."
            for i in range(n)]


async def minilm(n: int, n_queries: int, threads: int) -> list[dict[str, Any]]:
    from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
    from tenantlm.settings import ProviderConfig

    provider = LocalEmbeddingProvider(ProviderConfig(name="local", type="local", threads=os.cpu_count() or 1))
    t = time.perf_counter()
    result = await provider.embed(generated_texts(n + n_queries, seed=3), model="all-MiniLM-L6-v2")
    embed_s = time.perf_counter() - t
    await provider.aclose()
    data = np.array(result.vectors, dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    data, queries = data[:n], data[n:]
    truth = truth_top(data, queries)
    rows = usearch_rows(n, data, queries, truth, threads)
    if faiss is not None:
        rows += faiss_rows(n, data, queries, truth, threads)
    for row in rows:
        row["data"] = f"all-MiniLM-L6-v2 embeddings of {n} generated sentences (embedded in {embed_s:.0f} s)"
        print(json.dumps(row))
    return rows


# -- main ------------------------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__, "usearch": usearch.__version__,
            "faiss": None if faiss is None else faiss.__version__, "nproc": os.cpu_count(),
            "usearch_simd": Index(ndim=DIM, metric="ip", dtype="f32").hardware_acceleration,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "load_avg": os.getloadavg(),
            "policy": {f: getattr(POLICY, f) for f in POLICY.__slots__}}


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    sections = set(args.sections.split(","))
    out: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine()}
    print(json.dumps(out["machine"]))
    if "many" in sections:  # first, so the process RSS it reports is not that of the large runs before it
        out["many"] = await many(args.stores, 1000, args.budget_mb, args.searches)
    if "choice" in sections:
        out["choice"] = choice([int(s) for s in args.choice_sizes.split(",")], args.queries, args.build_threads)
    if "overhead" in sections:
        out["overhead"], out["filters"] = await overhead(sizes, args.queries, min(args.queries, 200))
    if "minilm" in sections:
        out["minilm"] = await minilm(args.minilm_n, args.queries, args.build_threads)
    if "cold" in sections:
        out["cold"] = await cold(sizes, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="store sizes for overhead, filters and cold")
    parser.add_argument("--choice-sizes", default="2000,5000,10000,20000,100000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--build-threads", type=int, default=POLICY.build_threads)
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default="many,choice,overhead,cold")
    parser.add_argument("--minilm-n", type=int, default=10_000, help="vectors for the minilm section")
    parser.add_argument("--out", default="bench/results/p4_search.json")
    asyncio.run(main(parser.parse_args()))
