"""P5: ingestion throughput, from upload to searchable, against the raw embedder on the same chunks.

Usage::

    python bench/p5_ingestion.py [--files 100] [--words 1200] [--out bench/results/p5_ingestion.json]

Documents: ``--files`` generated texts of about ``--words`` words each (seeded; sentences of common English words,
so the tokenizer sees ordinary text). Both sides cut them with :func:`tenantlm.knowledge.chunking.chunk_text` under
the ``auto`` strategy (800 tokens, 400 overlap) and the embedding model's tokenizer, so they embed the same chunks.

- raw: the embedded all-MiniLM-L6-v2 (:class:`LocalEmbeddingProvider` configured as the server's ``local`` provider
  is, in batches of 64) called directly in this process on every chunk: chunks per second of embedding alone, the
  ceiling;
- tenantlm: a ``tenantlm serve`` (SQLite, local models, 2 ingestion workers) on 127.0.0.1; the clock starts before
  the first upload and stops when the vector store reports every file ``completed``: uploads (sealed per MiB),
  parsing in the isolated worker, chunking, embedding as the tenant through the gate (admitted, scheduled,
  metered), sealing every chunk's text and vector, the one transaction per file.

The goal (issue 15): tenantlm's chunks/s at least 80 % of raw's. Both run on the same 2 cores, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from live import Live, catalog_config, start_server
from tenantlm.knowledge.chunking import ChunkingStrategy, chunk_text
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.services import chunk_tokenizer
from tenantlm.settings import ProviderConfig

WORDS = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she",
    "there", "been", "one", "all", "we", "their", "has", "would", "when", "who", "will", "more", "if", "no", "out",
    "so", "said", "what", "up", "its", "about", "than", "into", "them", "can", "only", "other", "new", "some",
    "could", "time", "these", "two", "may", "first", "then", "do", "any", "like", "my", "now", "over", "such", "our",
    "man", "me", "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back",
    "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people",
    "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long",
    "get", "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know", "while",
    "last", "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right", "used",
    "take", "three",
)


def document(n: int, words: int) -> str:
    rng = random.Random(n)
    sentences, count = [], 0
    while count < words:
        length = rng.randrange(8, 20)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
        count += length
    return f"Document {n}. " + " ".join(sentences)


async def raw_rate(chunks: list[str]) -> float:
    provider = LocalEmbeddingProvider(ProviderConfig(name="local", type="local"))  # as the server configures it
    try:
        await provider.embed(chunks[:8], model="all-minilm-l6-v2")  # load the model before the clock
        started = time.perf_counter()
        for i in range(0, len(chunks), 64):
            await provider.embed(chunks[i:i + 64], model="all-minilm-l6-v2")
        return len(chunks) / (time.perf_counter() - started)
    finally:
        await provider.aclose()


def tenantlm_rate(docs: list[str], chunks: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="p5-") as tmp:
        config = catalog_config(None, local=True)
        config.env.update({"TENANTLM_INGESTION_WORKERS": "2", "TENANTLM_ACCESS_LOG": "false"})
        proc = start_server(Path(tmp), config, warmup=True, timeout=300)
        try:
            live = Live(proc.url, proc, "sqlite")
            sdk = live.sdk(live.new_tenant("p5").member_key)
            started = time.perf_counter()
            ids = [sdk.files.create(file=(f"doc{n}.txt", text.encode()), purpose="assistants").id
                   for n, text in enumerate(docs)]
            store = sdk.vector_stores.create(name="p5")
            batch = sdk.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=ids,
                                                                   poll_interval_ms=200)
            elapsed = time.perf_counter() - started
            assert batch.file_counts.completed == len(docs), batch.file_counts
            return chunks / elapsed, elapsed
        finally:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--words", type=int, default=1200)
    parser.add_argument("--out", default="bench/results/p5_ingestion.json")
    args = parser.parse_args()
    docs = [document(n, args.words) for n in range(args.files)]
    tokenizer = chunk_tokenizer()
    chunks = [c.text for d in docs for c in chunk_text(d, ChunkingStrategy(), tokenizer)]
    raw = asyncio.run(raw_rate(chunks))
    ours, elapsed = tenantlm_rate(docs, len(chunks))
    result = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "files": args.files,
              "words": args.words, "chunks": len(chunks), "raw_chunks_per_s": round(raw, 2),
              "tenantlm_chunks_per_s": round(ours, 2), "tenantlm_seconds": round(elapsed, 2),
              "ratio": round(ours / raw, 3), "load": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.files} files, {len(chunks)} chunks (auto: 800 tokens, 400 overlap)")
    print(f"raw embedder:  {raw:8.2f} chunks/s")
    print(f"tenantlm:      {ours:8.2f} chunks/s  (upload to searchable, {elapsed:.1f} s)")
    print(f"ratio:         {ours / raw:8.3f}  (goal >= 0.80)")


if __name__ == "__main__":
    main()
