"""Retrieval quality: exact dense search, BM25 and their hybrid fusion on a labelled corpus, plus BM25 at scale.

Usage::

    python bench/retrieval_quality.py [--chunking auto static:254:64] [--rrf-k 60] [--weights 1,1] [--sweep]
                                      [--bm25-scale 100000] [--out bench/results/retrieval_quality.json]

Quality. The corpus in ``bench/data/retrieval/`` (see its README) is 202 short documents in nine topics, with
near-duplicates and words that mean different things in different topics, and 77 queries with graded judgments
(2 = answers the query, 1 = partly relevant). Each document (its title, a blank line, its text) is cut with
:func:`tenantlm.knowledge.chunking.chunk_text` and the embedding model's own tokenizer under each ``--chunking``
strategy; every chunk is embedded with the embedded all-MiniLM-L6-v2 (:class:`LocalEmbeddingProvider`, which keeps
the first 256 tokens of a longer chunk), and so is every query. Then, on the same chunks in the same run:

- dense: exact cosine similarity over all chunk vectors (numpy), best first;
- bm25: :class:`tenantlm.knowledge.lexical.BM25Index` over the chunk texts;
- hybrid: :func:`tenantlm.knowledge.fusion.fuse` of the two rankings, each cut to ``CANDIDATE_DEPTH`` chunks, with
  ``--weights`` (embedding, text) and ``--rrf-k``.

A ranking of chunks becomes a ranking of documents by keeping each document's first chunk. Scores are nDCG@10 (gain
2^rel - 1, ideal ranking from the judgments) and recall@10 (share of documents judged 1 or 2 in the top 10),
averaged over the queries, overall and per query kind. ``--sweep`` adds a table over RRF k and the text weight, to
show how sensitive the hybrid is to them (the defaults were not fitted to it; see docs/benchmarks.md).

Scale. ``--bm25-scale N`` builds a BM25 index over N synthetic chunks (150 terms each drawn from a Zipf-like
distribution over a 50,000-word vocabulary, seeded) and measures build time, query latency for 5-term queries at
k=100 with and without an ``allowed`` predicate that accepts one chunk in ten, and the time to remove 60% of the
chunks (which compacts the index), and how much the process's resident memory grew while the index was built.
0 skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tenantlm.knowledge.chunking import ChunkingStrategy, HuggingFaceTokenizer, chunk_text, minilm_tokenizer
from tenantlm.knowledge.fusion import (
    CANDIDATE_DEPTH,
    DEFAULT_EMBEDDING_WEIGHT,
    DEFAULT_TEXT_WEIGHT,
    RRF_K,
    HybridWeights,
    fuse,
)
from tenantlm.knowledge.lexical import BM25Index
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.settings import ProviderConfig

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "retrieval"
CUTOFF = 10
ChunkId = tuple[str, int]


def load_corpus() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    documents: list[dict[str, str]] = []
    for path in sorted((DATA / "corpus").glob("*.json")):
        documents.extend(json.loads(path.read_text()))
    queries = json.loads((DATA / "queries.json").read_text())
    ids = {d["id"] for d in documents}
    assert len(ids) == len(documents), "document ids must be unique"
    for query in queries:
        assert set(query["relevance"]) <= ids, query["id"]
    return documents, queries


def parse_strategy(spec: str) -> ChunkingStrategy:
    if spec == "auto":
        return ChunkingStrategy()
    kind, size, overlap = spec.split(":")
    assert kind == "static", spec
    return ChunkingStrategy.static(int(size), int(overlap))


def chunk_corpus(documents: list[dict[str, str]], strategy: ChunkingStrategy, tokenizer: HuggingFaceTokenizer
                 ) -> tuple[list[ChunkId], list[str]]:
    ids: list[ChunkId] = []
    texts: list[str] = []
    for document in documents:
        for chunk in chunk_text(f"{document['title']}\n\n{document['text']}", strategy, tokenizer):
            ids.append((document["id"], chunk.index))
            texts.append(chunk.text)
    return ids, texts


async def embed(provider: LocalEmbeddingProvider, texts: list[str]) -> np.ndarray:
    result = await provider.embed(texts, model="all-minilm-l6-v2")
    return np.asarray(result.vectors, dtype=np.float32)


def dense_ranking(query_vector: np.ndarray, chunk_vectors: np.ndarray, ids: list[ChunkId]) -> list[ChunkId]:
    similarity = chunk_vectors @ query_vector
    order = np.argsort(-similarity, kind="stable")[:CANDIDATE_DEPTH]
    return [ids[i] for i in order]


def documents_of(ranking: Sequence[ChunkId]) -> list[str]:
    return list(dict.fromkeys(doc for doc, _ in ranking))


def ndcg(ranked_docs: list[str], relevance: dict[str, int], cutoff: int = CUTOFF) -> float:
    gain = sum((2 ** relevance.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked_docs[:cutoff]))
    ideal = sorted(relevance.values(), reverse=True)[:cutoff]
    best = sum((2 ** rel - 1) / math.log2(i + 2) for i, rel in enumerate(ideal))
    return gain / best if best else 0.0


def recall(ranked_docs: list[str], relevance: dict[str, int], cutoff: int = CUTOFF) -> float:
    relevant = {doc for doc, rel in relevance.items() if rel > 0}
    return len(relevant & set(ranked_docs[:cutoff])) / len(relevant)


def evaluate(queries: list[dict[str, Any]], rankings: dict[str, list[list[str]]]) -> dict[str, Any]:
    """nDCG@10 and recall@10 per system, overall and per query kind."""
    kinds = sorted({q["kind"] for q in queries})
    out: dict[str, Any] = {}
    for system, per_query in rankings.items():
        rows = [(q["kind"], ndcg(docs, q["relevance"]), recall(docs, q["relevance"]))
                for q, docs in zip(queries, per_query, strict=True)]
        summary = {"all": {"ndcg@10": statistics.fmean(r[1] for r in rows),
                           "recall@10": statistics.fmean(r[2] for r in rows), "queries": len(rows)}}
        for kind in kinds:
            mine = [r for r in rows if r[0] == kind]
            summary[kind] = {"ndcg@10": statistics.fmean(r[1] for r in mine),
                             "recall@10": statistics.fmean(r[2] for r in mine), "queries": len(mine)}
        summary["per_query_ndcg"] = [round(r[1], 4) for r in rows]
        out[system] = summary
    return out


def hybrid_docs(dense: list[list[ChunkId]], lexical: list[list[ChunkId]], weights: HybridWeights, k: int
                ) -> list[list[str]]:
    return [documents_of([r.id for r in fuse(dense=[d], lexical=[t], weights=weights, k=k)])
            for d, t in zip(dense, lexical, strict=True)]


async def quality_run(spec: str, documents: list[dict[str, str]], queries: list[dict[str, Any]],
                      provider: LocalEmbeddingProvider, tokenizer: HuggingFaceTokenizer, weights: HybridWeights,
                      rrf_k: int, sweep: bool) -> dict[str, Any]:
    strategy = parse_strategy(spec)
    started = time.perf_counter()
    ids, texts = chunk_corpus(documents, strategy, tokenizer)
    chunk_s = time.perf_counter() - started
    started = time.perf_counter()
    chunk_vectors = await embed(provider, texts)
    query_vectors = await embed(provider, [q["query"] for q in queries])
    embed_s = time.perf_counter() - started
    index = BM25Index(zip(ids, texts, strict=True))
    dense = [dense_ranking(v, chunk_vectors, ids) for v in query_vectors]
    lexical = [[i for i, _ in index.search(q["query"], CANDIDATE_DEPTH)] for q in queries]
    rankings = {"dense": [documents_of(r) for r in dense], "bm25": [documents_of(r) for r in lexical],
                "hybrid": hybrid_docs(dense, lexical, weights, rrf_k)}
    result: dict[str, Any] = {
        "chunking": spec, "max_chunk_size_tokens": strategy.max_chunk_size_tokens,
        "chunk_overlap_tokens": strategy.chunk_overlap_tokens, "chunks": len(ids),
        "chunks_over_model_window": sum(1 for t in texts if len(tokenizer.token_spans(t)) + 2 > 256),
        "chunk_seconds": round(chunk_s, 3), "embed_seconds": round(embed_s, 2),
        "weights": [weights.embedding_weight, weights.text_weight], "rrf_k": rrf_k,
        "metrics": evaluate(queries, rankings),
    }
    if sweep:
        result["sweep"] = sweep_table(queries, dense, lexical, (rrf_k, weights.text_weight / weights.embedding_weight))
    return result


SWEEP_K = (1, 5, 10, 20, 30, 60, 100)
SWEEP_TEXT_WEIGHT = (0.25, 0.33, 0.5, 0.75, 1.0, 1.5)
SPLITS = 200


def sweep_table(queries: list[dict[str, Any]], dense: list[list[ChunkId]], lexical: list[list[ChunkId]],
                default: tuple[int, float]) -> dict[str, Any]:
    """nDCG@10 of the hybrid over RRF k x text weight (embedding weight 1), and a cross-validated estimate of what
    picking the best cell is worth: over random halvings of the queries, the cell that is best on one half, scored
    on the other half against the better of dense and BM25 there (and the default cell, for comparison)."""
    per_query: dict[Any, list[float]] = {
        "dense": [ndcg(documents_of(r), q["relevance"]) for r, q in zip(dense, queries, strict=True)],
        "bm25": [ndcg(documents_of(r), q["relevance"]) for r, q in zip(lexical, queries, strict=True)],
    }
    cells = [(k, w) for k in SWEEP_K for w in SWEEP_TEXT_WEIGHT]
    for k, w in [*cells, default]:
        docs = hybrid_docs(dense, lexical, HybridWeights(1.0, w), k)
        per_query[(k, w)] = [ndcg(d, q["relevance"]) for d, q in zip(docs, queries, strict=True)]

    def mean(key: Any, subset: Sequence[int]) -> float:
        return statistics.fmean(per_query[key][i] for i in subset)

    everyone = range(len(queries))
    rng = random.Random(0)
    picked_gain, default_gain, picks = [], [], Counter[tuple[int, float]]()
    for _ in range(SPLITS):
        order = list(everyone)
        rng.shuffle(order)
        train, test = order[: len(order) // 2], order[len(order) // 2:]
        best_single = max(mean("dense", test), mean("bm25", test))
        pick = max(cells, key=lambda cell: mean(cell, train))
        picks[pick] += 1
        picked_gain.append(mean(pick, test) - best_single)
        default_gain.append(mean(default, test) - best_single)
    return {
        "ndcg@10": {f"k={k}": {str(w): round(mean((k, w), everyone), 4) for w in SWEEP_TEXT_WEIGHT} for k in SWEEP_K},
        "cross_validation": {
            "splits": SPLITS,
            "picked_cell_gain_vs_best_single": {"mean": round(statistics.fmean(picked_gain), 4),
                                                "share_at_or_above": sum(g >= 0 for g in picked_gain) / SPLITS},
            "default_gain_vs_best_single": {"mean": round(statistics.fmean(default_gain), 4),
                                            "share_at_or_above": sum(g >= 0 for g in default_gain) / SPLITS},
            "most_picked": [{"rrf_k": k, "text_weight": w, "times": n} for (k, w), n in picks.most_common(5)],
        },
    }


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def resident_bytes() -> int:
    """This process's resident memory (Linux), 0 where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bm25_scale(n: int, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(50_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.07
    weights /= weights.sum()
    started = time.perf_counter()
    draws = rng.choice(len(vocabulary), size=(n, 150), p=weights)
    texts = [" ".join(vocabulary[row]) for row in draws]
    generate_s = time.perf_counter() - started
    rss_before = resident_bytes()
    started = time.perf_counter()
    index = BM25Index(enumerate(texts))
    build_s = time.perf_counter() - started
    rss_growth = resident_bytes() - rss_before
    queries = [" ".join(vocabulary[rng.choice(len(vocabulary), size=5, p=weights)]) for _ in range(300)]
    plain = [ms for q in queries for ms in timed(lambda q=q: index.search(q, 100), 1)]
    filtered = [ms for q in queries for ms in timed(lambda q=q: index.search(q, 100, lambda i: i % 10 == 0), 1)]
    started = time.perf_counter()
    for chunk_id in range(int(n * 0.6)):
        index.remove(chunk_id)
    remove_s = time.perf_counter() - started
    after = [ms for q in queries for ms in timed(lambda q=q: index.search(q, 100), 1)]
    postings = sum(len(p) for p in index._post_slots)
    return {
        "chunks": n, "terms_per_chunk": 150, "vocabulary": len(vocabulary), "generate_seconds": round(generate_s, 1),
        "build_seconds": round(build_s, 2), "build_chunks_per_second": round(n / build_s),
        "resident_memory_growth_mib": round(rss_growth / 2**20),
        "query_ms": {"p50": round(percentile(plain, 50), 2), "p99": round(percentile(plain, 99), 2)},
        "query_filtered_1_in_10_ms": {"p50": round(percentile(filtered, 50), 2),
                                      "p99": round(percentile(filtered, 99), 2)},
        "remove_60_percent_seconds": round(remove_s, 2),
        "query_after_remove_ms": {"p50": round(percentile(after, 50), 2), "p99": round(percentile(after, 99), 2)},
        "postings_after_remove": postings,
    }


def print_quality(result: dict[str, Any]) -> None:
    print(f"\nchunking {result['chunking']}: {result['chunks']} chunks "
          f"({result['chunks_over_model_window']} longer than the model's 256-token window), "
          f"weights {result['weights']}, rrf k {result['rrf_k']}")
    metrics = result["metrics"]
    kinds = [k for k in metrics["dense"] if k not in ("per_query_ndcg",)]
    print(f"{'system':<8}" + "".join(f"{k + ' (' + str(metrics['dense'][k]['queries']) + ')':>22}" for k in kinds))
    for system, summary in metrics.items():
        cells = "".join(f"{summary[k]['ndcg@10']:>12.3f} / {summary[k]['recall@10']:.3f}" for k in kinds)
        print(f"{system:<8}{cells}")
    print("(each cell: nDCG@10 / recall@10)")
    if "sweep" in result:
        table = result["sweep"]["ndcg@10"]
        print("hybrid nDCG@10 by RRF k (rows) and text weight (columns; embedding weight 1):")
        print(f"{'':>8}" + "".join(f"{w:>8}" for w in SWEEP_TEXT_WEIGHT))
        for k, row in table.items():
            print(f"{k:>8}" + "".join(f"{row[str(w)]:>8.4f}" for w in SWEEP_TEXT_WEIGHT))
        print("cross-validated:", json.dumps(result["sweep"]["cross_validation"]))


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "processor": platform.processor() or platform.machine()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    documents, queries = load_corpus()
    embedding_weight, text_weight = (float(x) for x in args.weights.split(","))
    weights = HybridWeights(embedding_weight, text_weight)
    tokenizer = minilm_tokenizer()
    provider = LocalEmbeddingProvider(ProviderConfig(name="local", type="local", threads=args.threads))
    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "machine": machine(), "documents": len(documents), "queries": len(queries),
                               "candidate_depth": CANDIDATE_DEPTH, "quality": []}
    try:
        await provider.warmup()
        for spec in args.chunking:
            run = await quality_run(spec, documents, queries, provider, tokenizer, weights, args.rrf_k, args.sweep)
            print_quality(run)
            results["quality"].append(run)
    finally:
        await provider.aclose()
    if args.bm25_scale:
        results["bm25_scale"] = bm25_scale(args.bm25_scale)
        print("\nBM25 at scale:", json.dumps(results["bm25_scale"], indent=1))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunking", nargs="+", default=["auto", "static:254:64"],
                        help="'auto' or 'static:MAX:OVERLAP' (several: one run each)")
    parser.add_argument("--weights", default=f"{DEFAULT_EMBEDDING_WEIGHT},{DEFAULT_TEXT_WEIGHT}",
                        help="embedding_weight,text_weight (default: the server's)")
    parser.add_argument("--rrf-k", type=int, default=RRF_K)
    parser.add_argument("--sweep", action="store_true", help="also tabulate RRF k x text weight")
    parser.add_argument("--bm25-scale", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval_quality.json")
    arguments = parser.parse_args()
    report = asyncio.run(main(arguments))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {arguments.out}")
