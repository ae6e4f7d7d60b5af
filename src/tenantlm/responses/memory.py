"""A response's conversation (the Conversations API's): its history, fitted by the tenant's memory policy, and the
new items added to it once the answer is complete.

The conversation is checked like any id: the tenant's, and the request's end user's when it belongs to one (a 404
otherwise, as for a missing id); it needs ``conversations:write``, since the response is added to it. The history's
budget is what the model's context leaves after the instructions, the input and the answer's room (half of it when
``file_search`` runs, the other half for what the search finds). Under the ``summary`` policy the older turns are
summarised by the request's own model, as the tenant and its end user (admitted, scheduled and metered like the
answer). With ``store: false`` the conversation is read and nothing is written.
"""

from __future__ import annotations

from typing import Any

from tenantlm.conversations.history import SUMMARY_INSTRUCTIONS, SUMMARY_TOKENS, History, fit_history, transcript
from tenantlm.conversations.policy import memory_policy
from tenantlm.conversations.service import ConversationsService, Summarise
from tenantlm.inference.service import InferenceService
from tenantlm.responses.context import ANSWER_ROOM, build_messages, chat_messages, token_counter
from tenantlm.responses.models import ResponseRequest
from tenantlm.tenancy import access
from tenantlm.tenancy.models import Permission, TenantContext
from tenantlm.tokens import estimate_prompt_tokens

JSON = dict[str, Any]


class ConversationMemory:
    def __init__(self, *, conversations: ConversationsService, inference: InferenceService, endpoint: str) -> None:
        self.conversations = conversations
        self.inference = inference
        self.endpoint = endpoint

    async def history(self, *, ctx: TenantContext, request: ResponseRequest, conversation_id: str,
                      end_user: str | None, end_user_header: str | None, context_length: int,
                      tokenizer: str | None) -> History:
        access.data_plane(ctx, Permission.CONVERSATIONS_WRITE)
        conversation = await self.conversations.open(ctx=ctx, conversation_id=conversation_id, end_user=end_user,
                                                     param="conversation")
        count = token_counter(tokenizer)
        own = estimate_prompt_tokens(build_messages(request.instructions, (), chat_messages(request.input)), count)
        budget = context_length - (request.max_output_tokens or ANSWER_ROOM) - own
        if request.search:
            budget //= 2
        return await fit_history(conversations=self.conversations, tenant_id=ctx.tenant_id,
                                 conversation=conversation, memory=memory_policy(ctx.tenant.settings),
                                 budget=budget, count=count,
                                 summarise=self._summariser(ctx, request, end_user_header, context_length, tokenizer))

    def _summariser(self, ctx: TenantContext, request: ResponseRequest, end_user_header: str | None,
                    context_length: int, tokenizer: str | None) -> Summarise:
        count = token_counter(tokenizer)

        async def summarise(previous: str | None, items: list[JSON]) -> str:
            system = {"role": "system", "content": SUMMARY_INSTRUCTIONS}
            room = context_length - SUMMARY_TOKENS - estimate_prompt_tokens(
                [system, {"role": "user", "content": ""}], count)
            text = transcript(previous, items, budget=room, count=count)
            body: JSON = {"model": request.model, "messages": [system, {"role": "user", "content": text}],
                          "max_tokens": SUMMARY_TOKENS, "temperature": 0}
            body.update({k: v for k, v in (("user", request.user), ("safety_identifier", request.safety_identifier))
                         if v is not None})
            reply = await self.inference.chat(ctx=ctx, body=body, end_user_header=end_user_header,
                                              endpoint=self.endpoint)
            choice = (reply.body.get("choices") or [{}])[0]
            return str((choice.get("message") or {}).get("content") or previous or "").strip()
        return summarise

    async def remember(self, *, tenant_id: str, request: ResponseRequest, output: list[JSON]) -> None:
        """Add the input and the output to the conversation (unless it was erased meanwhile, or ``store: false``)."""
        if request.conversation is None or not request.store:
            return
        await self.conversations.append(tenant_id=tenant_id, conversation_id=request.conversation,
                                        items=[*request.input, *output])
