"""The Responses service in a real app (in-process, SQLite, the deterministic fake model: one token per word):
chained turns rebuild the conversation from stored turns whose bytes grow linearly, the stream's events parse as the
SDK's event union in OpenAI's order, the model's limit makes the response incomplete, a client that leaves a stream
frees its passage and stores nothing, key rotation rewraps stored responses and erasure forgets them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tenantlm.app import TenantLMApp, create_app
from tenantlm.errors import NotFound
from tenantlm.inference.service import Reply
from tenantlm.responses.service import EventStream, ResponsesService
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.models import TenantContext

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ANSWER_WORDS = 8


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False,
        providers=[ProviderConfig(name="fake", type="fake", tokens=ANSWER_WORDS),
                   ProviderConfig(name="long", type="fake", tokens=40)],
        models=[ModelConfig(name="chat", provider="fake"), ModelConfig(name="long-chat", provider="long")])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def services(app: TenantLMApp) -> Services:
    svc: Services = app.state.services
    return svc


async def member(app: TenantLMApp, name: str = "t") -> TenantContext:
    svc = services(app)
    tenant = await svc.tenancy.create_tenant({"name": name}, actor="test")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="test")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    return ctx


async def create(service: ResponsesService, ctx: TenantContext, **body: Any) -> dict[str, Any]:
    reply = await service.create(ctx=ctx, body={"model": "chat", **body}, end_user_header=None)
    assert isinstance(reply, Reply)
    Response.model_validate(reply.body)  # the SDK's own type, validated strictly
    return reply.body


async def events(service: ResponsesService, ctx: TenantContext, **body: Any) -> list[Any]:
    stream = await service.create(ctx=ctx, body={"model": "chat", "stream": True, **body}, end_user_header=None)
    assert isinstance(stream, EventStream)
    parsed = []
    async for frame in stream.events:
        head, data = frame.decode().strip().split("\n")
        event = EVENTS.validate_python(orjson.loads(data.removeprefix("data: ")))
        assert head == f"event: {event.type}"
        parsed.append(event)
    return parsed


async def test_chained_turns_rebuild_the_conversation_and_store_linear_bytes(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    previous = None
    inputs, stored = [], []
    for _ in range(12):
        body = await create(svc.responses, ctx, input="three words here", previous_response_id=previous)
        previous = body["id"]
        inputs.append(body["usage"]["input_tokens"])
        stored.append(await svc.responses.store.stored_bytes(tenant_id=ctx.tenant_id))
    # the model saw every earlier question and answer: 3 words a question, 8 an answer
    assert inputs == [3 * n + ANSWER_WORDS * (n - 1) for n in range(1, 13)]
    growth = [b - a for a, b in itertools.pairwise(stored)]
    assert max(growth) - min(growth) < 120  # each turn stores its own items only (the answers' words vary)
    assert stored[-1] < 13 * stored[0]
    assert previous is not None
    items = await svc.responses.input_items(tenant_id=ctx.tenant_id, response_id=previous, after=None, limit=100,
                                            order="asc")
    assert [i["content"][0]["text"] for i in items["data"]] == ["three words here"]


async def test_the_stream_follows_openais_events_and_ends_with_the_stored_response(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    parsed = await events(svc.responses, ctx, input="tell me", metadata={"k": "v"})
    kinds = [e.type for e in parsed]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    final = parsed[-1].response
    text = "".join(e.delta for e in parsed if e.type == "response.output_text.delta")
    assert final.output_text == text == parsed[-4].text and len(text.split()) == ANSWER_WORDS
    assert final.usage.output_tokens == ANSWER_WORDS and final.metadata == {"k": "v"}
    stored = await svc.responses.get(tenant_id=ctx.tenant_id, response_id=final.id, include=[])
    assert Response.model_validate(stored) == final


async def test_the_models_limit_makes_the_response_incomplete(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    body = await create(svc.responses, ctx, model="long-chat", input="go on", max_output_tokens=16)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][-1]["status"] == "incomplete" and body["usage"]["output_tokens"] == 16
    parsed = await events(svc.responses, ctx, model="long-chat", input="go on", max_output_tokens=16)
    assert parsed[-1].type == "response.incomplete"
    assert parsed[-1].response.incomplete_details.reason == "max_output_tokens"


async def test_a_client_that_leaves_a_stream_frees_its_passage_and_stores_nothing(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    stream = await svc.responses.create(ctx=ctx, body={"model": "chat", "stream": True, "input": "hi"},
                                        end_user_header=None)
    assert isinstance(stream, EventStream)
    assert b"response.created" in await anext(stream.events)
    assert svc.inference.gate.open == 1
    await stream.events.aclose()  # what the SSE response does when its client goes away
    assert svc.inference.gate.open == 0
    assert await svc.responses.store.stored_bytes(tenant_id=ctx.tenant_id) == 0


async def test_store_false_writes_nothing(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    await create(svc.responses, ctx, input="hello", store=False)
    await events(svc.responses, ctx, input="hello", store=False)
    assert await svc.responses.store.stored_bytes(tenant_id=ctx.tenant_id) == 0


async def test_rotation_rewraps_stored_responses_and_erasure_forgets_them(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    first = await create(svc.responses, ctx, input="one")
    second = await create(svc.responses, ctx, input="two", previous_response_id=first["id"])
    await svc.keyring.rotate_dek(tenant_id=ctx.tenant_id)
    assert await svc.responses.rewrap(tenant_id=ctx.tenant_id) == 4  # input and output of both
    assert await svc.responses.rewrap(tenant_id=ctx.tenant_id) == 0
    again = await svc.responses.get(tenant_id=ctx.tenant_id, response_id=second["id"], include=[])
    assert again == second
    await svc.responses.forget_tenant(tenant_id=ctx.tenant_id)
    assert await svc.responses.store.stored_bytes(tenant_id=ctx.tenant_id) == 0


async def test_a_missing_vector_store_is_a_404_before_any_model_call(app: TenantLMApp) -> None:
    svc = services(app)
    ctx = await member(app)
    tool = {"type": "file_search", "vector_store_ids": ["vs_" + "x" * 24]}
    with pytest.raises(NotFound):
        await svc.responses.create(ctx=ctx, body={"model": "chat", "input": "q", "tools": [tool]},
                                   end_user_header=None)
    await svc.ledger.flush()
    metered = [e async for page in svc.ledger.platform_events(start=0, end=4e9) for e in page]
    assert metered == [] and svc.inference.gate.open == 0


@pytest.fixture
async def budget_app(tmp_path: Path) -> AsyncIterator[TenantLMApp]:
    """A plan whose monthly budget runs out while a 40-token answer streams (the budget is charged every 32)."""
    limits = {"rpm": None, "tpm": None, "max_concurrency": None, "monthly_token_budget": 30,
              "default_max_tokens": 16}
    settings = Settings(
        data_dir=tmp_path, warmup=False, access_log=False,
        providers=[ProviderConfig(name="long", type="fake", tokens=40)],
        models=[ModelConfig(name="chat", provider="long")],
        plans={"free": {"description": "small", "limits": limits}})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_budget_that_runs_out_mid_stream_fails_the_response(budget_app: TenantLMApp) -> None:
    svc = services(budget_app)
    ctx = await member(budget_app)
    parsed = await events(svc.responses, ctx, input="go")
    assert [e.type for e in parsed[-2:]] == ["error", "response.failed"]
    assert parsed[-2].code == "insufficient_quota"
    failed = parsed[-1].response
    assert failed.status == "failed" and failed.error.code == "rate_limit_exceeded"
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert await svc.responses.store.stored_bytes(tenant_id=ctx.tenant_id) == 0
    assert svc.inference.gate.open == 0
