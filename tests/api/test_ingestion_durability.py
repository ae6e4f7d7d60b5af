"""Ingestion survives kill -9: 200 files attached in one batch, the server killed while it ingests them, restarted
on the same data: every file ends ``completed`` exactly once, with exactly the chunks its text makes (none lost, none
doubled), and search finds the last file's words."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from live import Live, catalog_config, start_server
from tenantlm.knowledge.chunking import ChunkingStrategy, chunk_text
from tenantlm.services import chunk_tokenizer

FILES = 200
STRATEGY = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}


def _text(n: int) -> str:
    rng = random.Random(n)
    words = [f"w{rng.randrange(5000)}" for _ in range(rng.randrange(60, 260))]
    return f"document{n} " + " ".join(words)


def _counts(live: Live, key: str, store_id: str) -> dict[str, int]:
    store = live.sdk(key).vector_stores.retrieve(store_id)
    counts: dict[str, int] = store.file_counts.model_dump()
    return counts


@pytest.mark.slow
def test_kill_9_during_ingestion_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed", "TENANTLM_INGESTION_WORKERS": "1",
                       "TENANTLM_INGESTION_LEASE_S": "3"})
    data_dir = tmp_path / "data"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    proc = start_server(tmp_path / "one", config, warmup=False, data_dir=data_dir)
    live = Live(proc.url, proc, "sqlite")
    tenant = live.new_tenant("durable")
    sdk = live.sdk(tenant.member_key)
    texts = {}
    for n in range(FILES):
        made = sdk.files.create(file=(f"doc{n}.txt", _text(n).encode()), purpose="assistants")
        texts[made.id] = _text(n)
    store = sdk.vector_stores.create(name="durable")
    sdk.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=list(texts),
                                          chunking_strategy=STRATEGY)  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while True:  # let part of the batch through, then pull the plug
        counts = _counts(live, tenant.member_key, store.id)
        if counts["completed"] >= 20 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    proc.proc.kill()
    proc.proc.wait()
    assert counts["in_progress"] > 0, counts  # killed mid-batch, not after it

    proc = start_server(tmp_path / "two", config, warmup=False, data_dir=data_dir)
    try:
        live = Live(proc.url, proc, "sqlite")
        deadline = time.monotonic() + 300  # the killed worker's lease (3 s here) runs out, then the rest is redone
        while (counts := _counts(live, tenant.member_key, store.id))["in_progress"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert counts["completed"] == FILES and counts["failed"] == 0, counts
        sdk = live.sdk(tenant.member_key)
        tokenizer = chunk_tokenizer()
        strategy = ChunkingStrategy.parse(STRATEGY)
        for file_id, text in texts.items():
            stored = [p.text for p in sdk.vector_stores.files.content(file_id, vector_store_id=store.id)]
            assert stored == [c.text for c in chunk_text(text, strategy, tokenizer)], file_id
        last = _text(FILES - 1).split()[0]
        hits = sdk.vector_stores.search(store.id, query=last, ranking_options={
            "hybrid_search": {"embedding_weight": 0, "text_weight": 1}})  # type: ignore[typeddict-unknown-key]
        assert hits.data and hits.data[0].filename == f"doc{FILES - 1}.txt"
    finally:
        proc.stop()
