"""A search whose cached indexes went stale under it (chunk ids renumbered, as a move between tiers does) answers
from fresh indexes instead of dropping every result (live server on SQLite, the ids changed behind its back)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from live import Live, catalog_config, start_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path]]:
    tmp = tmp_path_factory.mktemp("stale-index")
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    proc = start_server(tmp, config, warmup=False, data_dir=tmp / "data")
    try:
        yield Live(proc.url, proc, "sqlite"), tmp / "data" / "tenantlm.db"
    finally:
        proc.stop()


@pytest.mark.parametrize("weights", [{"embedding_weight": 1, "text_weight": 0},
                                     {"embedding_weight": 0, "text_weight": 1}], ids=["dense", "lexical"])
def test_renumbered_chunk_ids_do_not_empty_a_search(live: tuple[Live, Path], weights: dict[str, float]) -> None:
    server, db_file = live
    tenant = server.new_tenant(f"stale-{uuid.uuid4().hex[:8]}")
    sdk = server.sdk(tenant.member_key, max_retries=0)
    store = sdk.vector_stores.create(name="docs")
    done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, poll_interval_ms=100,
                                                   file=("tides.txt", b"Tides rise and fall with the moon."))
    assert done.status == "completed", done.last_error
    options = {"hybrid_search": weights}
    before = sdk.vector_stores.search(store.id, query="tides moon", ranking_options=options)  # type: ignore[arg-type]
    assert [r.file_id for r in before.data] == [done.id]  # the store's indexes are cached now
    with sqlite3.connect(db_file) as conn:  # what a round trip through a silo does to the ids
        changed = conn.execute("UPDATE chunks SET id = id + 1000000 WHERE tenant_id = ?", (tenant.id,)).rowcount
    assert changed >= 1
    after = sdk.vector_stores.search(store.id, query="tides moon", ranking_options=options)  # type: ignore[arg-type]
    assert [(r.file_id, r.content[0].text) for r in after.data] == [(done.id, before.data[0].content[0].text)]


def test_a_file_gone_while_a_search_runs_is_left_out_not_an_error(live: tuple[Live, Path]) -> None:
    server, db_file = live
    tenant = server.new_tenant(f"gone-{uuid.uuid4().hex[:8]}")
    sdk = server.sdk(tenant.member_key, max_retries=0)
    store = sdk.vector_stores.create(name="docs")
    kept, gone = (sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, poll_interval_ms=100,
                                                          file=(name, text))
                  for name, text in (("tides.txt", b"Tides rise and fall with the moon."),
                                     ("moon.txt", b"The moon pulls the tides of the sea.")))
    before = sdk.vector_stores.search(store.id, query="tides moon")
    assert {r.file_id for r in before.data} == {kept.id, gone.id}
    with sqlite3.connect(db_file) as conn:  # the file's row goes between the ranking and the results
        assert conn.execute("DELETE FROM files WHERE id = ?", (gone.id,)).rowcount == 1
    after = sdk.vector_stores.search(store.id, query="tides moon")
    assert [(r.file_id, r.filename) for r in after.data] == [(kept.id, "tides.txt")]
