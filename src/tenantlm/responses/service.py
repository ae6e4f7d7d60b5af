"""The Responses API per tenant: create (JSON or streamed), retrieve, delete, list input items.

A request's way: parse it (``models``) -> with ``file_search``, the key's ``knowledge:read`` and every named vector
store of this tenant (a foreign or missing id is the same 404), before anything else runs -> the conversation
(``previous_response_id``: the chain of stored responses, walked back; a foreign id is a 404 like a missing one) ->
the search (the last user message's text over the stores, as the tenant, metered as an embedding request) -> the
sources fitted into the model's context (``context``) -> the model through ``InferenceService``, the path chat
completions take (catalog, end user, admission, fair scheduler, provider router, ledger) -> the answer with its
``file_citation`` annotations -> stored when ``store`` (the default) -> the response object, or its events.

Storage: one row per stored response with its own new input items and its output, sealed with the tenant's data key
(kinds ``response_input`` and ``response_output``, record id the response id), and the id of the response it
continues. Nothing is copied from turn to turn: a conversation of n turns takes O(n) bytes, and it is rebuilt by
walking the chain. Deleting a response deletes its items; responses chained after it keep theirs, and their
conversation starts after the gap. ``store: false`` writes nothing; a response that failed or whose stream was left
by its client is not stored.

With ``conversation`` (the Conversations API's, checked for this tenant and end user like any id), the history is the
conversation's items fitted by the tenant's memory policy (``responses.memory``); the request's input and the response's
output are added to the conversation once the answer is complete, and the stored response remembers the
conversation, whose end erases it. With ``store: false`` the conversation is read and nothing is written: neither the
response nor the new items (an ephemeral turn persists nothing). The number of
history items sent is the ``x-tenantlm-history-items`` header.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from tenantlm.conversations.history import SUMMARY_PREFIX, History
from tenantlm.conversations.service import ConversationsService
from tenantlm.errors import InvalidRequest, NotFound, RateLimited, TenantLMError
from tenantlm.inference.service import InferenceService, Piece, Reply
from tenantlm.knowledge.filters import filter_predicate
from tenantlm.knowledge.search import KnowledgeSearch
from tenantlm.knowledge.vector_stores import VectorStoresService
from tenantlm.metering.models import PromptUse
from tenantlm.prompts.compose import Rendered
from tenantlm.prompts.service import PromptsService
from tenantlm.responses import objects
from tenantlm.responses.context import (
    ANSWER_ROOM,
    Source,
    build_messages,
    chat_messages,
    citations,
    fit_sources,
    source_budget,
    token_counter,
)
from tenantlm.responses.memory import ConversationMemory
from tenantlm.responses.models import INCLUDE_RESULTS, ResponseRequest, new_id, parse_request
from tenantlm.responses.store import ResponseRow, ResponseStore
from tenantlm.tenancy import access
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.end_users import pick_end_user
from tenantlm.tenancy.models import Permission, TenantContext

JSON = dict[str, Any]
ENDPOINT = "responses"
INPUT_KIND, OUTPUT_KIND = "response_input", "response_output"
HISTORY_HEADER = "x-tenantlm-history-items"


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


class TurnMemory(Protocol):
    """Long-term memory of the end user a turn names (``memories.LongTermMemory``): what to tell the model before the
    turn, what to remember after it. Both do nothing unless the tenant turned long-term memory on."""

    async def before_turn(self, *, ctx: TenantContext, end_user: str | None, query: str | None) -> list[str]: ...
    async def after_turn(self, *, ctx: TenantContext, end_user: str | None, texts: list[str],
                         source: str) -> int: ...


MEMORY_HEADER = "What you know about the user from earlier conversations:"


@dataclass(slots=True)
class EventStream:
    """A response's SSE events, the model's first chunk already produced (setup errors are HTTP errors)."""

    events: AsyncGenerator[bytes, None]
    headers: dict[str, str]


@dataclass(slots=True)
class Draft:
    """One response in the making: its request, its ids, what the search found and what the model was given."""

    request: ResponseRequest
    id: str
    created_at: float
    message_id: str
    search_id: str | None
    query: str | None
    end_user: str | None = None
    results: list[JSON] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    prompt_use: PromptUse | None = None  # the prompt template the request was rendered from
    history: History | None = None  # what was sent before the input (a conversation or a response chain)
    memories: list[str] = field(default_factory=list)  # the end user's long-term memories given to the model

    @property
    def instructions(self) -> str | None:
        """What the model is told first: the request's instructions, the conversation's summary when the memory
        policy made one, then the end user's long-term memories (the response echoes the request's alone)."""
        parts = [self.request.instructions]
        if self.history is not None and self.history.summary is not None:
            parts.append(SUMMARY_PREFIX + self.history.summary)
        if self.memories:
            parts.append(MEMORY_HEADER + "\n" + "\n".join(f"- {m}" for m in self.memories))
        return "\n\n".join(p for p in parts if p) or None

    @property
    def history_items(self) -> int | None:
        return None if self.history is None else self.history.items

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        if self.history is None:
            return headers
        return {**headers, HISTORY_HEADER: str(self.history.items)}

    def search_item(self, status: str) -> JSON | None:
        if self.search_id is None or self.query is None:
            return None
        results = objects.search_results(self.results) if status == "completed" else None
        return objects.file_search_call(self.search_id, [self.query], status, results)

    def response(self, status: str, output: list[JSON], **kw: Any) -> JSON:
        return objects.response_object(response_id=self.id, created_at=self.created_at, request=self.request,
                                       status=status, output=output, **kw)

    def finish(self, text: str, finish_reason: str | None, usage: JSON) -> JSON:
        """The finished response: ``incomplete`` (reason ``max_output_tokens``) when the model stopped at its limit."""
        cut = finish_reason == "length"
        message = objects.output_message(self.message_id, "incomplete" if cut else "completed",
                                         [objects.output_text(text, citations(self.sources, text))])
        search = self.search_item("completed")
        return self.response("incomplete" if cut else "completed", [*([search] if search else []), message],
                             usage=usage, incomplete_reason="max_output_tokens" if cut else None,
                             completed_at=None if cut else time.time())


def shown(response: JSON, *, include_results: bool) -> JSON:
    return response if include_results else objects.without_results(response)


class ResponsesService:
    def __init__(self, *, store: ResponseStore, sealer: Sealer, inference: InferenceService, catalog: ModelCatalog,
                 search: KnowledgeSearch, vector_stores: VectorStoresService,
                 conversations: ConversationsService | None = None, long_term: TurnMemory | None = None,
                 prompts: PromptsService | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sealer = sealer
        self.inference = inference
        self.catalog = catalog
        self.search = search
        self.vector_stores = vector_stores
        self.conversation_memory = None if conversations is None else ConversationMemory(
            conversations=conversations, inference=inference, endpoint=ENDPOINT)
        self.long_term = long_term
        self.prompts = prompts
        self.clock = clock

    # --- create -----------------------------------------------------------------------------------------------
    async def create(self, *, ctx: TenantContext, body: JSON, end_user_header: str | None) -> Reply | EventStream:
        rendered = await self._prompt(ctx, body)
        if rendered is not None:
            body = {**body, **{k: v for k, v in rendered.model.items() if body.get(k) is None}}  # unset settings
        request = parse_request(body)
        if rendered is not None:
            request = dataclasses.replace(request, prompt=rendered.echo,
                                          instructions=_joined(rendered.instructions, request.instructions))
        model = await self.catalog.resolve(ctx, request.model)  # 404 (or 403 region) before any search
        if model.config.kind != "chat":
            raise InvalidRequest(f"'{request.model}' is an {model.config.kind} model; responses need a chat model",
                                 param="model")
        end_user = pick_end_user(header=end_user_header, body_user=request.user,
                                 body_safety_id=request.safety_identifier)
        if request.file_search is not None:
            access.data_plane(ctx, Permission.KNOWLEDGE_READ)
            for store_id in request.file_search.vector_store_ids:
                await self.vector_stores.usable_store(tenant_id=ctx.tenant_id, store_id=store_id)
        draft = Draft(request=request, id=new_id("resp_"), created_at=self.clock(), message_id=new_id("msg_"),
                      search_id=None, query=None, end_user=end_user,
                      prompt_use=None if rendered is None else rendered.use)
        draft.history = await self._history_for(ctx, draft, end_user, end_user_header, model.config.context_length,
                                                model.config.tokenizer)
        conversation = [*(rendered.messages if rendered is not None else []),
                        *(draft.history.messages if draft.history else []), *chat_messages(request.input)]
        await self._recall(ctx, draft, conversation)
        if request.search:
            await self._retrieve(ctx, draft, conversation, end_user, model.config.context_length,
                                 model.config.tokenizer)
        chat = self._chat_body(request, build_messages(draft.instructions, draft.sources, conversation))
        if request.stream:
            stream = await self._stream(ctx, draft, chat, end_user_header)
            await self._learn(ctx, draft)
            return stream
        reply = await self.inference.chat(ctx=ctx, body=chat, end_user_header=end_user_header, endpoint=ENDPOINT,
                                          prompt_use=draft.prompt_use, history_items=draft.history_items)
        choice = (reply.body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        response = draft.finish(text, choice.get("finish_reason"), _usage(reply.body.get("usage")))
        await self._save(ctx.tenant_id, draft, response)
        await self._append_to_conversation(ctx.tenant_id, draft, response)
        await self._learn(ctx, draft)
        return Reply(shown(response, include_results=request.include_results), draft.headers(reply.headers))

    # --- long-term memory (the hook: nothing here unless a TurnMemory is wired and the tenant turned it on) ----
    async def _recall(self, ctx: TenantContext, draft: Draft, conversation: list[JSON]) -> None:
        if self.long_term is None:
            return
        query = next((m["content"] for m in reversed(conversation) if m["role"] == "user" and m["content"]), None)
        draft.memories = await self.long_term.before_turn(ctx=ctx, end_user=draft.end_user, query=query)

    async def _learn(self, ctx: TenantContext, draft: Draft) -> None:
        if self.long_term is None or not draft.request.store:  # store: false persists nothing, memories included
            return
        said = [m["content"] for m in chat_messages(draft.request.input) if m["role"] == "user" and m["content"]]
        await self.long_term.after_turn(ctx=ctx, end_user=draft.end_user, texts=said, source=draft.id)

    async def _prompt(self, ctx: TenantContext, body: JSON) -> Rendered | None:
        """The request's ``prompt`` rendered for this tenant (its override applied), or None without one."""
        if body.get("prompt") is None:
            return None
        if self.prompts is None:
            raise InvalidRequest("prompt templates are not enabled on this server", param="prompt")
        return await self.prompts.render(tenant_id=ctx.tenant_id, prompt=body["prompt"])

    async def _retrieve(self, ctx: TenantContext, draft: Draft, conversation: list[JSON], end_user: str | None,
                        context_length: int, tokenizer: str | None) -> None:
        search = draft.request.file_search
        assert search is not None
        query = next((m["content"] for m in reversed(conversation) if m["role"] == "user" and m["content"]), None)
        if query is None:
            raise InvalidRequest("file_search needs a user message with text to search for", param="input")
        draft.search_id, draft.query = new_id("fs_"), query
        draft.results = await self.search.query(ctx=ctx, store_ids=search.vector_store_ids, queries=[query],
                                                ranking=search.ranking, filters=filter_predicate(search.filters),
                                                limit=search.max_num_results, end_user=end_user)
        count = token_counter(tokenizer)
        budget = source_budget(context_length=context_length,
                               answer_room=draft.request.max_output_tokens or ANSWER_ROOM,
                               instructions=draft.instructions, conversation=conversation, count=count)
        draft.sources = fit_sources(draft.results, budget=budget, count=count)

    @staticmethod
    def _chat_body(request: ResponseRequest, messages: list[JSON]) -> JSON:
        chat: JSON = {"model": request.model, "messages": messages}
        optional = {"max_tokens": request.max_output_tokens, "temperature": request.temperature,
                    "top_p": request.top_p, "user": request.user, "safety_identifier": request.safety_identifier}
        chat.update({k: v for k, v in optional.items() if v is not None})
        return chat

    # --- streaming --------------------------------------------------------------------------------------------
    async def _stream(self, ctx: TenantContext, draft: Draft, chat: JSON, end_user_header: str | None
                      ) -> EventStream:
        stream = await self.inference.stream_chat_pieces(ctx=ctx, body=chat, end_user_header=end_user_header,
                                                         endpoint=ENDPOINT, prompt_use=draft.prompt_use,
                                                         history_items=draft.history_items)
        events = self._events(ctx.tenant_id, draft, stream.pieces)
        await anext(events)  # into its try: from here on, closing it closes the model's stream (and its passage)
        return EventStream(events, draft.headers(stream.headers))

    async def _events(self, tenant_id: str, draft: Draft, pieces: AsyncIterator[Piece]
                      ) -> AsyncGenerator[bytes, None]:
        emit = objects.EventWriter()
        try:
            yield b""
            include = draft.request.include_results
            yield emit("response.created", response=draft.response("in_progress", []))
            yield emit("response.in_progress", response=draft.response("in_progress", []))
            for frame in self._search_events(draft, emit):
                yield frame
            index = 0 if draft.search_id is None else 1
            ids = {"item_id": draft.message_id, "output_index": index}
            yield emit("response.output_item.added", output_index=index,
                       item=objects.output_message(draft.message_id, "in_progress", []))
            yield emit("response.content_part.added", **ids, content_index=0, part=objects.output_text("", []))
            answer = _Answer()
            async for piece in pieces:
                if piece.error is not None:
                    for frame in _failed(draft, emit, piece.error):
                        yield frame
                    return
                if piece.chunk is None:
                    break
                delta = answer.add(piece.chunk)
                if delta:
                    yield emit("response.output_text.delta", **ids, content_index=0, delta=delta, logprobs=[])
            response = draft.finish(answer.text, answer.finish_reason, answer.usage)
            message = response["output"][-1]
            part = message["content"][0]
            for n, annotation in enumerate(part["annotations"]):
                yield emit("response.output_text.annotation.added", **ids, content_index=0, annotation_index=n,
                           annotation=annotation)
            yield emit("response.output_text.done", **ids, content_index=0, text=answer.text, logprobs=[])
            yield emit("response.content_part.done", **ids, content_index=0, part=part)
            yield emit("response.output_item.done", output_index=index, item=message)
            await self._save(tenant_id, draft, response)
            await self._append_to_conversation(tenant_id, draft, response)
            done = "response.completed" if response["status"] == "completed" else "response.incomplete"
            yield emit(done, response=shown(response, include_results=include))
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _search_events(draft: Draft, emit: objects.EventWriter) -> list[bytes]:
        """The file_search call's events (the search ran before the stream started, so its errors were HTTP
        errors)."""
        if draft.search_id is None:
            return []
        ids = {"item_id": draft.search_id, "output_index": 0}
        done = draft.search_item("completed")
        assert done is not None
        if not draft.request.include_results:
            done["results"] = None
        return [emit("response.output_item.added", output_index=0, item=draft.search_item("in_progress")),
                emit("response.file_search_call.in_progress", **ids),
                emit("response.file_search_call.searching", **ids),
                emit("response.file_search_call.completed", **ids),
                emit("response.output_item.done", output_index=0, item=done)]

    # --- storage ----------------------------------------------------------------------------------------------
    async def _save(self, tenant_id: str, draft: Draft, response: JSON) -> None:
        if not draft.request.store:
            return
        record = {"response": response, "include_results": draft.request.include_results}
        await self.store.insert(tenant_id=tenant_id, row=ResponseRow(
            tenant_id=tenant_id, id=draft.id, previous_response_id=draft.request.previous_response_id,
            created_at=draft.created_at, conversation_id=draft.request.conversation, end_user=draft.end_user,
            sealed_input=await self._seal(tenant_id, INPUT_KIND, draft.id, draft.request.input),
            sealed_output=await self._seal(tenant_id, OUTPUT_KIND, draft.id, record)))

    async def _seal(self, tenant_id: str, kind: str, record_id: str, value: Any) -> bytes:
        return await self.sealer.seal(tenant_id=tenant_id, kind=kind, record_id=record_id,
                                      plaintext=orjson.dumps(value))

    async def _open(self, row: ResponseRow, kind: str) -> Any:
        sealed = row.sealed_input if kind == INPUT_KIND else row.sealed_output
        return orjson.loads(await self.sealer.open(tenant_id=row.tenant_id, kind=kind, record_id=row.id,
                                                   ciphertext=sealed))

    async def _row(self, tenant_id: str, response_id: str, param: str = "response_id") -> ResponseRow:
        row = await self.store.get(tenant_id=tenant_id, response_id=response_id)
        if row is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param=param)
        return row

    # --- history: a conversation, or a chain of responses ------------------------------------------------------
    async def _history_for(self, ctx: TenantContext, draft: Draft, end_user: str | None,
                           end_user_header: str | None, context_length: int, tokenizer: str | None
                           ) -> History | None:
        request = draft.request
        if request.previous_response_id is not None:
            items = await self._history(ctx.tenant_id, request.previous_response_id)
            messages = chat_messages(items)
            return History(messages=messages, items=len(messages))
        if request.conversation is None:
            return None
        if self.conversation_memory is None:
            raise InvalidRequest("conversations are not available on this server", param="conversation")
        return await self.conversation_memory.history(ctx=ctx, request=request, conversation_id=request.conversation,
                                         end_user=end_user, end_user_header=end_user_header,
                                         context_length=context_length, tokenizer=tokenizer)

    async def _append_to_conversation(self, tenant_id: str, draft: Draft, response: JSON) -> None:
        if self.conversation_memory is not None:
            output = shown(response, include_results=draft.request.include_results)["output"]
            await self.conversation_memory.remember(tenant_id=tenant_id, request=draft.request, output=output)

    async def _history(self, tenant_id: str, previous_id: str | None) -> list[JSON]:
        """The conversation before this request: every stored response of the chain ending at ``previous_id``,
        oldest first, its input items then its output items. A missing link ends the walk (deleted)."""
        if previous_id is None:
            return []
        row: ResponseRow | None = await self._row(tenant_id, previous_id, "previous_response_id")
        turns: list[list[JSON]] = []
        while row is not None:
            record = await self._open(row, OUTPUT_KIND)
            turns.append([*await self._open(row, INPUT_KIND), *record["response"]["output"]])
            previous = row.previous_response_id
            row = None if previous is None else await self.store.get(tenant_id=tenant_id, response_id=previous)
        return [item for turn in reversed(turns) for item in turn]

    # --- retrieve, delete, input items ------------------------------------------------------------------------
    async def get(self, *, tenant_id: str, response_id: str, include: list[str]) -> JSON:
        for value in include:
            if value != INCLUDE_RESULTS:
                raise InvalidRequest(f"include: '{value}' is not supported here; only '{INCLUDE_RESULTS}' is",
                                     param="include")
        record = await self._open(await self._row(tenant_id, response_id), OUTPUT_KIND)
        response: JSON = record["response"]
        return shown(response, include_results=bool(record.get("include_results")) or INCLUDE_RESULTS in include)

    async def delete(self, *, tenant_id: str, response_id: str) -> JSON:
        if not await self.store.delete(tenant_id=tenant_id, response_id=response_id):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(self, *, tenant_id: str, response_id: str, after: str | None, limit: int,
                          order: Literal["asc", "desc"]) -> JSON:
        """The response's own input items (those its request sent; earlier turns are their own responses')."""
        items: list[JSON] = await self._open(await self._row(tenant_id, response_id), INPUT_KIND)
        if order == "desc":
            items.reverse()
        if after is not None:
            at = next((i for i, item in enumerate(items) if item["id"] == after), None)
            if at is None:
                raise InvalidRequest(f"after: no input item '{after}' in this response", param="after")
            items = items[at + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    # --- erasure, export, key rotation ------------------------------------------------------------------------
    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Delete every stored response of one end user (the responses their requests named them in)."""
        return await self.store.delete_end_user(tenant_id=tenant_id, end_user=end_user)

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> list[JSON]:
        """Every stored response of one end user, oldest first, with its input items."""
        out = []
        for row in await self.store.end_user_rows(tenant_id=tenant_id, end_user=end_user):
            record = await self._open(row, OUTPUT_KIND)
            out.append({**record["response"], "input": await self._open(row, INPUT_KIND)})
        return out

    export_name = storage_kind = "responses"

    async def stored_bytes(self, *, tenant_id: str) -> int:
        return await self.store.stored_bytes(tenant_id=tenant_id)

    async def export_items(self, *, tenant_id: str) -> AsyncIterator[JSON]:
        """Every stored response of the tenant, decrypted: the response object and its own input items."""
        async for page in self.store.pages(tenant_id=tenant_id):
            for row in page:
                record = await self._open(row, OUTPUT_KIND)
                yield {"id": row.id, "previous_response_id": row.previous_response_id,
                       "input": await self._open(row, INPUT_KIND), "response": record["response"]}

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)

    async def conversation_response_ids(self, *, tenant_id: str, conversation_id: str) -> list[str]:
        return await self.store.conversation_ids(tenant_id=tenant_id, conversation_id=conversation_id)

    async def forget_conversation(self, *, tenant_id: str, conversation_id: str) -> int:
        """Delete every response made in the conversation (its session ended)."""
        return await self.store.delete_conversation(tenant_id=tenant_id, conversation_id=conversation_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal every stored response of the tenant under its active data key (after a rotation)."""
        moved = 0
        async for page in self.store.pages(tenant_id=tenant_id):
            for row in page:
                fresh_in = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=INPUT_KIND, record_id=row.id,
                                                          ciphertext=row.sealed_input)
                fresh_out = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=OUTPUT_KIND,
                                                           record_id=row.id, ciphertext=row.sealed_output)
                if fresh_in is None and fresh_out is None:
                    continue
                await self.store.replace_sealed(tenant_id=tenant_id, response_id=row.id,
                                                sealed_input=fresh_in or row.sealed_input,
                                                sealed_output=fresh_out or row.sealed_output)
                moved += (fresh_in is not None) + (fresh_out is not None)
        return moved


class _Answer:
    """The model's streamed answer as it arrives: the text, how it ended, the usage."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage = _usage(None)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: JSON) -> str:
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        delta = ""
        for choice in chunk.get("choices") or ():
            delta += (choice.get("delta") or {}).get("content") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if delta:
            self.parts.append(delta)
        return delta


def _joined(first: str | None, second: str | None) -> str | None:
    """The prompt's instructions, then the request's own."""
    return "\n\n".join(t for t in (first, second) if t) or None


def _usage(body: JSON | None) -> JSON:
    body = body or {}
    return objects.usage(int(body.get("prompt_tokens") or 0), int(body.get("completion_tokens") or 0))


def _failed(draft: Draft, emit: objects.EventWriter, error: TenantLMError) -> list[bytes]:
    """How a stream the model could not finish ends: an ``error`` event, then ``response.failed``."""
    code = "rate_limit_exceeded" if isinstance(error, RateLimited) else "server_error"
    failed = draft.response("failed", [], error={"code": code, "message": error.message})
    return [emit("error", code=error.code, message=error.message, param=error.param),
            emit("response.failed", response=failed)]
