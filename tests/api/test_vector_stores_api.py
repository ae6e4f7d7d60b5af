"""OpenAI's Vector Stores API per tenant, through the official SDK against a live server on SQLite and on Postgres:
stores, attached files and their ingestion (upload_and_poll, create_and_poll, file batches), status and counts,
search with filters and thresholds, deletion visible at once, roles, and foreign ids answered like missing ones.

The embedding model here is the deterministic fake (the semantic side is covered with the local model elsewhere), so
these searches lean on the lexical side: they check the plumbing and the contracts, not relevance."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from live import Live, Tenant, catalog_config, start_server
from services import PostgresDatabase, PostgresServer

DOCS = {
    "volcano.txt": "Volcanoes erupt molten rock called lava. Magma chambers lie beneath the crust.",
    "bread.md": "# Baking\n\nBread rises because yeast ferments sugar into carbon dioxide.",
    "orbits.txt": "Planets follow elliptical orbits around the sun, as Kepler described.",
}


@dataclass
class Deployment:
    live: Live
    pg: PostgresDatabase | None


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"vs-{request.param}")
    pg, kw = None, {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    proc = start_server(tmp, config, warmup=False, **kw)
    try:
        yield Deployment(Live(proc.url, proc, request.param), pg)
    finally:
        proc.stop()


@pytest.fixture
def tenant(dep: Deployment) -> Tenant:
    return dep.live.new_tenant(f"vs-{uuid.uuid4().hex[:8]}")


def _sdk(dep: Deployment, key: str) -> openai.OpenAI:
    return dep.live.sdk(key, max_retries=0)


def _store_with_docs(sdk: openai.OpenAI, **attributes: dict[str, Any]) -> tuple[str, dict[str, str]]:
    store = sdk.vector_stores.create(name="docs", metadata={"team": "science"})
    ids = {}
    for name, text in DOCS.items():
        done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode()),
                                                       poll_interval_ms=100)
        assert done.status == "completed", done.last_error
        if name in attributes:
            sdk.vector_stores.files.update(done.id, vector_store_id=store.id, attributes=attributes[name])
        ids[name] = done.id
    return store.id, ids


def test_a_store_ingests_and_searches(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    store_id, ids = _store_with_docs(sdk, **{"volcano.txt": {"topic": "geology", "year": 2021},
                                             "bread.md": {"topic": "cooking", "year": 2019}})
    store = sdk.vector_stores.retrieve(store_id)
    assert store.status == "completed" and store.file_counts.completed == 3 and store.file_counts.total == 3
    assert store.usage_bytes > 0 and store.metadata == {"team": "science"} and store.name == "docs"
    page = sdk.vector_stores.search(store_id, query="lava magma volcanoes", ranking_options={
        "hybrid_search": {"embedding_weight": 0, "text_weight": 1}})  # type: ignore[typeddict-unknown-key]
    first = page.data[0]
    assert first.file_id == ids["volcano.txt"] and first.filename == "volcano.txt"
    assert "lava" in first.content[0].text and first.attributes == {"topic": "geology", "year": 2021}
    assert 0 < first.score <= 1
    filtered = sdk.vector_stores.search(store_id, query="lava bread yeast",
                                        filters={"type": "eq", "key": "topic", "value": "cooking"})
    assert {r.file_id for r in filtered.data} == {ids["bread.md"]}
    compound = sdk.vector_stores.search(store_id, query="lava bread orbits", filters={
        "type": "and", "filters": [{"type": "gte", "key": "year", "value": 2020},
                                   {"type": "ne", "key": "topic", "value": "cooking"}]})
    assert {r.file_id for r in compound.data} == {ids["volcano.txt"]}
    assert len(sdk.vector_stores.search(store_id, query="the", max_num_results=1).data) <= 1
    strict = sdk.vector_stores.search(store_id, query="lava", ranking_options={"score_threshold": 1.0})
    assert all(r.score >= 1.0 for r in strict.data)
    content = sdk.vector_stores.files.content(ids["orbits.txt"], vector_store_id=store_id)
    assert "Kepler" in "".join(part.text or "" for part in content)


def test_deleting_a_file_removes_it_from_search_at_once(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    store_id, ids = _store_with_docs(sdk)
    lexical = {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}
    assert ids["volcano.txt"] in {r.file_id for r in sdk.vector_stores.search(
        store_id, query="lava", ranking_options=lexical).data}  # type: ignore[arg-type]
    sdk.files.delete(ids["volcano.txt"])  # the file itself: it leaves every store
    assert ids["volcano.txt"] not in {r.file_id for r in sdk.vector_stores.search(
        store_id, query="lava", ranking_options=lexical).data}  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        sdk.vector_stores.files.retrieve(ids["volcano.txt"], vector_store_id=store_id)
    sdk.vector_stores.files.delete(ids["bread.md"], vector_store_id=store_id)  # detached only
    assert ids["bread.md"] not in {r.file_id for r in sdk.vector_stores.search(
        store_id, query="yeast bread", ranking_options=lexical).data}  # type: ignore[arg-type]
    assert sdk.files.retrieve(ids["bread.md"]).id == ids["bread.md"]  # the file is still there
    assert sdk.vector_stores.retrieve(store_id).file_counts.total == 1


def test_batches_poll_cancel_and_list(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    store = sdk.vector_stores.create(name="batch")
    files = [sdk.files.create(file=(n, t.encode()), purpose="assistants") for n, t in DOCS.items()]
    batch = sdk.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=[f.id for f in files],
                                                           poll_interval_ms=100)
    assert batch.status == "completed" and batch.file_counts.completed == 3
    listed = sdk.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {f.id for f in listed.data} == {f.id for f in files}
    cancelled = sdk.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.file_counts.completed == 3  # nothing was left to cancel
    assert {f.id for f in sdk.vector_stores.files.list(store.id, filter="completed").data} == {f.id for f in files}


def test_a_file_that_cannot_be_read_fails_with_last_error(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    store = sdk.vector_stores.create(name="bad")
    bad = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("report.pdf", b"not a pdf"),
                                                  poll_interval_ms=100)
    assert bad.status == "failed" and bad.last_error is not None and bad.last_error.code == "invalid_file"
    odd = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("tool.exe", b"MZ\x90\x00"),
                                                  poll_interval_ms=100)
    assert odd.status == "failed" and odd.last_error is not None and odd.last_error.code == "unsupported_file"
    empty = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("empty.txt", b""),
                                                    poll_interval_ms=100)
    assert empty.status == "failed" and empty.last_error is not None
    counts = sdk.vector_stores.retrieve(store.id).file_counts
    assert counts.failed == 3 and counts.in_progress == 0


def test_store_crud_and_validation(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    made = sdk.vector_stores.create(name="a", expires_after={"anchor": "last_active_at", "days": 7})
    assert made.expires_after is not None and made.expires_after.days == 7 and made.expires_at is not None
    renamed = sdk.vector_stores.update(made.id, name="b", metadata={"k": "v"})
    assert renamed.name == "b" and renamed.metadata == {"k": "v"}
    other = sdk.vector_stores.create(name="c")
    assert [s.id for s in sdk.vector_stores.list(order="asc").data] == [made.id, other.id]
    assert [s.id for s in sdk.vector_stores.list(limit=1).data] == [other.id]
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.vector_stores.create(name="x", chunking_strategy={"type": "static", "static": {
            "max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}})
    assert "max_chunk_size_tokens" in str(bad.value.body)
    with pytest.raises(openai.BadRequestError):
        sdk.vector_stores.search(made.id, query="x", max_num_results=51)
    with pytest.raises(openai.BadRequestError):
        sdk.vector_stores.search(made.id, query="x", filters={"type": "zz", "key": "a", "value": 1})  # type: ignore[typeddict-item]
    deleted = sdk.vector_stores.delete(made.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.vector_stores.retrieve(made.id)


def test_roles_and_foreign_ids(dep: Deployment, tenant: Tenant) -> None:
    sdk = _sdk(dep, tenant.member_key)
    store_id, ids = _store_with_docs(sdk)
    viewer = _sdk(dep, tenant.viewer_key)
    assert viewer.vector_stores.retrieve(store_id).id == store_id
    assert viewer.vector_stores.search(store_id, query="lava").data is not None
    with pytest.raises(openai.PermissionDeniedError):
        viewer.vector_stores.create(name="nope")
    with pytest.raises(openai.PermissionDeniedError):
        viewer.vector_stores.delete(store_id)
    other = dep.live.new_tenant(f"vs-b-{uuid.uuid4().hex[:8]}")
    theirs = _sdk(dep, other.admin_key)
    assert theirs.vector_stores.list().data == []
    missing_store, missing_file = "vs_" + "x" * 24, "file-" + "x" * 24
    file_id = ids["volcano.txt"]
    with httpx.Client(base_url=dep.live.url, headers={"authorization": f"Bearer {other.admin_key}"}) as c:
        pairs = [("GET", "/v1/vector_stores/{s}", None), ("POST", "/v1/vector_stores/{s}/search", {"query": "x"}),
                 ("GET", "/v1/vector_stores/{s}/files/{f}", None), ("DELETE", "/v1/vector_stores/{s}", None),
                 ("POST", "/v1/vector_stores/{s}/files", {"file_id": "{f}"})]
        for method, template, body in pairs:
            foreign = _call(c, method, template, body, store_id, file_id)
            absent = _call(c, method, template, body, missing_store, missing_file)
            assert foreign.status_code == absent.status_code == 404, (template, foreign.text)
            assert foreign.json()["error"]["code"] == absent.json()["error"]["code"]
        # A store of its own cannot take another tenant's file either.
        own = theirs.vector_stores.create(name="mine")
        r = c.post(f"/v1/vector_stores/{own.id}/files", json={"file_id": file_id})
        assert r.status_code == 404 and r.json()["error"]["param"] == "file_id"
    assert sdk.vector_stores.retrieve(store_id).file_counts.completed == 3  # untouched


def _call(c: httpx.Client, method: str, template: str, body: dict[str, str] | None, store_id: str, file_id: str
          ) -> httpx.Response:
    payload = None if body is None else {k: v.format(f=file_id) for k, v in body.items()}
    return c.request(method, template.format(s=store_id, f=file_id), json=payload)
