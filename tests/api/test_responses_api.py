"""OpenAI's Responses API per tenant, through the official SDK against a live server on SQLite and on Postgres: JSON
and streamed responses that the SDK's own types validate, file_search over the tenant's vector stores with results and
file_citation annotations, previous_response_id chains, store=false, usage in the tenant's bill, roles, and another
tenant's ids answered exactly like missing ones. The models are the in-process fake and the fake OpenAI-compatible
upstream (``proxied-chat``), which answer the same way; the embedding model is the deterministic fake, so file_search
here is asked to rank lexically (the semantic side runs with the local models in the last test)."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from live import Live, Process, Tenant, catalog_config, start_server
from services import PostgresServer

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CANARY = "zanzibarite"
DOCS = {
    "volcano.txt": "Volcanoes erupt molten rock called lava. Magma chambers lie beneath the crust.",
    "bread.md": "# Baking\n\nBread rises because yeast ferments sugar into carbon dioxide.",
    "vault.txt": f"The vault opens with the code word {CANARY}, kept by the night porter.",
}
LEXICAL = {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}
MODELS = ["fake-chat", "proxied-chat"]
FAKE_ANSWER_WORDS = 8  # the in-process fake's answer; one token a word


@dataclass
class Deployment:
    live: Live
    tenant: Tenant  # holds the store below
    store_id: str
    file_ids: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, upstream: Process, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"responses-{request.param}")
    kw = {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    config = catalog_config(upstream.url, local=False)
    config.providers.append({"name": "long", "type": "fake", "tokens": 40})
    config.models.append({"name": "long-chat", "provider": "long", "kind": "chat"})
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    proc = start_server(tmp, config, warmup=False, **kw)
    try:
        live = Live(proc.url, proc, request.param)
        tenant = live.new_tenant(f"resp-{uuid.uuid4().hex[:8]}")
        store_id, file_ids = _store_with_docs(live.sdk(tenant.member_key, max_retries=0))
        yield Deployment(live, tenant, store_id, file_ids)
    finally:
        proc.stop()


def _store_with_docs(sdk: openai.OpenAI) -> tuple[str, dict[str, str]]:
    store = sdk.vector_stores.create(name="docs")
    ids = {}
    for name, text in DOCS.items():
        done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode()),
                                                       poll_interval_ms=100)
        assert done.status == "completed", done.last_error
        ids[name] = done.id
    return store.id, ids


def _sdk(dep: Deployment, key: str | None = None) -> openai.OpenAI:
    return dep.live.sdk(key or dep.tenant.member_key, max_retries=0)


def _tool(dep: Deployment, store_ids: list[str] | None = None) -> Any:
    return {"type": "file_search", "vector_store_ids": store_ids or [dep.store_id], "ranking_options": LEXICAL}


def _validated(response: Response) -> Response:
    """The response as the SDK's type validates it strictly (the SDK itself parses leniently)."""
    return Response.model_validate(response.to_dict())


def _events(stream: Any) -> list[Any]:
    return [EVENTS.validate_python(event.to_dict()) for event in stream]


def _final(stream: Any) -> Any:
    """The response a stream ended with."""
    return list(stream)[-1].response


@pytest.mark.parametrize("model", MODELS)
def test_json_and_streamed_responses_parse_in_the_sdk(dep: Deployment, model: str) -> None:
    sdk = _sdk(dep)
    made = _validated(sdk.responses.create(model=model, input="Say something", instructions="Be brief.",
                                           metadata={"case": "json"}, temperature=0.5))
    assert made.id.startswith("resp_") and made.status == "completed" and made.output_text
    assert made.output[0].type == "message" and made.output[0].id.startswith("msg_")
    assert made.instructions == "Be brief." and made.metadata == {"case": "json"} and made.temperature == 0.5
    assert made.usage is not None and made.usage.output_tokens > 0
    assert made.usage.total_tokens == made.usage.input_tokens + made.usage.output_tokens
    assert _validated(sdk.responses.retrieve(made.id)) == made

    events = _events(sdk.responses.create(model=model, input="Say something", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.usage.output_tokens > 0
    assert _validated(sdk.responses.retrieve(final.id)) == final


@pytest.mark.parametrize("model", MODELS)
def test_file_search_cites_the_document_holding_the_canary(dep: Deployment, model: str) -> None:
    sdk = _sdk(dep)
    canary_id = dep.file_ids["vault.txt"]
    made = _validated(sdk.responses.create(model=model, input=f"What is {CANARY}?", tools=[_tool(dep)],
                                           include=["file_search_call.results"]))
    search, message = made.output
    assert search.type == "file_search_call" and search.id.startswith("fs_") and search.status == "completed"
    assert search.queries == [f"What is {CANARY}?"]
    assert search.results and search.results[0].file_id == canary_id and CANARY in (search.results[0].text or "")
    assert {r.file_id for r in search.results} == {canary_id}  # ranked lexically: only the canary's file matches
    assert message.type == "message"
    [part] = message.content
    assert part.type == "output_text"
    assert [a.to_dict() for a in part.annotations] == [
        {"type": "file_citation", "file_id": canary_id, "filename": "vault.txt", "index": len(part.text)}]
    assert made.tools[0].type == "file_search" and made.tools[0].vector_store_ids == [dep.store_id]

    plain: Any = _validated(sdk.responses.create(model=model, input=f"What is {CANARY}?", tools=[_tool(dep)]))
    assert plain.output[0].type == "file_search_call" and plain.output[0].results is None
    again: Any = _validated(sdk.responses.retrieve(plain.id, include=["file_search_call.results"]))
    assert again.output[0].results

    events = _events(sdk.responses.create(model=model, input=f"What is {CANARY}?", tools=[_tool(dep)], stream=True,
                                          include=["file_search_call.results"]))
    kinds = [e.type for e in events]
    assert kinds[2:7] == ["response.output_item.added", "response.file_search_call.in_progress",
                          "response.file_search_call.searching", "response.file_search_call.completed",
                          "response.output_item.done"]
    [annotation] = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert annotation.annotation.file_id == canary_id and annotation.output_index == 1
    assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
    final = events[-1].response
    assert final.output[0].results[0].file_id == canary_id
    assert final.output[1].content[0].annotations[0].file_id == canary_id


def test_previous_response_id_chains_turns_and_another_tenants_id_is_404(dep: Deployment) -> None:
    sdk = _sdk(dep)
    first = sdk.responses.create(model="fake-chat", input="alpha bravo")
    second = sdk.responses.create(model="fake-chat", input="charlie", previous_response_id=first.id)
    third = _final(sdk.responses.create(model="fake-chat", input="delta echo", previous_response_id=second.id,
                                        stream=True))
    # the model was given every earlier turn: 2 + 8, then 1 + 8, then 2 words
    assert first.usage is not None and first.usage.input_tokens == 2
    assert second.usage is not None and second.usage.input_tokens == 2 + FAKE_ANSWER_WORDS + 1
    assert third.usage.input_tokens == 2 + 1 + 2 * FAKE_ANSWER_WORDS + 2
    assert second.previous_response_id == first.id and third.previous_response_id == second.id
    listed: Any = sdk.responses.input_items.list(third.id)
    assert [i.content[0].text for i in listed] == ["delta echo"]

    other = _sdk(dep, dep.live.new_tenant(f"resp-b-{uuid.uuid4().hex[:8]}").member_key)
    missing = "resp_" + "0" * 48
    with pytest.raises(openai.NotFoundError) as foreign:
        other.responses.create(model="fake-chat", input="x", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError) as absent:
        other.responses.create(model="fake-chat", input="x", previous_response_id=missing)
    assert {"error": foreign.value.body} == _with_id({"error": absent.value.body}, missing, first.id)


def test_store_false_leaves_nothing_retrievable(dep: Deployment) -> None:
    sdk = _sdk(dep)
    made = sdk.responses.create(model="fake-chat", input="forget me", store=False)
    streamed = _final(sdk.responses.create(model="fake-chat", input="forget me", store=False, stream=True))
    for response_id in (made.id, streamed.id):
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.input_items.list(response_id)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.create(model="fake-chat", input="x", previous_response_id=response_id)


def test_the_models_limit_makes_the_response_incomplete(dep: Deployment) -> None:
    sdk = _sdk(dep)
    made = _validated(sdk.responses.create(model="long-chat", input="go on", max_output_tokens=16))
    assert made.status == "incomplete" and made.incomplete_details is not None
    assert made.incomplete_details.reason == "max_output_tokens" and made.max_output_tokens == 16
    assert made.usage is not None and made.usage.output_tokens == 16
    last = _events(sdk.responses.create(model="long-chat", input="go on", max_output_tokens=16, stream=True))[-1]
    assert last.type == "response.incomplete" and last.response.incomplete_details.reason == "max_output_tokens"


def test_usage_is_reported_and_metered(dep: Deployment) -> None:
    tenant = dep.live.new_tenant(f"resp-u-{uuid.uuid4().hex[:8]}")
    sdk = _sdk(dep, tenant.member_key)
    made = [sdk.responses.create(model="fake-chat", input="one two three"),
            sdk.responses.create(model="fake-chat", input="four five", store=False),
            _final(sdk.responses.create(model="fake-chat", input="six", stream=True))]
    usages = [r.usage for r in made]
    assert all(u is not None for u in usages)
    rows = _usage(dep.live, tenant.id, requests=3)
    [row] = [r for r in rows if r["model"] == "fake-chat"]
    assert row["requests"] == 3
    assert row["prompt_tokens"] == sum(u.input_tokens for u in usages if u)
    assert row["completion_tokens"] == sum(u.output_tokens for u in usages if u)


def test_roles_inference_and_knowledge_read(dep: Deployment) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        _sdk(dep, dep.tenant.viewer_key).responses.create(model="fake-chat", input="hi")
    with dep.live.admin() as c:
        r = c.post(f"/admin/v1/tenants/{dep.tenant.id}/keys",
                   json={"name": "inference-only", "role": "member", "scopes": ["inference"]})
        assert r.status_code == 201, r.text
        scoped = _sdk(dep, r.json()["key"])
    made = scoped.responses.create(model="fake-chat", input="hi")
    assert scoped.responses.retrieve(made.id).id == made.id
    with pytest.raises(openai.PermissionDeniedError) as denied:
        scoped.responses.create(model="fake-chat", input="hi", tools=[_tool(dep)])
    assert "knowledge:read" in str(denied.value.body)


def test_another_tenants_ids_answer_like_missing_ones(dep: Deployment) -> None:
    made = _sdk(dep).responses.create(model="fake-chat", input="mine")
    other = dep.live.new_tenant(f"resp-c-{uuid.uuid4().hex[:8]}")
    missing, missing_store = "resp_" + "0" * 48, "vs_" + "x" * 24
    with httpx.Client(base_url=dep.live.url, headers={"authorization": f"Bearer {other.member_key}"}) as c:
        for method, path in (("GET", "/v1/responses/{}"), ("GET", "/v1/responses/{}/input_items"),
                             ("DELETE", "/v1/responses/{}")):
            foreign = c.request(method, path.format(made.id))
            absent = c.request(method, path.format(missing))
            assert foreign.status_code == absent.status_code == 404, foreign.text
            assert foreign.json() == _with_id(absent.json(), missing, made.id)
        body = {"model": "fake-chat", "input": "x", "tools": [_tool(dep)]}
        foreign = c.post("/v1/responses", json=body)
        absent = c.post("/v1/responses", json={**body, "tools": [_tool(dep, [missing_store])]})
        assert foreign.status_code == absent.status_code == 404, foreign.text
        assert foreign.json() == _with_id(absent.json(), missing_store, dep.store_id)
    assert _sdk(dep).responses.retrieve(made.id).id == made.id  # untouched by the other tenant's delete


def test_the_tenant_export_holds_its_stored_responses_and_vector_stores(dep: Deployment) -> None:
    secret = f"export-{uuid.uuid4().hex[:12]}"
    sdk = _sdk(dep)
    first = sdk.responses.create(model="fake-chat", input=f"remember {secret}")
    second = sdk.responses.create(model="fake-chat", input="and then", previous_response_id=first.id)
    other = dep.live.new_tenant(f"resp-x-{uuid.uuid4().hex[:8]}")
    _sdk(dep, other.member_key).responses.create(model="fake-chat", input=f"not in A's export {secret}")
    with dep.live.admin() as c:
        archive = c.post(f"/admin/v1/tenants/{dep.tenant.id}/export")
        assert archive.status_code == 200, archive.text
    zf = zipfile.ZipFile(io.BytesIO(archive.content))
    records = {r["id"]: r for r in map(orjson.loads, zf.read("responses.jsonl").splitlines())}
    assert {first.id, second.id} <= set(records)
    assert records[first.id]["input"][0]["content"][0]["text"] == f"remember {secret}"
    assert records[second.id]["previous_response_id"] == first.id
    assert records[second.id]["response"]["output"][0]["content"][0]["text"] == second.output_text
    assert b"not in A's export" not in archive.content
    stores = {s["id"]: s for s in map(orjson.loads, zf.read("vector_stores.jsonl").splitlines())}
    assert stores[dep.store_id]["name"] == "docs"
    assert {f["id"] for f in stores[dep.store_id]["files"]} == set(dep.file_ids.values())
    manifest = orjson.loads(zf.read("manifest.json"))
    assert "responses.jsonl" in str(manifest) and "vector_stores.jsonl" in str(manifest)


def test_input_items_page_and_order(dep: Deployment) -> None:
    sdk = _sdk(dep)
    texts = ["first", "second", "third", "fourth", "fifth"]
    roles = ["developer", "user", "user", "user", "assistant"]
    items: Any = [{"role": role, "content": text} for role, text in zip(roles, texts, strict=True)]
    made = sdk.responses.create(model="fake-chat", input=items)
    asc: list[Any] = list(sdk.responses.input_items.list(made.id, order="asc", limit=2))  # the SDK follows pages
    assert [i.content[0].text for i in asc] == texts
    assert [i.role for i in asc] == roles
    page: Any = sdk.responses.input_items.list(made.id, limit=2)
    assert [i.content[0].text for i in page.data] == ["fifth", "fourth"]
    assert page.has_more
    sdk.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)


@pytest.mark.parametrize("body, status, param", [
    ({"model": "fake-chat", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]}, 400,
     "tools[0].type"),
    ({"model": "fake-chat"}, 400, "input"),
    ({"model": "gpt-17", "input": "x"}, 404, "model"),
    ({"model": "fake-embed", "input": "x"}, 400, "model"),
    ({"model": "fake-chat", "input": "x", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    ({"model": "fake-chat", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["vs_nope"]}]},
     404, "vector_store_id"),
])
def test_bad_requests_are_openai_shaped(dep: Deployment, body: dict[str, Any], status: int, param: str) -> None:
    r = httpx.post(dep.live.url + "/v1/responses", json=body,
                   headers={"authorization": f"Bearer {dep.tenant.member_key}"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def _with_id(body: Any, old: str, new: str) -> Any:
    """An error body with one id replaced (the message names the id asked for)."""
    error = dict(body["error"])
    error["message"] = error["message"].replace(old, new)
    return {"error": error}


def _usage(live: Live, tenant_id: str, *, requests: int) -> list[dict[str, Any]]:
    """The tenant's usage by model once the ledger (flushed every second) holds ``requests`` requests."""
    deadline = time.monotonic() + 15
    with live.admin() as c:
        while True:
            rows: list[dict[str, Any]] = c.get(f"/admin/v1/tenants/{tenant_id}/usage",
                                               params={"group_by": "model"}).json()["data"]
            if sum(r["requests"] for r in rows) >= requests:
                return rows
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)


# --- the embedded models ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    proc = start_server(tmp_path_factory.mktemp("responses-local"), catalog_config(None, local=True), warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


@pytest.mark.local_models
def test_the_embedded_model_answers_from_retrieved_context(local: Live) -> None:
    tenant = local.new_tenant(f"resp-l-{uuid.uuid4().hex[:8]}")
    sdk = local.sdk(tenant.member_key, max_retries=0)
    long_doc = "Granite is an igneous rock. " * 400  # far more than the model's 2,048 tokens: cut to fit
    store = sdk.vector_stores.create(name="facts")
    ids = {}
    for name, text in {"pets.txt": "Our office cat is named Biscuit. Biscuit is orange and sleeps all day.",
                       "rocks.txt": long_doc}.items():
        done = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode()),
                                                       poll_interval_ms=200)
        assert done.status == "completed", done.last_error
        ids[name] = done.id
    made = _validated(sdk.responses.create(
        model="smollm2-135m-instruct", input="What is the name of the office cat?", max_output_tokens=32,
        temperature=0, tools=[{"type": "file_search", "vector_store_ids": [store.id],
                               "ranking_options": {"hybrid_search": {"embedding_weight": 1, "text_weight": 0}}}],
        include=["file_search_call.results"]))
    search, message = made.output
    assert search.type == "file_search_call" and search.results
    assert search.results[0].file_id == ids["pets.txt"]  # the semantic side found it (dense ranking only)
    assert message.type == "message" and made.output_text.strip()
    cited = [a.file_id for a in message.content[0].annotations]  # type: ignore[union-attr]
    assert cited[0] == ids["pets.txt"]
    assert made.usage is not None and 30 < made.usage.input_tokens + made.usage.output_tokens <= 2048
