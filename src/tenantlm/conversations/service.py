"""The Conversations API per tenant, and conversation memory for the Responses API.

Scope: a conversation belongs to its tenant (every store call takes the tenant, and Postgres RLS holds it too) and,
when one was named at creation (``X-TenantLM-User`` or ``safety_identifier``), to that end user: it is then visible
only to requests naming the same end user, or made with the tenant's admin key. To everyone else it answers exactly
as a missing conversation (404), as another tenant's does.

Content (items, metadata, the running summary) is sealed with the tenant's data key, each record bound to its
conversation (associated data: tenant, kind and ``<conversation id>/<item id>``).

Ending a conversation (``POST /v1/conversations/{id}/end``, or idle past the tenant's ``session_ttl_minutes``) erases
it, its items, the responses made in it, and calls every :class:`SessionContent` hook so that memories written during
it go too. The retention sweep erases conversations older than ``conversation_retention_days`` the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from tenantlm.conversations import policy
from tenantlm.conversations.store import ConversationRow, ConversationStore, ItemRow, NewItem
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.knowledge.vector_stores import check_metadata
from tenantlm.responses.models import new_id, parse_input
from tenantlm.tenancy.end_users import pick_end_user
from tenantlm.tenancy.models import Role, Tenant, TenantContext

JSON = dict[str, Any]
METADATA_KIND, ITEM_KIND, SUMMARY_KIND = "conversation_metadata", "conversation_item", "conversation_summary"
MAX_ITEMS_PER_CALL = 20  # as OpenAI: items on create, and on each items.create
HISTORY_PAGE = 50

# Writes a summary of older items: (the previous summary, the items fallen out of the window since) -> the new one.
Summarise = Callable[[str | None, list[JSON]], Awaitable[str]]


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


class SessionContent(Protocol):
    """Content written during a conversation that must go when its session ends (long-term memories)."""

    async def session_ended(self, *, tenant_id: str, conversation_id: str) -> None: ...


class ConversationResponses(Protocol):
    """The stored responses made in a conversation."""

    async def forget_conversation(self, *, tenant_id: str, conversation_id: str) -> int: ...


class Tenants(Protocol):
    async def list_tenants(self, *, limit: int = 100, after: str | None = None) -> list[Tenant]: ...


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation a request may use (its scope checked)."""

    row: ConversationRow
    metadata: dict[str, str]

    def wire(self) -> JSON:
        return {"id": self.row.id, "object": "conversation", "created_at": int(self.row.created_at),
                "metadata": self.metadata}


def _body(body: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key)


def _items(value: object, *, required: bool) -> list[JSON]:
    if value is None and not required:
        return []
    if isinstance(value, list) and not value and not required:
        return []
    if isinstance(value, list) and len(value) > MAX_ITEMS_PER_CALL:
        raise InvalidRequest(f"Invalid 'items': expected at most {MAX_ITEMS_PER_CALL} items.", param="items")
    try:
        return parse_input(value if value is not None else None)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("'input", "'items"),
                             param=(exc.param or "input").replace("input", "items", 1)) from None


def _page(items: list[JSON], has_more: bool) -> JSON:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}


def _missing(conversation_id: str) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")


class ConversationsService:
    def __init__(self, *, store: ConversationStore, sealer: Sealer, responses: ConversationResponses | None = None,
                 session_hooks: Sequence[SessionContent] = (), tenants: Tenants | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sealer = sealer
        self.responses = responses
        self.session_hooks = list(session_hooks)
        self.tenants = tenants
        self.clock = clock

    # --- sealing ----------------------------------------------------------------------------------------------
    async def _seal(self, tenant_id: str, kind: str, record_id: str, value: Any) -> bytes:
        return await self.sealer.seal(tenant_id=tenant_id, kind=kind, record_id=record_id,
                                      plaintext=orjson.dumps(value))

    async def _open(self, tenant_id: str, kind: str, record_id: str, sealed: bytes) -> Any:
        return orjson.loads(await self.sealer.open(tenant_id=tenant_id, kind=kind, record_id=record_id,
                                                   ciphertext=sealed))

    async def _new_items(self, tenant_id: str, conversation_id: str, items: Sequence[JSON]) -> list[NewItem]:
        return [NewItem(item["id"], await self._seal(tenant_id, ITEM_KIND, f"{conversation_id}/{item['id']}", item))
                for item in items]

    async def _item(self, tenant_id: str, row: ItemRow) -> JSON:
        item: JSON = await self._open(tenant_id, ITEM_KIND, f"{row.conversation_id}/{row.id}", row.sealed_item)
        return item

    # --- scope ------------------------------------------------------------------------------------------------
    async def open(self, *, ctx: TenantContext, conversation_id: str, end_user: str | None,
                   param: str = "conversation_id") -> Conversation:
        """The conversation if this request may see it; otherwise the same 404 as a missing one."""
        row = await self.store.get(tenant_id=ctx.tenant_id, conversation_id=conversation_id)
        if row is None or not _visible(ctx, row, end_user):
            raise NotFound(f"Conversation with id '{conversation_id}' not found.", param=param)
        metadata = await self._open(ctx.tenant_id, METADATA_KIND, row.id, row.sealed_metadata)
        return Conversation(row, metadata)

    # --- conversations ----------------------------------------------------------------------------------------
    async def create(self, *, ctx: TenantContext, body: Mapping[str, Any], end_user_header: str | None) -> JSON:
        _body(body, ("items", "metadata", "safety_identifier"))
        items = _items(body.get("items"), required=False)
        metadata = check_metadata(body.get("metadata"))
        end_user = pick_end_user(header=end_user_header, body_user=None,
                                 body_safety_id=body.get("safety_identifier"))
        now, conversation_id = self.clock(), new_id("conv_")
        row = ConversationRow(tenant_id=ctx.tenant_id, id=conversation_id, end_user=end_user, created_at=now,
                              last_active_at=now, next_position=len(items),
                              sealed_metadata=await self._seal(ctx.tenant_id, METADATA_KIND, conversation_id,
                                                               metadata))
        await self.store.insert(tenant_id=ctx.tenant_id, row=row,
                                items=await self._new_items(ctx.tenant_id, conversation_id, items))
        return Conversation(row, metadata).wire()

    async def get(self, *, ctx: TenantContext, conversation_id: str, end_user_header: str | None) -> JSON:
        return (await self._scoped(ctx, conversation_id, end_user_header)).wire()

    async def update(self, *, ctx: TenantContext, conversation_id: str, body: Mapping[str, Any],
                     end_user_header: str | None) -> JSON:
        _body(body, ("metadata",))
        if "metadata" not in body:
            raise InvalidRequest("Missing required parameter: 'metadata'.", param="metadata")
        metadata = check_metadata(body["metadata"])
        conversation = await self._scoped(ctx, conversation_id, end_user_header)
        await self.store.set_metadata(tenant_id=ctx.tenant_id, conversation_id=conversation_id,
                                      sealed_metadata=await self._seal(ctx.tenant_id, METADATA_KIND,
                                                                       conversation_id, metadata))
        return Conversation(conversation.row, metadata).wire()

    async def delete(self, *, ctx: TenantContext, conversation_id: str, end_user_header: str | None) -> JSON:
        """The conversation and its items (the responses made in it stay, as OpenAI keeps them)."""
        await self._scoped(ctx, conversation_id, end_user_header)
        if not await self.store.delete(tenant_id=ctx.tenant_id, conversation_id=conversation_id):
            raise _missing(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def end(self, *, ctx: TenantContext, conversation_id: str, end_user_header: str | None) -> JSON:
        """End the session: erase the conversation, its items, its responses and what was remembered during it."""
        await self._scoped(ctx, conversation_id, end_user_header)
        await self.erase(tenant_id=ctx.tenant_id, conversation_id=conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def erase(self, *, tenant_id: str, conversation_id: str) -> None:
        """Everything of one conversation (no scope check: the callers are the session end, the sweeps and
        erasure)."""
        for hook in self.session_hooks:
            await hook.session_ended(tenant_id=tenant_id, conversation_id=conversation_id)
        if self.responses is not None:
            await self.responses.forget_conversation(tenant_id=tenant_id, conversation_id=conversation_id)
        await self.store.delete(tenant_id=tenant_id, conversation_id=conversation_id)

    async def _scoped(self, ctx: TenantContext, conversation_id: str, end_user_header: str | None) -> Conversation:
        end_user = pick_end_user(header=end_user_header, body_user=None, body_safety_id=None)
        return await self.open(ctx=ctx, conversation_id=conversation_id, end_user=end_user)

    # --- items ------------------------------------------------------------------------------------------------
    async def add_items(self, *, ctx: TenantContext, conversation_id: str, body: Mapping[str, Any],
                        end_user_header: str | None) -> JSON:
        _body(body, ("items",))
        items = _items(body.get("items"), required=True)
        await self._scoped(ctx, conversation_id, end_user_header)
        if not await self.append(tenant_id=ctx.tenant_id, conversation_id=conversation_id, items=items):
            raise _missing(conversation_id)
        return _page(items, False)

    async def append(self, *, tenant_id: str, conversation_id: str, items: Sequence[JSON]) -> bool:
        """Add items (their ids given) after the conversation's last; False when it was erased meanwhile."""
        sealed = await self._new_items(tenant_id, conversation_id, items)
        return await self.store.append(tenant_id=tenant_id, conversation_id=conversation_id, items=sealed,
                                       now=self.clock())

    async def list_items(self, *, ctx: TenantContext, conversation_id: str, end_user_header: str | None,
                         after: str | None, limit: int, order: Literal["asc", "desc"]) -> JSON:
        await self._scoped(ctx, conversation_id, end_user_header)
        position = None
        if after is not None:
            found = await self.store.get_item(tenant_id=ctx.tenant_id, conversation_id=conversation_id, item_id=after)
            if found is None:
                raise InvalidRequest(f"after: no item '{after}' in this conversation", param="after")
            position = found.position
        rows = await self.store.list_items(tenant_id=ctx.tenant_id, conversation_id=conversation_id, order=order,
                                           after_position=position, limit=limit + 1)
        return _page([await self._item(ctx.tenant_id, r) for r in rows[:limit]], len(rows) > limit)

    async def get_item(self, *, ctx: TenantContext, conversation_id: str, item_id: str,
                       end_user_header: str | None) -> JSON:
        await self._scoped(ctx, conversation_id, end_user_header)
        row = await self.store.get_item(tenant_id=ctx.tenant_id, conversation_id=conversation_id, item_id=item_id)
        if row is None:
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
        return await self._item(ctx.tenant_id, row)

    async def delete_item(self, *, ctx: TenantContext, conversation_id: str, item_id: str,
                          end_user_header: str | None) -> JSON:
        conversation = await self._scoped(ctx, conversation_id, end_user_header)
        if not await self.store.delete_item(tenant_id=ctx.tenant_id, conversation_id=conversation_id,
                                            item_id=item_id):
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
        return conversation.wire()

    # --- history for the Responses API ------------------------------------------------------------------------
    async def recent_items(self, *, tenant_id: str, conversation: Conversation) -> AsyncIterator[ItemRow]:
        """The conversation's items, newest first (read a page at a time)."""
        before: int | None = None
        while True:
            rows = await self.store.list_items(tenant_id=tenant_id, conversation_id=conversation.row.id,
                                               order="desc", after_position=before, limit=HISTORY_PAGE)
            for row in rows:
                yield row
            if len(rows) < HISTORY_PAGE:
                return
            before = rows[-1].position

    async def open_item(self, *, tenant_id: str, row: ItemRow) -> JSON:
        return await self._item(tenant_id, row)

    async def items_between(self, *, tenant_id: str, conversation: Conversation, after: int, before: int
                            ) -> list[JSON]:
        """The items at positions strictly between ``after`` and ``before``, oldest first."""
        out: list[JSON] = []
        async for page in self.store.all_items(tenant_id=tenant_id, conversation_id=conversation.row.id,
                                               after=after):
            for row in page:
                if row.position >= before:
                    return out
                out.append(await self._item(tenant_id, row))
        return out

    async def summary(self, *, tenant_id: str, conversation: Conversation) -> str | None:
        row = conversation.row
        if row.sealed_summary is None:
            return None
        text: str = await self._open(tenant_id, SUMMARY_KIND, row.id, row.sealed_summary)
        return text

    async def save_summary(self, *, tenant_id: str, conversation_id: str, text: str, through: int) -> None:
        await self.store.set_summary(tenant_id=tenant_id, conversation_id=conversation_id,
                                     sealed_summary=await self._seal(tenant_id, SUMMARY_KIND, conversation_id, text),
                                     through=through)

    # --- retention, sessions ----------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Erase every conversation past its tenant's retention or idle past its session TTL."""
        if self.tenants is None:
            return 0
        erased, after = 0, None
        while True:
            tenants = await self.tenants.list_tenants(limit=100, after=after)
            for tenant in tenants:
                erased += await self.sweep_tenant(tenant=tenant)
            if len(tenants) < 100:
                return erased
            after = tenants[-1].id

    async def sweep_tenant(self, *, tenant: Tenant) -> int:
        days, ttl = policy.retention_days(tenant.settings), policy.session_ttl_minutes(tenant.settings)
        if not days and not ttl:
            return 0
        now, erased = self.clock(), 0
        while True:
            ids = await self.store.expired(tenant_id=tenant.id, created_before=now - days * 86_400 if days else None,
                                           idle_before=now - ttl * 60 if ttl else None)
            for conversation_id in ids:
                await self.erase(tenant_id=tenant.id, conversation_id=conversation_id)
            erased += len(ids)
            if not ids:
                return erased

    # --- end users, tenant erasure, key rotation --------------------------------------------------------------
    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int:
        """Erase every conversation of one end user (as a session end does); the count erased."""
        ids = await self.store.ids_of_end_user(tenant_id=tenant_id, end_user=end_user)
        for conversation_id in ids:
            await self.erase(tenant_id=tenant_id, conversation_id=conversation_id)
        return len(ids)

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> list[JSON]:
        """Every conversation of one end user with its items, oldest first (for a GDPR export)."""
        out = []
        for conversation_id in await self.store.ids_of_end_user(tenant_id=tenant_id, end_user=end_user):
            row = await self.store.get(tenant_id=tenant_id, conversation_id=conversation_id)
            if row is not None:
                out.append(await self._exported(tenant_id, row))
        return out

    async def export(self, *, tenant_id: str) -> AsyncIterator[JSON]:
        """Every conversation of the tenant, each with its end user and its items (the tenant's GDPR export)."""
        async for page in self.store.conversation_pages(tenant_id=tenant_id):
            for row in page:
                yield await self._exported(tenant_id, row)

    async def _exported(self, tenant_id: str, row: ConversationRow) -> JSON:
        metadata = await self._open(tenant_id, METADATA_KIND, row.id, row.sealed_metadata)
        items = [await self._item(tenant_id, r)
                 async for page in self.store.all_items(tenant_id=tenant_id, conversation_id=row.id) for r in page]
        summary = None if row.sealed_summary is None else await self._open(tenant_id, SUMMARY_KIND, row.id,
                                                                            row.sealed_summary)
        return {**Conversation(row, metadata).wire(), "end_user": row.end_user, "items": items, "summary": summary}

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal every conversation record of the tenant under its active data key (after a rotation)."""
        moved = 0
        async for page in self.store.conversation_pages(tenant_id=tenant_id):
            for row in page:
                moved += await self._rewrap_conversation(tenant_id, row)
        async for items in self.store.item_pages(tenant_id=tenant_id):
            for item in items:
                fresh = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=ITEM_KIND,
                                                        record_id=f"{item.conversation_id}/{item.id}",
                                                        ciphertext=item.sealed_item)
                if fresh is not None:
                    await self.store.replace_item_sealed(tenant_id=tenant_id, item_id=item.id, sealed_item=fresh)
                    moved += 1
        return moved

    async def _rewrap_conversation(self, tenant_id: str, row: ConversationRow) -> int:
        metadata = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=METADATA_KIND, record_id=row.id,
                                                   ciphertext=row.sealed_metadata)
        summary = None if row.sealed_summary is None else await self.sealer.rewrap_record(
            tenant_id=tenant_id, kind=SUMMARY_KIND, record_id=row.id, ciphertext=row.sealed_summary)
        if metadata is None and summary is None:
            return 0
        await self.store.replace_conversation_sealed(tenant_id=tenant_id, conversation_id=row.id,
                                                     sealed_metadata=metadata or row.sealed_metadata,
                                                     sealed_summary=summary or row.sealed_summary)
        return (metadata is not None) + (summary is not None)


def _visible(ctx: TenantContext, row: ConversationRow, end_user: str | None) -> bool:
    """A conversation of no end user is the tenant's; one of an end user is that end user's (and the admin's)."""
    return row.end_user is None or row.end_user == end_user or ctx.role == Role.ADMIN

