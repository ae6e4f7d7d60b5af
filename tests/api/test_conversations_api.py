"""OpenAI's Conversations API and Responses with ``conversation``, through the official SDK against a live server on
SQLite and on Postgres: the SDK's own types parse every answer, responses read and extend the conversation with the
history count in ``x-tenantlm-history-items``, an end user's conversation is missing for other end users and for
other tenants exactly as a missing id is, viewer keys read and do not write, the tenant's memory settings are
validated, and ending a session erases the conversation, its items and its responses: the canary text is in no API
answer afterwards, no row of it is left, and (SQLite) no byte of the data dir holds it in the clear. The last test
runs the embedded SmolLM2 (2,048 tokens of context) on a 50-turn conversation."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList, Message
from openai.types.responses import Response

from live import Live, Process, Tenant, catalog_config, start_server
from services import PostgresServer

CANARY = "quetzalcoatlite"
USER = "X-TenantLM-User"
FAKE_ANSWER_WORDS = 8


@dataclass
class Deployment:
    live: Live
    tenant: Tenant
    data_dir: Path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, upstream: Process, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"conversations-{request.param}")
    kw = {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    proc = start_server(tmp, catalog_config(upstream.url, local=False), warmup=False, data_dir=tmp / "data", **kw)
    try:
        live = Live(proc.url, proc, request.param)
        yield Deployment(live, live.new_tenant(f"conv-{uuid.uuid4().hex[:8]}"), tmp / "data")
    finally:
        proc.stop()


def _sdk(dep: Deployment, key: str | None = None, user: str | None = None) -> openai.OpenAI:
    headers = {USER: user} if user else None
    return dep.live.sdk(key or dep.tenant.member_key, max_retries=0, default_headers=headers)


def _http(dep: Deployment, key: str, user: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}", **({USER: user} if user else {})}
    return httpx.Client(base_url=dep.live.url, headers=headers, timeout=30)


def _texts(items: Any) -> list[str]:
    return [item.content[0].text for item in items]


def test_conversations_and_items_through_the_sdk(dep: Deployment) -> None:
    sdk = _sdk(dep)
    made = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"},
                                           {"type": "message", "role": "assistant", "content": "hi there"}],
                                    metadata={"topic": "greeting"})
    assert Conversation.model_validate(made.to_dict()) == made
    assert made.id.startswith("conv_") and made.metadata == {"topic": "greeting"}
    assert sdk.conversations.retrieve(made.id) == made
    updated = sdk.conversations.update(made.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"} and sdk.conversations.retrieve(made.id).metadata == updated.metadata

    added = sdk.conversations.items.create(made.id, items=[{"type": "message", "role": "user",
                                                            "content": f"m{n}"} for n in range(3)])
    assert ConversationItemList.model_validate(added.to_dict()) == added and _texts(added.data) == ["m0", "m1", "m2"]
    newest_first = sdk.conversations.items.list(made.id, limit=2)
    assert _texts(newest_first.data) == ["m2", "m1"] and newest_first.has_more
    oldest_first = list(sdk.conversations.items.list(made.id, order="asc", limit=2))  # the SDK pages with `after`
    assert _texts(oldest_first) == ["hello", "hi there", "m0", "m1", "m2"]
    item = sdk.conversations.items.retrieve(oldest_first[1].id, conversation_id=made.id)
    assert isinstance(item, Message) and item.role == "assistant" and item.content[0].type == "output_text"

    after_delete = sdk.conversations.items.delete(oldest_first[0].id, conversation_id=made.id)
    assert after_delete.id == made.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(oldest_first[0].id, conversation_id=made.id)
    deleted = sdk.conversations.delete(made.id)
    assert deleted == ConversationDeletedResource(id=made.id, object="conversation.deleted", deleted=True)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.list(made.id)


def test_responses_read_and_extend_a_conversation(dep: Deployment) -> None:
    sdk = _sdk(dep)
    conversation = sdk.conversations.create()
    raw = sdk.responses.with_raw_response.create(model="fake-chat", input="alpha bravo", conversation=conversation.id)
    first = raw.parse()
    assert raw.headers["x-tenantlm-history-items"] == "0"
    assert first.conversation is not None and first.conversation.id == conversation.id
    raw = sdk.responses.with_raw_response.create(model="proxied-chat", input="charlie",
                                                 conversation={"id": conversation.id})
    second = Response.model_validate(raw.parse().to_dict())
    assert raw.headers["x-tenantlm-history-items"] == "2"
    assert second.usage is not None and second.usage.input_tokens > 2 + FAKE_ANSWER_WORDS
    with sdk.responses.with_streaming_response.create(model="fake-chat", input="delta", stream=True,
                                                      conversation=conversation.id) as streamed:
        assert streamed.headers["x-tenantlm-history-items"] == "4"
        assert b"response.completed" in b"".join(streamed.iter_bytes())
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [i.role for i in items] == ["user", "assistant"] * 3  # type: ignore[union-attr]
    assert _texts(items)[::2] == ["alpha bravo", "charlie", "delta"]
    assert items[1].id == first.output[0].id and _texts(items)[1] == first.output_text
    ephemeral = sdk.responses.create(model="fake-chat", input=f"ephemeral {uuid.uuid4().hex}", store=False,
                                     conversation=conversation.id)
    assert ephemeral.output_text and len(list(sdk.conversations.items.list(conversation.id))) == 6
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(ephemeral.id)

    with pytest.raises(openai.BadRequestError) as both:
        sdk.responses.create(model="fake-chat", input="x", conversation=conversation.id,
                             previous_response_id=first.id)
    assert both.value.body["param"] == "conversation"  # type: ignore[index]


def test_the_history_sent_is_on_the_usage_event(dep: Deployment) -> None:
    tenant = dep.live.new_tenant(f"conv-u-{uuid.uuid4().hex[:8]}")
    sdk = _sdk(dep, tenant.member_key)
    conversation = sdk.conversations.create()
    sent = {}
    for text in ("one", "two", "three"):
        raw = sdk.responses.with_raw_response.create(model="fake-chat", input=text, conversation=conversation.id)
        sent[raw.headers["x-tenantlm-usage-id"]] = int(raw.headers["x-tenantlm-history-items"])
    plain = sdk.chat.completions.with_raw_response.create(model="fake-chat",
                                                          messages=[{"role": "user", "content": "no history"}])
    sent[plain.headers["x-tenantlm-usage-id"]] = None  # type: ignore[assignment]
    assert list(sent.values()) == [0, 2, 4, None]
    deadline = time.monotonic() + 15
    while True:  # the ledger flushes in the background
        with dep.live.admin() as c:
            r = c.get(f"/admin/v1/tenants/{tenant.id}/usage", params={"format": "csv"})
        assert r.status_code == 200, r.text
        events = {e["id"].rsplit(":", 1)[0]: e for e in csv.DictReader(io.StringIO(r.text))}
        if len(events) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    recorded = {uid: (int(e["history_items"]) if e["history_items"] else None) for uid, e in events.items()}
    assert recorded == sent


def _with_id(body: Any, old: str, new: str) -> Any:
    error = dict(body["error"])
    error["message"] = error["message"].replace(old, new)
    return {"error": error}


def test_an_end_users_conversation_answers_like_a_missing_one_to_everyone_else(dep: Deployment) -> None:
    alice = _sdk(dep, user="alice")
    mine = alice.conversations.create(items=[{"type": "message", "role": "user", "content": "private"}])
    item_id = alice.conversations.items.list(mine.id).data[0].id
    missing, missing_item = "conv_" + "0" * 48, "msg_" + "0" * 48
    other = dep.live.new_tenant(f"conv-o-{uuid.uuid4().hex[:8]}")
    routes = [("GET", "/v1/conversations/{}"), ("POST", "/v1/conversations/{}"), ("DELETE", "/v1/conversations/{}"),
              ("POST", "/v1/conversations/{}/end"), ("GET", "/v1/conversations/{}/items"),
              ("POST", "/v1/conversations/{}/items"), ("GET", "/v1/conversations/{}/items/" + item_id),
              ("DELETE", "/v1/conversations/{}/items/" + item_id)]
    bodies = {"/v1/conversations/{}": {"metadata": {"a": "b"}},
              "/v1/conversations/{}/items": {"items": [{"role": "user", "content": "x"}]}}
    for key, user in ((dep.tenant.member_key, "bob"), (dep.tenant.member_key, None), (other.admin_key, "alice")):
        with _http(dep, key, user) as c:
            for method, path in routes:
                body = bodies.get(path) if method == "POST" else None
                foreign = c.request(method, path.format(mine.id), json=body)
                absent = c.request(method, path.format(missing), json=body)
                assert foreign.status_code == absent.status_code == 404, (method, path, foreign.text)
                assert foreign.json() == _with_id(absent.json(), missing, mine.id)
            foreign = c.post("/v1/responses", json={"model": "fake-chat", "input": "x", "conversation": mine.id})
            absent = c.post("/v1/responses", json={"model": "fake-chat", "input": "x", "conversation": missing})
            assert foreign.status_code == absent.status_code == 404
            assert foreign.json() == _with_id(absent.json(), missing, mine.id)
    with _http(dep, dep.tenant.member_key, "alice") as c:
        assert c.get(f"/v1/conversations/{mine.id}/items/{missing_item}").status_code == 404
    assert _texts(alice.conversations.items.list(mine.id)) == ["private"]  # untouched
    tenant_admin = _sdk(dep, dep.tenant.admin_key)
    assert tenant_admin.conversations.retrieve(mine.id).id == mine.id
    assert _texts(tenant_admin.conversations.items.list(mine.id)) == ["private"]


def test_viewer_keys_read_and_do_not_write(dep: Deployment) -> None:
    made = _sdk(dep).conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    viewer = _sdk(dep, dep.tenant.viewer_key)
    assert viewer.conversations.retrieve(made.id).id == made.id
    assert _texts(viewer.conversations.items.list(made.id)) == ["hi"]
    for write in (lambda: viewer.conversations.create(), lambda: viewer.conversations.delete(made.id),
                  lambda: viewer.conversations.update(made.id, metadata={}),
                  lambda: viewer.conversations.items.create(made.id, items=[{"role": "user", "content": "x"}])):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            write()
        assert "conversations:write" in str(denied.value.body)
    with _http(dep, dep.tenant.viewer_key) as c:
        assert c.post(f"/v1/conversations/{made.id}/end").status_code == 403
    with dep.live.admin() as c:
        r = c.post(f"/admin/v1/tenants/{dep.tenant.id}/keys",
                   json={"name": "inference-only", "role": "member", "scopes": ["inference"]})
        assert r.status_code == 201, r.text
    scoped = _sdk(dep, r.json()["key"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        scoped.responses.create(model="fake-chat", input="hi", conversation=made.id)
    assert "conversations:write" in str(denied.value.body)
    assert _texts(viewer.conversations.items.list(made.id)) == ["hi"]  # nothing was added
    with _http(dep, dep.tenant.member_key) as c:
        assert c.post("/v1/conversations", json={"items": [{"role": "user", "content": "x"}] * 21}).json()[
            "error"]["param"] == "items"


def test_memory_settings_are_validated_by_the_admin_api(dep: Deployment) -> None:
    path = f"/admin/v1/tenants/{dep.tenant.id}"
    with dep.live.admin() as c:
        for settings, param in (({"memory": {"policy": "all"}}, "settings.memory.policy"),
                                ({"memory": {"lifetime": 1}}, "settings.memory.lifetime"),
                                ({"session_ttl_minutes": -1}, "settings.session_ttl_minutes"),
                                ({"conversation_retention_days": "7"}, "settings.conversation_retention_days")):
            r = c.patch(path, json={"settings": settings})
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        r = c.patch(path, json={"settings": {"memory": {"policy": "window", "long_term": False},
                                             "conversation_retention_days": 0, "session_ttl_minutes": 0}})
        assert r.status_code == 200 and r.json()["settings"]["memory"] == {"policy": "window", "long_term": False}


def test_ending_a_session_erases_it_everywhere(dep: Deployment) -> None:
    tenant = dep.live.new_tenant(f"conv-e-{uuid.uuid4().hex[:8]}")
    sdk = _sdk(dep, tenant.member_key, user="carol")
    conversation = sdk.conversations.create(items=[{"type": "message", "role": "user",
                                                    "content": f"my locker code is {CANARY}"}])
    answered = sdk.responses.create(model="fake-chat", input=f"remember {CANARY}", conversation=conversation.id)
    kept = sdk.responses.create(model="fake-chat", input="outside the session")
    assert CANARY in str(sdk.conversations.items.list(conversation.id).to_dict())
    sealed = _sealed_records(dep.data_dir, tenant.id, conversation.id) if dep.live.backend == "sqlite" else []
    ended = sdk.post(f"/conversations/{conversation.id}/end", cast_to=ConversationDeletedResource)
    assert ended == ConversationDeletedResource(id=conversation.id, object="conversation.deleted", deleted=True)
    with _http(dep, tenant.member_key, "carol") as c:
        for path in (f"/v1/conversations/{conversation.id}", f"/v1/conversations/{conversation.id}/items",
                     f"/v1/responses/{answered.id}", f"/v1/responses/{answered.id}/input_items"):
            r = c.get(path)
            assert r.status_code == 404 and CANARY not in r.text
        assert c.get(f"/v1/responses/{kept.id}").status_code == 200
        assert c.post(f"/v1/conversations/{conversation.id}/end").status_code == 404
    if dep.live.backend == "sqlite":
        _assert_erased_on_disk(dep.data_dir, tenant.id, conversation.id, sealed)


_RECORDS = {"conversations": ("id", ("sealed_metadata",)),
            "conversation_items": ("conversation_id", ("sealed_item",)),
            "responses": ("conversation_id", ("sealed_input", "sealed_output"))}


def _sealed_records(data_dir: Path, tenant_id: str, conversation_id: str) -> list[bytes]:
    """The sealed bytes of every row of the conversation (items, metadata, its responses)."""
    db = sqlite3.connect(f"file:{data_dir / 'tenantlm.db'}?mode=ro", uri=True)
    try:
        found = [bytes(value) for table, (column, sealed) in _RECORDS.items() for name in sealed
                 for (value,) in db.execute(f"SELECT {name} FROM {table} WHERE tenant_id = ? AND {column} = ?",
                                            (tenant_id, conversation_id))]
    finally:
        db.close()
    assert len(found) == 1 + 3 + 2  # metadata, the first message and the turn's two, the response's input and output
    return found


def _assert_erased_on_disk(data_dir: Path, tenant_id: str, conversation_id: str, sealed: list[bytes]) -> None:
    """No row of the conversation is left; once the WAL is checkpointed the database file holds none of their sealed
    bytes (secure_delete); and the canary is in no file of the data dir in the clear (the database, its WAL, the
    ledger journal, the keyring)."""
    assert _rows_left(data_dir, tenant_id, conversation_id) == 0
    db = sqlite3.connect(data_dir / "tenantlm.db")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.close()
    image = (data_dir / "tenantlm.db").read_bytes()
    for record in sealed:
        assert record[-32:] not in image  # the end of its ciphertext and its tag: no other record shares them
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "tenantlm.db" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path


def _rows_left(data_dir: Path, tenant_id: str, conversation_id: str) -> int:
    db = sqlite3.connect(f"file:{data_dir / 'tenantlm.db'}?mode=ro", uri=True)
    try:
        return sum(db.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = ? AND {column} = ?",
                              (tenant_id, conversation_id)).fetchone()[0] for table, (column, _) in _RECORDS.items())
    finally:
        db.close()


# --- the embedded model -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    proc = start_server(tmp_path_factory.mktemp("conversations-local"), catalog_config(None, local=True),
                        warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


@pytest.mark.local_models
@pytest.mark.parametrize("policy", ["window", "summary"])
def test_the_embedded_model_answers_after_fifty_turns(local: Live, policy: str) -> None:
    tenant = local.new_tenant(f"conv-l-{policy}-{uuid.uuid4().hex[:8]}", settings={"memory": {"policy": policy}})
    sdk = local.sdk(tenant.member_key, max_retries=0)
    conversation = sdk.conversations.create()
    filler = "We talked about the weather, the garden and the plans for the weekend in some detail. " * 2
    turns: list[Any] = []
    for n in range(50):
        turns += [{"type": "message", "role": "user", "content": f"Turn {n}. {filler}"},
                  {"type": "message", "role": "assistant", "content": f"Noted turn {n}. {filler}"}]
    for start in range(0, len(turns), 20):
        sdk.conversations.items.create(conversation.id, items=turns[start:start + 20])
    raw = sdk.responses.with_raw_response.create(model="smollm2-135m-instruct", input="Say hello.",
                                                 conversation=conversation.id, max_output_tokens=24, temperature=0)
    made = raw.parse()
    sent = int(raw.headers["x-tenantlm-history-items"])
    assert made.status in ("completed", "incomplete") and made.output_text.strip()
    assert 0 < sent < 100 and sent % 2 == 0  # the newest whole turns
    assert made.usage is not None and made.usage.input_tokens + made.usage.output_tokens <= 2048
    assert len(list(sdk.conversations.items.list(conversation.id, limit=100))) == 102
