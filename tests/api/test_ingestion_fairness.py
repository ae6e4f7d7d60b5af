"""Ingestion takes tenants in turn: a tenant whose one file is attached behind another tenant's backlog of many
files gets it searchable long before that backlog is done, and its chat is served meanwhile (live server, SDK)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from live import Live, catalog_config, start_server

BACKLOG = 80


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("ingestion-fairness")
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed", "TENANTLM_INGESTION_WORKERS": "1"})
    proc = start_server(tmp, config, warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


def test_one_file_behind_another_tenants_backlog_is_served_in_turn(live: Live) -> None:
    heavy = live.sdk(live.new_tenant(f"heavy-{uuid.uuid4().hex[:8]}").member_key, max_retries=0)
    light = live.sdk(live.new_tenant(f"light-{uuid.uuid4().hex[:8]}").member_key, max_retries=0)
    ids = [heavy.files.create(file=(f"doc-{n}.txt", f"document number {n} about rivers".encode() * 20),
                              purpose="assistants").id for n in range(BACKLOG)]
    mine = light.files.create(file=("mine.txt", b"the light tenant's only document"), purpose="assistants")
    heavy_store, light_store = heavy.vector_stores.create(name="many"), light.vector_stores.create(name="one")

    heavy.vector_stores.file_batches.create(vector_store_id=heavy_store.id, file_ids=ids)
    light.vector_stores.files.create(vector_store_id=light_store.id, file_id=mine.id)
    deadline = time.monotonic() + 120
    while light.vector_stores.files.retrieve(mine.id, vector_store_id=light_store.id).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    backlog_done = heavy.vector_stores.retrieve(heavy_store.id).file_counts.completed
    reply = light.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    # first come, first served would have finished all of the backlog first; in turn, one or two of it at most
    assert backlog_done < BACKLOG // 2, backlog_done
    while heavy.vector_stores.retrieve(heavy_store.id).file_counts.in_progress:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert heavy.vector_stores.retrieve(heavy_store.id).file_counts.completed == BACKLOG
