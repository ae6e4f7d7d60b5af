"""Conversations and conversation memory in a real app (in-process, SQLite, the deterministic fake model: one token
per word): items kept in order and sealed, responses that read and extend a conversation, the window policy (newest
turns within the budget, starting at a user turn), the summary policy (older turns summarised once, by the tenant's
metered model, the summary sealed), the end of a session and the sweeps (retention, idle TTL) erasing the
conversation, its items, its responses and calling the session hooks, end-user erasure and export, key rotation and
tenant erasure, and the tenant settings' validation."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from openai.types.conversations import Conversation, ConversationItemList, Message
from openai.types.responses import Response

from tenantlm.app import TenantLMApp, create_app
from tenantlm.conversations.history import fit_history
from tenantlm.conversations.policy import MemoryPolicy
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.inference.service import Reply
from tenantlm.responses.context import conservative_count
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.storage.sql.tables import conversation_items, conversations, responses
from tenantlm.tenancy.models import Role, TenantContext

ANSWER_WORDS = 8
SMALL_CONTEXT = 400


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False,
        providers=[ProviderConfig(name="fake", type="fake", tokens=ANSWER_WORDS)],
        models=[ModelConfig(name="chat", provider="fake"),
                ModelConfig(name="small-chat", provider="fake", context_length=SMALL_CONTEXT)])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def services(app: TenantLMApp) -> Services:
    svc: Services = app.state.services
    return svc


async def member(app: TenantLMApp, name: str = "t", role: str = "member", **settings: Any) -> TenantContext:
    svc = services(app)
    tenant = await svc.tenancy.create_tenant({"name": name, "settings": settings}, actor="test")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": role}, actor="test")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    return ctx


def as_admin(ctx: TenantContext) -> TenantContext:
    return dataclasses.replace(ctx, role=Role.ADMIN)


async def respond(app: TenantLMApp, ctx: TenantContext, user: str | None = None, **body: Any) -> Reply:
    reply = await services(app).responses.create(ctx=ctx, body={"model": "chat", **body}, end_user_header=user)
    assert isinstance(reply, Reply)
    Response.model_validate(reply.body)
    return reply


def turn(n: int, words: int = 10) -> list[dict[str, Any]]:
    """One turn: a user message and the assistant's answer, each ``words`` words long, numbered."""
    return [{"role": "user", "content": f"question{n} " + "word " * (words - 1)},
            {"role": "assistant", "content": f"answer{n} " + "word " * (words - 1)}]


async def with_turns(app: TenantLMApp, ctx: TenantContext, turns: int, words: int = 10) -> str:
    svc = services(app).conversations
    made = await svc.create(ctx=ctx, body={}, end_user_header=None)
    for start in range(0, turns, 10):
        items = [i for n in range(start, min(turns, start + 10)) for i in turn(n, words)]
        await svc.add_items(ctx=ctx, conversation_id=made["id"], body={"items": items}, end_user_header=None)
    return str(made["id"])


async def rows(app: TenantLMApp, table: sa.Table, tenant_id: str) -> int:
    async with services(app).db.tenant_tx(tenant_id=tenant_id) as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table)
                                       .where(table.c.tenant_id == tenant_id))).scalar_one())


# --- the Conversations API -----------------------------------------------------------------------------------------
async def test_items_are_kept_in_order_paged_and_shaped_as_the_sdk_reads_them(app: TenantLMApp) -> None:
    svc = services(app).conversations
    ctx = await member(app)
    made = Conversation.model_validate(await svc.create(
        ctx=ctx, body={"items": [{"role": "user", "content": "hello"},
                                 {"type": "message", "role": "assistant", "content": "hi"}],
                       "metadata": {"topic": "demo"}}, end_user_header=None))
    assert made.id.startswith("conv_") and made.metadata == {"topic": "demo"}
    added = ConversationItemList.model_validate(await svc.add_items(
        ctx=ctx, conversation_id=made.id, body={"items": [{"role": "user", "content": f"m{n}"} for n in range(3)]},
        end_user_header=None))
    assert [i.content[0].text for i in added.data] == ["m0", "m1", "m2"]  # type: ignore[union-attr]
    page = ConversationItemList.model_validate(await svc.list_items(
        ctx=ctx, conversation_id=made.id, end_user_header=None, after=None, limit=2, order="asc"))
    assert [i.content[0].text for i in page.data] == ["hello", "hi"] and page.has_more  # type: ignore[union-attr]
    rest = await svc.list_items(ctx=ctx, conversation_id=made.id, end_user_header=None, after=page.last_id,
                                limit=10, order="asc")
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m0", "m1", "m2"] and not rest["has_more"]
    newest = await svc.list_items(ctx=ctx, conversation_id=made.id, end_user_header=None, after=None, limit=1,
                                  order="desc")
    assert newest["first_id"] == rest["last_id"]
    item = Message.model_validate(await svc.get_item(ctx=ctx, conversation_id=made.id, item_id=page.first_id,
                                                     end_user_header=None))
    assert item.role == "user" and item.status == "completed"
    assert await svc.delete_item(ctx=ctx, conversation_id=made.id, item_id=page.first_id,
                                 end_user_header=None) == made.model_dump()
    with pytest.raises(NotFound):
        await svc.get_item(ctx=ctx, conversation_id=made.id, item_id=page.first_id, end_user_header=None)
    updated = await svc.update(ctx=ctx, conversation_id=made.id, body={"metadata": {"topic": "x"}},
                               end_user_header=None)
    assert updated["metadata"] == {"topic": "x"}
    assert (await svc.get(ctx=ctx, conversation_id=made.id, end_user_header=None))["metadata"] == {"topic": "x"}


async def test_bad_bodies_are_400s_naming_the_param(app: TenantLMApp) -> None:
    svc = services(app).conversations
    ctx = await member(app)
    cases = [({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
             ({"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
             ({"metadata": {"k": 5}}, "metadata.k"), ({"colour": "red"}, "colour")]
    for body, param in cases:
        with pytest.raises(InvalidRequest) as caught:
            await svc.create(ctx=ctx, body=body, end_user_header=None)
        assert caught.value.param == param
    made = await svc.create(ctx=ctx, body={}, end_user_header=None)
    with pytest.raises(InvalidRequest) as caught:
        await svc.add_items(ctx=ctx, conversation_id=made["id"], body={"items": []}, end_user_header=None)
    assert caught.value.param == "items"


async def test_an_end_users_conversation_is_missing_for_everyone_else_but_the_tenant_admin(app: TenantLMApp
                                                                                          ) -> None:
    svc = services(app).conversations
    ctx = await member(app)
    other_tenant = await member(app, "other")
    mine = await svc.create(ctx=ctx, body={}, end_user_header="alice")
    by_safety_id = await svc.create(ctx=ctx, body={"safety_identifier": "alice"}, end_user_header=None)
    for conversation_id in (mine["id"], by_safety_id["id"]):
        assert (await svc.get(ctx=ctx, conversation_id=conversation_id, end_user_header="alice"))["id"]
        assert (await svc.get(ctx=as_admin(ctx), conversation_id=conversation_id, end_user_header=None))["id"]
    missing = "conv_" + "0" * 48
    for who, user in ((ctx, "bob"), (ctx, None), (other_tenant, "alice"), (ctx, "alice")):
        target = missing if user == "alice" and who is ctx else mine["id"]
        with pytest.raises(NotFound) as caught:
            await svc.get(ctx=who, conversation_id=target, end_user_header=user)
        assert caught.value.message == f"Conversation with id '{target}' not found."
        with pytest.raises(NotFound):
            await respond(app, who, user, input="hi", conversation=target)
    shared = await svc.create(ctx=ctx, body={}, end_user_header=None)  # no end user: the tenant's
    assert (await svc.get(ctx=ctx, conversation_id=shared["id"], end_user_header="bob"))["id"] == shared["id"]


# --- responses with a conversation ---------------------------------------------------------------------------------
async def test_responses_read_and_extend_the_conversation(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    made = await svc.conversations.create(ctx=ctx, body={}, end_user_header=None)
    first = await respond(app, ctx, input="first question", conversation=made["id"])
    assert first.headers["x-tenantlm-history-items"] == "0"
    assert first.body["conversation"] == {"id": made["id"]}
    ephemeral = await respond(app, ctx, input="forget this", conversation=made["id"], store=False)
    assert ephemeral.headers["x-tenantlm-history-items"] == "2"
    second = await respond(app, ctx, input="second question", conversation={"id": made["id"]})
    assert second.headers["x-tenantlm-history-items"] == "2"  # the ephemeral turn was not kept
    assert second.body["usage"]["input_tokens"] > first.body["usage"]["input_tokens"] + ANSWER_WORDS
    listed = await svc.conversations.list_items(ctx=ctx, conversation_id=made["id"], end_user_header=None,
                                                after=None, limit=10, order="asc")
    assert [i["role"] for i in listed["data"]] == ["user", "assistant"] * 2
    assert listed["data"][1]["id"] == first.body["output"][0]["id"]
    assert listed["data"][3]["content"][0]["text"] == second.body["output"][0]["content"][0]["text"]
    stream = await svc.responses.create(ctx=ctx, body={"model": "chat", "input": "third", "stream": True,
                                                       "conversation": made["id"]}, end_user_header=None)
    assert not isinstance(stream, Reply) and stream.headers["x-tenantlm-history-items"] == "4"
    frames = [f async for f in stream.events]
    assert b"response.completed" in frames[-1]
    listed = await svc.conversations.list_items(ctx=ctx, conversation_id=made["id"], end_user_header=None,
                                                after=None, limit=10, order="asc")
    assert len(listed["data"]) == 6
    with pytest.raises(InvalidRequest) as caught:
        await respond(app, ctx, input="x", conversation=made["id"], previous_response_id=first.body["id"])
    assert caught.value.param == "conversation"


async def test_the_window_sends_the_newest_turns_that_fit_starting_at_a_user_turn(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    conversation_id = await with_turns(app, ctx, 30)
    conversation = await svc.conversations.open(ctx=ctx, conversation_id=conversation_id, end_user=None)

    async def never(previous: str | None, items: list[dict[str, Any]]) -> str:
        raise AssertionError("the window policy summarises nothing")
    budget = 150
    history = await fit_history(conversations=svc.conversations, tenant_id=ctx.tenant_id, conversation=conversation,
                                memory=MemoryPolicy(), budget=budget, count=conservative_count, summarise=never)
    texts = [m["content"].split()[0] for m in history.messages]
    assert history.items == len(texts) and 0 < len(texts) < 60
    assert history.messages[0]["role"] == "user" and texts[-1] == "answer29"
    newest = len(texts) // 2
    assert texts == [f"{kind}{n}" for n in range(30 - newest, 30) for kind in ("question", "answer")]
    cost = sum(4 + conservative_count(m["content"]) for m in history.messages)
    assert cost <= budget < cost + 2 * (4 + conservative_count(history.messages[0]["content"]))

    reply = await respond(app, ctx, model="small-chat", input="and now?", conversation=conversation_id)
    sent = int(reply.headers["x-tenantlm-history-items"])
    assert 0 < sent < 60 and sent % 2 == 0
    assert reply.body["usage"]["input_tokens"] <= SMALL_CONTEXT


async def test_the_summary_policy_summarises_older_turns_once_with_the_tenants_metered_model(app: TenantLMApp
                                                                                           ) -> None:
    svc = services(app)
    ctx = await member(app, memory={"policy": "summary", "long_term": False})
    conversation_id = await with_turns(app, ctx, 30)
    reply = await respond(app, ctx, model="small-chat", input="and now?", conversation=conversation_id,
                          max_output_tokens=32, safety_identifier="dora")
    sent = int(reply.headers["x-tenantlm-history-items"])
    assert 0 < sent < 60
    row = await svc.conversations.store.get(tenant_id=ctx.tenant_id, conversation_id=conversation_id)
    assert row is not None and row.sealed_summary is not None and row.summary_through == 59 - sent
    conversation = await svc.conversations.open(ctx=ctx, conversation_id=conversation_id, end_user=None)
    summary = await svc.conversations.summary(tenant_id=ctx.tenant_id, conversation=conversation)
    assert summary and len(summary.split()) == ANSWER_WORDS  # the fake model's answer
    assert summary.encode() not in row.sealed_summary
    await svc.ledger.flush()
    metered = [e async for page in svc.ledger.platform_events(start=0, end=4e9) for e in page
               if e.tenant_id == ctx.tenant_id]
    assert len(metered) == 2  # the summary and the answer, both the tenant's and its end user's
    assert {e.end_user for e in metered} == {"dora"} and all(e.prompt_tokens > 50 for e in metered)
    again = await respond(app, ctx, model="small-chat", input="once more", conversation=conversation_id,
                          max_output_tokens=32)
    moved = await svc.conversations.store.get(tenant_id=ctx.tenant_id, conversation_id=conversation_id)
    assert moved is not None and moved.summary_through >= row.summary_through
    assert int(again.headers["x-tenantlm-history-items"]) > 0


# --- sessions, retention, erasure ----------------------------------------------------------------------------------
class Hook:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    async def session_ended(self, *, tenant_id: str, conversation_id: str) -> None:
        self.ended.append((tenant_id, conversation_id))


async def test_ending_a_session_erases_the_conversation_its_responses_and_calls_the_hooks(app: TenantLMApp) -> None:
    svc = services(app)
    hook = Hook()
    svc.conversations.session_hooks.append(hook)
    ctx = await member(app)
    kept = await respond(app, ctx, input="outside any conversation")
    made = await svc.conversations.create(ctx=ctx, body={}, end_user_header="alice")
    inside = await respond(app, ctx, "alice", input="inside", conversation=made["id"])
    with pytest.raises(NotFound):
        await svc.conversations.end(ctx=ctx, conversation_id=made["id"], end_user_header="bob")
    ended = await svc.conversations.end(ctx=ctx, conversation_id=made["id"], end_user_header="alice")
    assert ended == {"id": made["id"], "object": "conversation.deleted", "deleted": True}
    assert hook.ended == [(ctx.tenant_id, made["id"])]
    with pytest.raises(NotFound):
        await svc.responses.get(tenant_id=ctx.tenant_id, response_id=inside.body["id"], include=[])
    assert (await svc.responses.get(tenant_id=ctx.tenant_id, response_id=kept.body["id"], include=[]))["id"]
    for table in (conversations, conversation_items):
        assert await rows(app, table, ctx.tenant_id) == 0
    assert await rows(app, responses, ctx.tenant_id) == 1


async def test_the_sweep_erases_conversations_past_retention_or_idle_past_the_session_ttl(app: TenantLMApp
                                                                                         ) -> None:
    svc = services(app)
    now = [1_000_000.0]
    svc.conversations.clock = lambda: now[0]
    kept_forever = await member(app, "forever")
    retained = await member(app, "retained", conversation_retention_days=1)
    sessions = await member(app, "sessions", session_ttl_minutes=30)
    made = {}
    for ctx in (kept_forever, retained, sessions):
        made[ctx.tenant_id] = [(await svc.conversations.create(ctx=ctx, body={"items": [{"role": "user",
                                                                                          "content": "x"}]},
                                                               end_user_header=None))["id"] for _ in range(2)]
    now[0] += 20 * 60
    await svc.conversations.append(tenant_id=sessions.tenant_id, conversation_id=made[sessions.tenant_id][1],
                                   items=[{"id": "msg_active", "type": "message", "role": "user",
                                           "status": "completed", "content": [{"type": "input_text", "text": "y"}]}])
    now[0] += 20 * 60  # 40 minutes after creation, 20 after the second session's last activity
    assert await svc.conversations.sweep() == 1
    assert await rows(app, conversations, sessions.tenant_id) == 1
    now[0] += 86_400
    assert await svc.conversations.sweep() == 3  # the second session, and both retained ones
    assert await rows(app, conversations, retained.tenant_id) == 0
    assert await rows(app, conversation_items, retained.tenant_id) == 0
    assert await rows(app, conversations, kept_forever.tenant_id) == 2


async def test_end_user_erasure_and_export(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    alices = [await svc.conversations.create(ctx=ctx, body={"items": [{"role": "user", "content": f"a{n}"}]},
                                             end_user_header="alice") for n in range(2)]
    bobs = await svc.conversations.create(ctx=ctx, body={"items": [{"role": "user", "content": "b"}]},
                                          end_user_header="bob")
    await respond(app, ctx, "alice", input="more", conversation=alices[0]["id"])
    exported = await svc.conversations.export_end_user(tenant_id=ctx.tenant_id, end_user="alice")
    assert [c["id"] for c in exported] == [c["id"] for c in alices]
    assert [i["content"][0]["text"] for i in exported[0]["items"]][:2] == ["a0", "more"]
    assert len(exported[0]["items"]) == 3 and exported[0]["end_user"] == "alice"
    archive = zipfile.ZipFile(io.BytesIO(await svc.exporter.export(tenant_id=ctx.tenant_id, actor="test")))
    in_tenant_export = [orjson.loads(line) for line in archive.read("conversations.jsonl").splitlines()]
    assert sorted(c["id"] for c in in_tenant_export) == sorted(c["id"] for c in [*alices, bobs])
    assert {c["end_user"] for c in in_tenant_export} == {"alice", "bob"}
    assert [c for c in in_tenant_export if c["id"] == alices[0]["id"]] == exported[:1]
    assert await svc.conversations.erase_end_user(tenant_id=ctx.tenant_id, end_user="alice") == 2
    assert await svc.conversations.export_end_user(tenant_id=ctx.tenant_id, end_user="alice") == []
    assert await rows(app, responses, ctx.tenant_id) == 0
    assert (await svc.conversations.get(ctx=ctx, conversation_id=bobs["id"], end_user_header="bob"))["id"]


async def test_rotation_rewraps_conversations_and_tenant_erasure_forgets_them(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app, memory={"policy": "summary"})
    conversation_id = await with_turns(app, ctx, 30)
    await respond(app, ctx, model="small-chat", input="q", conversation=conversation_id, max_output_tokens=32)
    before = await svc.conversations.export_end_user(tenant_id=ctx.tenant_id, end_user="nobody")
    assert before == []
    items = await rows(app, conversation_items, ctx.tenant_id)
    await svc.keyring.rotate_dek(tenant_id=ctx.tenant_id)
    assert await svc.conversations.rewrap(tenant_id=ctx.tenant_id) == items + 2  # items, metadata, summary
    assert await svc.conversations.rewrap(tenant_id=ctx.tenant_id) == 0
    listed = await svc.conversations.list_items(ctx=ctx, conversation_id=conversation_id, end_user_header=None,
                                                after=None, limit=1, order="asc")
    assert listed["data"][0]["content"][0]["text"].startswith("question0")
    await svc.conversations.forget_tenant(tenant_id=ctx.tenant_id)
    for table in (conversations, conversation_items):
        assert await rows(app, table, ctx.tenant_id) == 0


@pytest.mark.parametrize(("settings", "param"), [
    ({"memory": {"policy": "forever"}}, "settings.memory.policy"),
    ({"memory": {"long_term": "yes"}}, "settings.memory.long_term"),
    ({"memory": {"policy": "window", "depth": 3}}, "settings.memory.depth"),
    ({"memory": "window"}, "settings.memory"),
    ({"conversation_retention_days": -1}, "settings.conversation_retention_days"),
    ({"conversation_retention_days": 1.5}, "settings.conversation_retention_days"),
    ({"session_ttl_minutes": True}, "settings.session_ttl_minutes"),
    ({"session_ttl_minutes": -5}, "settings.session_ttl_minutes"),
])
async def test_memory_settings_are_validated(app: TenantLMApp, settings: dict[str, Any], param: str) -> None:
    svc = services(app)
    tenant = await svc.tenancy.create_tenant({"name": "s"}, actor="test")
    with pytest.raises(InvalidRequest) as caught:
        await svc.tenancy.update_tenant(tenant_id=tenant.id, body={"settings": settings}, actor="test")
    assert caught.value.param == param
    good = {"memory": {"policy": "summary"}, "conversation_retention_days": 30, "session_ttl_minutes": 0}
    updated = await svc.tenancy.update_tenant(tenant_id=tenant.id, body={"settings": good}, actor="test")
    assert updated.settings["memory"] == {"policy": "summary", "long_term": False}
    assert updated.settings["conversation_retention_days"] == 30


async def test_the_servers_retention_loop_ends_idle_sessions(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, warmup=False, access_log=False, retention_sweep_s=0.05,
                        providers=[ProviderConfig(name="fake", type="fake")],
                        models=[ModelConfig(name="chat", provider="fake")])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        svc = services(application)
        ctx = await member(application, session_ttl_minutes=1)
        made = await svc.conversations.create(ctx=ctx, body={}, end_user_header=None)
        later = svc.conversations.clock() + 61
        svc.conversations.clock = lambda: later
        for _ in range(200):  # the loop runs every 50 ms
            if await rows(application, conversations, ctx.tenant_id) == 0:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(NotFound):
            await svc.conversations.get(ctx=ctx, conversation_id=made["id"], end_user_header=None)
