"""A conversation's history fitted to a model's context by the tenant's memory policy.

``window``: the most recent messages whose tokens fit the budget, whole messages only, starting at a user message
(a turn's start), oldest first. Older items are not sent.

``summary``: the same window, within a budget that leaves room for a summary, plus a summary of every older item. The
summary is kept with the conversation (sealed) with the position of the last item it covers; when items have fallen
out of the window since, the tenant's model writes a new summary from the previous one and those items (metered as
the tenant's request), so each item is summarised once. What the summary prompt cannot hold (a very long stretch
fallen out at once) is summarised from its most recent part.

Non-message items (a ``file_search_call``) are kept in the conversation but never sent as history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantlm.conversations.policy import MemoryPolicy
from tenantlm.conversations.service import Conversation, ConversationsService, Summarise
from tenantlm.conversations.store import ItemRow
from tenantlm.responses.context import chat_messages
from tenantlm.tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter

JSON = dict[str, Any]
SUMMARY_TOKENS = 160  # the most a summary may take (the summary request's max_tokens)
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SUMMARY_INSTRUCTIONS = ("Summarise the conversation below for an assistant that will continue it. Keep every fact "
                        "the user stated (names, numbers, preferences, decisions) and what was asked and answered. "
                        "Write at most a short paragraph.")


@dataclass(slots=True)
class History:
    """What is sent to the model before the request's own input."""

    messages: list[JSON] = field(default_factory=list)  # chat messages, oldest first
    items: int = 0  # conversation items sent (x-tenantlm-history-items)
    summary: str | None = None


def message_cost(message: JSON, count: TokenCounter) -> int:
    return MESSAGE_OVERHEAD_TOKENS + count(str(message["content"]))


async def fit_history(*, conversations: ConversationsService, tenant_id: str, conversation: Conversation,
                      memory: MemoryPolicy, budget: int, count: TokenCounter,
                      summarise: Summarise) -> History:
    summarising = memory.policy == "summary"
    if summarising:
        budget -= SUMMARY_TOKENS + MESSAGE_OVERHEAD_TOKENS + count(SUMMARY_PREFIX)
    floor = conversation.row.summary_through if summarising else -1
    window, first = await _window(conversations, tenant_id, conversation, max(budget, 0), count, floor)
    history = History(messages=chat_messages(window), items=len(window))
    if not summarising:
        return history
    history.summary = await conversations.summary(tenant_id=tenant_id, conversation=conversation)
    if first - 1 > floor:  # items fell out of the window since the last summary
        older = await conversations.items_between(tenant_id=tenant_id, conversation=conversation, after=floor,
                                                  before=first)
        history.summary = await summarise(history.summary, older)
        await conversations.save_summary(tenant_id=tenant_id, conversation_id=conversation.row.id,
                                         text=history.summary, through=first - 1)
    return history


async def _window(conversations: ConversationsService, tenant_id: str, conversation: Conversation, budget: int,
                  count: TokenCounter, floor: int) -> tuple[list[JSON], int]:
    """The newest messages within ``budget`` above position ``floor``, oldest first, starting at a user message;
    and the position of the first one sent (the next position when none is)."""
    picked: list[tuple[ItemRow, JSON]] = []
    left = budget
    async for row in conversations.recent_items(tenant_id=tenant_id, conversation=conversation):
        if row.position <= floor:
            break
        item = await conversations.open_item(tenant_id=tenant_id, row=row)
        if item.get("type") != "message":
            continue
        cost = message_cost(chat_messages([item])[0], count)
        if cost > left:
            break
        picked.append((row, item))
        left -= cost
    picked.reverse()
    while picked and picked[0][1].get("role") != "user":
        picked.pop(0)
    first = picked[0][0].position if picked else conversation.row.next_position
    return [item for _, item in picked], first


def transcript(previous: str | None, items: Sequence[JSON], *, budget: int, count: TokenCounter) -> str:
    """The summary request's text: the previous summary, then as many of the newest ``items`` as fit ``budget``
    tokens, oldest first, one ``role: text`` line each."""
    head = f"{SUMMARY_PREFIX}{previous}\n\n" if previous else ""
    left = budget - count(head + "Conversation:\n")
    lines: list[str] = []
    for message in reversed(chat_messages(items)):
        line = f"{message['role']}: {message['content']}"
        cost = count(line + "\n")
        if cost > left:
            break
        lines.append(line)
        left -= cost
    return head + "Conversation:\n" + "\n".join(reversed(lines))
