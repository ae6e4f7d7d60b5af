"""Long-term memory in a real app (in-process, SQLite, the fake chat model and the fake embedding model): the rule
extractor, remember and recall per (tenant, end user) on the dense and the keyword path, deduplication, the
Responses hook (opt-in, injected into what the model is sent), end-user erasure and export, rewrap, the setting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tenantlm.app import TenantLMApp, create_app
from tenantlm.conversations.policy import check_memory as check_memory_setting
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.inference.service import Reply
from tenantlm.memories.extract import extract_facts
from tenantlm.memories.models import memory_id_of
from tenantlm.memories.service import LongTermMemory
from tenantlm.memories.store import MemoryStore
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.models import TenantContext


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False, knowledge_embedding_model="embed",
        providers=[ProviderConfig(name="fake", type="fake", tokens=4)],
        models=[ModelConfig(name="chat", provider="fake"),
                ModelConfig(name="embed", provider="fake", kind="embedding", dimensions=8)])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def services(app: TenantLMApp) -> Services:
    svc: Services = app.state.services
    return svc


async def member(app: TenantLMApp, *, long_term: bool = True, log: bool = True) -> TenantContext:
    svc = services(app)
    settings: dict[str, Any] = {"memory": {"long_term": long_term}}
    if log:
        settings["request_log_days"] = 1
    tenant = await svc.tenancy.create_tenant({"name": f"t-{uuid.uuid4().hex[:8]}", "settings": settings},
                                             actor="test")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="test")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    return ctx


async def turn(svc: Services, ctx: TenantContext, user: str | None, text: str) -> dict[str, Any]:
    reply = await svc.responses.create(ctx=ctx, body={"model": "chat", "input": text}, end_user_header=user)
    assert isinstance(reply, Reply)
    return reply.body


async def sent_to_model(svc: Services, tenant_id: str) -> list[str]:
    """The system messages the model was sent, per request, from the tenant's request log."""
    entries = [e async for e in svc.request_log.export(tenant_id=tenant_id)]
    entries.sort(key=lambda e: e["created_at"])
    return ["\n".join(m["content"] for m in e["request"]["messages"] if m["role"] == "system") for e in entries]


# --- the extractor --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("said", "facts"), [
    ("Hi! My name is Ada Lovelace. I live in London. What is the weather?",
     ["The user's name is Ada Lovelace.", "The user lives in London."]),
    ("I am allergic to peanuts. I'm going to the shop.", ["The user is allergic to peanuts."]),
    ("Remember that my locker code is 4812", ["The user's locker code is 4812."]),
    ("Please remember: the wifi password is hunter2", ["The wifi password is hunter2."]),
    ("I work as a nurse and I have two cats.", ["The user works as a nurse.", "The user has two cats."]),
    ("my favourite colour is teal", ["The user's favourite colour is teal."]),
    ("I don't like olives", ["The user dislikes olives."]),
    ("What is my name?", []),
    ("Tell me a joke about databases.", []),
])
def test_the_extractor_keeps_statements_about_the_user(said: str, facts: list[str]) -> None:
    assert extract_facts(said) == facts


def test_the_memory_setting_is_validated() -> None:
    assert check_memory_setting({"policy": "window", "long_term": True}) == {"policy": "window", "long_term": True}
    for bad, param in (([], "settings.memory"), ({"long_term": "yes"}, "settings.memory.long_term"),
                       ({"policy": "all"}, "settings.memory.policy"), ({"forever": 1}, "settings.memory.forever")):
        with pytest.raises(InvalidRequest) as err:
            check_memory_setting(bad)
        assert err.value.param == param


async def test_the_setting_goes_through_the_tenant_api(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app, long_term=False)
    with pytest.raises(InvalidRequest) as err:
        await svc.tenancy.update_tenant(tenant_id=ctx.tenant_id, body={"settings": {"memory": {"long_term": 1}}},
                                        actor="test")
    assert err.value.param == "settings.memory.long_term"


# --- remember, recall: tenant AND end user ----------------------------------------------------------------------
async def test_recall_sees_one_person_on_the_dense_and_the_keyword_path(app: TenantLMApp) -> None:
    svc = services(app)
    a, b = await member(app), await member(app)
    mem = svc.memories
    people = [(a.tenant_id, "u1"), (a.tenant_id, "u2"), (b.tenant_id, "u1")]
    planted: dict[tuple[str, str], set[str]] = {}
    for tenant_id, user in people:
        ids = set()
        for text in ("The user likes sailing.", f"The user's code word is {tenant_id}-{user}-kiwi.",
                     "The user lives in Oslo."):
            ids.add((await mem.remember(tenant_id=tenant_id, end_user=user, text=text, source="test")).memory.id)
        planted[(tenant_id, user)] = ids
    for tenant_id, user in people:
        for query in ("kiwi code word", "sailing", f"{b.tenant_id}-u1-kiwi", "anything at all"):
            found = await mem.recall(tenant_id=tenant_id, end_user=user, query=query, k=10)
            assert found, query
            assert {m.id for m in found} <= planted[(tenant_id, user)]
            assert {m.end_user for m in found} == {user}
        # the structures themselves hold one person: the vector index and the keyword index
        assert mem.dense.held(tenant_id=tenant_id, store_id=user)
        people_index = await mem._people(tenant_id, user)
        assert len(people_index) == 3
        hits = await mem.dense.search(tenant_id=tenant_id, store_id=user,
                                      query=np.ones(8, dtype=np.float32), k=50)
        assert {memory_id_of(key) for key, _ in hits} == planted[(tenant_id, user)]
    # the keyword path alone: another person's code word matches nothing here
    only_mine = (await mem._people(a.tenant_id, "u1")).bm25.search(f"{b.tenant_id}-u1-kiwi", 10)
    assert all(memory_id_of(key) in planted[(a.tenant_id, "u1")] for key, _ in only_mine)
    assert await mem.recall(tenant_id=a.tenant_id, end_user="nobody", query="sailing", k=5) == []


async def test_duplicates_are_found_by_text_and_by_embedding(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    mem = svc.memories
    first = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user lives in Oslo.", source="s")
    again = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="the USER lives in oslo", source="s")
    assert first.created and not again.created and again.memory.id == first.memory.id
    other = await mem.remember(tenant_id=ctx.tenant_id, end_user="v", text="The user lives in Oslo.", source="s")
    assert other.created  # another person's identical fact is theirs
    assert len(await mem.list_memories(tenant_id=ctx.tenant_id, end_user="u")) == 1


async def test_the_same_fact_said_twice_at_once_is_stored_once(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    done = await asyncio.gather(*(svc.memories.remember(tenant_id=ctx.tenant_id, end_user="u",
                                                        text="The user rows a boat.", source=f"s{i}")
                                  for i in range(4)))
    assert sum(d.created for d in done) == 1 and len({d.memory.id for d in done}) == 1


class NearEmbedder:
    """Behind the embedding port: texts that start alike get nearly the same vector."""

    async def embed(self, *, ctx: TenantContext, texts: Sequence[str], end_user: str | None = None
                    ) -> npt.NDArray[np.float32]:
        rows = []
        for text in texts:
            v = np.zeros(8, dtype=np.float32)
            v[hash(text[:12]) % 8] = 1.0
            v[hash(text) % 8] += 0.05
            rows.append(v / np.linalg.norm(v))
        return np.vstack(rows)


async def test_a_near_identical_fact_is_not_stored_twice(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    mem = LongTermMemory(store=MemoryStore(svc.db), sealer=svc.keyring, embedder=NearEmbedder(),
                         tenant=lambda tid: svc.tenancy.get_tenant(tenant_id=tid))
    first = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user's dog is Rex.", source="s")
    near = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user's dog is Rex, a beagle.",
                              source="s")
    assert not near.created and near.memory.id == first.memory.id


async def test_a_change_made_by_another_replica_is_seen(app: TenantLMApp) -> None:
    """Two LongTermMemory objects on one database stand for two replicas: each sees what the other added and
    deleted, though both hold indexes of the person."""
    svc = services(app)
    ctx = await member(app)
    other = LongTermMemory(store=MemoryStore(svc.db), sealer=svc.keyring, embedder=svc.search.embedder,
                           tenant=lambda tid: svc.tenancy.get_tenant(tenant_id=tid))
    here = await svc.memories.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes plums.", source="s")
    assert [m.id for m in await other.recall(tenant_id=ctx.tenant_id, end_user="u", query="plums", k=5)] \
        == [here.memory.id]
    there = await other.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes pears.", source="s")
    found = await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u", query="pears", k=5)
    assert found[0].id == there.memory.id
    again = await svc.memories.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes pears!",
                                        source="s")
    assert not again.created  # deduplicated against the other replica's memory
    await other.delete(tenant_id=ctx.tenant_id, end_user="u", memory_id=there.memory.id)
    assert [m.id for m in await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u", query="pears", k=5)] \
        == [here.memory.id]
    await other.dense.aclose()


async def test_delete_removes_a_memory_from_both_indexes(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    mem = svc.memories
    kept = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes tea.", source="s")
    gone = await mem.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes zucchini.", source="s")
    assert [m.id for m in await mem.recall(tenant_id=ctx.tenant_id, end_user="u", query="zucchini", k=1)] \
        == [gone.memory.id]
    await mem.delete(tenant_id=ctx.tenant_id, end_user="u", memory_id=gone.memory.id)
    assert [m.id for m in await mem.recall(tenant_id=ctx.tenant_id, end_user="u", query="zucchini", k=5)] \
        == [kept.memory.id]
    with pytest.raises(NotFound):
        await mem.delete(tenant_id=ctx.tenant_id, end_user="u", memory_id=gone.memory.id)
    with pytest.raises(NotFound):  # another person's id is not found here either
        await mem.delete(tenant_id=ctx.tenant_id, end_user="v", memory_id=kept.memory.id)


# --- the Responses hook ---------------------------------------------------------------------------------------
async def test_a_turn_remembers_and_a_later_turn_is_told(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    secret = f"Zed{uuid.uuid4().hex[:6]}"
    first = await turn(svc, ctx, "u1", f"Hello. My name is {secret}.")
    stored = await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1")
    assert [(m.text, m.source) for m in stored] == [(f"The user's name is {secret}.", first["id"])]
    await turn(svc, ctx, "u1", "What is my name?")
    await turn(svc, ctx, "u2", "What is my name?")  # same tenant, another person: told nothing of u1
    await turn(svc, ctx, None, "What is my name?")  # no end user named: no memory
    await svc.request_log.flush()
    systems = await sent_to_model(svc, ctx.tenant_id)
    assert len(systems) == 4
    assert secret not in systems[0]
    assert secret in systems[1] and "earlier conversations" in systems[1]
    assert systems[2] == "" and systems[3] == ""


async def test_memory_is_opt_in(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app, long_term=False)
    await turn(svc, ctx, "u1", "My name is Quentin.")
    assert await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1") == []


async def test_store_false_remembers_nothing(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    await svc.responses.create(ctx=ctx, body={"model": "chat", "input": "My name is Ephemera.", "store": False},
                               end_user_header="u1")
    assert await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1") == []


async def test_a_streamed_turn_remembers_too(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    stream = await svc.responses.create(ctx=ctx, body={"model": "chat", "input": "I live in Tromso.", "stream": True},
                                        end_user_header="u1")
    async for _ in stream.events:  # type: ignore[union-attr]
        pass
    assert [m.text for m in await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1")] \
        == ["The user lives in Tromso."]


async def test_the_memories_of_given_turns_can_be_forgotten(app: TenantLMApp) -> None:
    """What a session wipe uses: the memories its turns wrote go, the others stay (and leave the indexes)."""
    svc = services(app)
    ctx = await member(app)
    first = await turn(svc, ctx, "u1", "I live in Narvik.")
    await turn(svc, ctx, "u1", "I like herring.")
    await turn(svc, ctx, "u2", "I live in Narvik.")
    assert len(await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u1", query="Narvik", k=5)) == 2
    assert await svc.memories.forget_sources(tenant_id=ctx.tenant_id, sources=[first["id"], "resp_unknown"]) == 1
    left = await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u1", query="Narvik", k=5)
    assert [m.text for m in left] == ["The user likes herring."]
    assert len(await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u2")) == 1


async def test_ending_a_session_forgets_what_its_turns_taught(app: TenantLMApp) -> None:
    """The session wipe end to end: memories written by the turns of a conversation go when it ends; a memory the
    same end user gave outside it stays."""
    svc = services(app)
    ctx = await member(app)
    chat = await svc.conversations.create(ctx=ctx, body={}, end_user_header="u1")
    for said in ("My name is Sessionna.", "I live in Bergen."):
        reply = await svc.responses.create(ctx=ctx, body={"model": "chat", "input": said,
                                                          "conversation": chat["id"]}, end_user_header="u1")
        assert isinstance(reply, Reply)
    await turn(svc, ctx, "u1", "I like cloudberries.")  # no conversation: not part of the session
    assert len(await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1")) == 3
    await svc.conversations.end(ctx=ctx, conversation_id=chat["id"], end_user_header="u1")
    left = await svc.memories.list_memories(tenant_id=ctx.tenant_id, end_user="u1")
    assert [m.text for m in left] == ["The user likes cloudberries."]
    recalled = await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u1", query="Bergen", k=5)
    assert all("Bergen" not in m.text for m in recalled)  # gone from the indexes too


# --- erasure, export, rotation ---------------------------------------------------------------------------------
async def test_erasing_an_end_user_leaves_the_others(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    for user in ("u1", "u2"):
        await turn(svc, ctx, user, f"My name is {user}-name. Remember that {user} owns a kayak.")
    await svc.request_log.flush()
    await svc.end_users.flush()
    before = await svc.end_user_eraser.export(tenant_id=ctx.tenant_id, end_user="u1", actor="test")
    assert len(before["memories"]) == 2 and len(before["responses"]) == 1
    assert len(before["request_log"]) == 1 and before["record"][0]["user"] == "u1"
    assert "u1-name" in before["responses"][0]["input"][0]["content"][0]["text"]
    done = await svc.end_user_eraser.erase(tenant_id=ctx.tenant_id, end_user="u1", actor="test")
    assert done["erased"] == {"conversations": 0, "memories": 2, "responses": 1, "request_log": 1, "record": 1,
                              "cache": 0}
    after = await svc.end_user_eraser.export(tenant_id=ctx.tenant_id, end_user="u1", actor="test")
    assert all(after[name] == [] for name in ("memories", "responses", "request_log", "record"))
    assert await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u1", query="kayak", k=5) == []
    with pytest.raises(NotFound):
        await svc.responses.get(tenant_id=ctx.tenant_id, response_id=before["responses"][0]["id"], include=[])
    other = await svc.end_user_eraser.export(tenant_id=ctx.tenant_id, end_user="u2", actor="test")
    assert len(other["memories"]) == 2 and len(other["responses"]) == 1 and len(other["request_log"]) == 1
    actions = [e["action"] async for e in _audit(svc, ctx.tenant_id)]
    assert "end_user.erase_started" in actions and "end_user.erased" in actions and "end_user.exported" in actions


async def _audit(svc: Services, tenant_id: str) -> AsyncIterator[dict[str, Any]]:
    import orjson

    async for chunk in svc.audit.export_jsonl(tenant_id=tenant_id):
        for line in chunk.splitlines():
            if line.strip():
                yield orjson.loads(line)


async def test_rotation_rewraps_memories_and_tenant_erasure_forgets_them(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    await svc.memories.remember(tenant_id=ctx.tenant_id, end_user="u", text="The user likes figs.", source="s")
    await svc.keyring.rotate_dek(tenant_id=ctx.tenant_id)
    assert await svc.memories.rewrap(tenant_id=ctx.tenant_id) == 2  # its text and its vector
    assert await svc.memories.rewrap(tenant_id=ctx.tenant_id) == 0
    svc.memories.lexical.clear()
    await svc.memories.dense.aclose()
    assert [m.text for m in await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u", query="figs", k=1)] \
        == ["The user likes figs."]
    exported = [m async for m in svc.memories.export_tenant(tenant_id=ctx.tenant_id)]
    assert [(m["end_user"], m["text"]) for m in exported] == [("u", "The user likes figs.")]
    await svc.memories.forget_tenant(tenant_id=ctx.tenant_id)
    assert [m async for m in svc.memories.export_tenant(tenant_id=ctx.tenant_id)] == []
    assert not svc.memories.dense.held(tenant_id=ctx.tenant_id, store_id="u")


@pytest.fixture
async def minilm_app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False, knowledge_embedding_model="all-minilm-l6-v2",
        providers=[ProviderConfig(name="fake", type="fake", tokens=4), ProviderConfig(name="local", type="local")],
        models=[ModelConfig(name="chat", provider="fake"),
                ModelConfig(name="all-minilm-l6-v2", provider="local", kind="embedding", dimensions=384)])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.mark.local_models
async def test_a_paraphrased_question_finds_its_fact_with_the_embedded_model(minilm_app: TenantLMApp) -> None:
    """With the embedded MiniLM, the dense side finds a fact that shares no keyword with the question."""
    svc = services(minilm_app)
    ctx = await member(minilm_app)
    for said in ("I work as a pharmacist.", "I live in Lisbon.", "I have a grey parrot.", "I'm tired today."):
        await svc.memories.after_turn(ctx=ctx, end_user="u1", texts=[said], source="s")
    found = await svc.memories.recall(tenant_id=ctx.tenant_id, end_user="u1", query="Which city is my home?", k=1)
    assert [m.text for m in found] == ["The user lives in Lisbon."]
    assert (await svc.memories._people(ctx.tenant_id, "u1")).bm25.search("Which city is my home?", 5) == []
