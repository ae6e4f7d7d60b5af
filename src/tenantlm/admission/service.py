"""AdmissionService: what the request path calls around an upstream call.

    decision = await admission.admit_or_raise(AdmissionRequest(
        tenant_id=..., request_id=..., subjects=(key, user, tenant), tokens=estimate + max_tokens,
        cost_usd=estimate))                         # or 429 rate_limit_exceeded / insufficient_quota, with headers
    try:
        ... stream; every N tokens: r = await admission.settle(ticket, tokens=so_far, cost_usd=c, final=False)
            and end the stream when r.budget_exhausted ...
        await admission.settle(ticket, tokens=total, cost_usd=cost, final=True)
    finally:
        await admission.release(ticket)             # a no-op after the final settle; frees the slot otherwise

The service only adds the clock (so the store stays testable with an injected ``now``) and the cheap estimators.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from tenantlm.admission.models import AdmissionRequest, Decision, Level, SettleResult, Ticket
from tenantlm.admission.port import LimitStore

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators around each chat message (OpenAI's cookbook counts 3-4)
REPLY_PRIMING_TOKENS = 3  # the assistant turn the model is primed with
MEDIA_TOKENS = 765  # an image/audio/file part: its base64 length says nothing about its tokens; settle corrects
_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "file", "input_file"})
_NOT_TEXT_KEYS = frozenset({"role", "type"})


def text_tokens(text: str) -> int:
    """About four bytes of UTF-8 per token (English runs ~4 characters per token; CJK ~1 character, 3 bytes)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return math.ceil(size / 4)


def estimate_prompt_tokens(payload: object) -> int:
    """A cheap, tokenizer-free estimate of a prompt's tokens, for the reservation (settle replaces it).

    Accepts chat ``messages`` / Responses ``input`` items (lists of objects: text of every field but role/type,
    plus a per-message overhead), a string, a list of strings, token ids (``[1, 2]``) or lists of them.
    """
    if isinstance(payload, list | tuple) and any(isinstance(m, dict | Mapping) for m in payload):
        messages = sum(MESSAGE_OVERHEAD_TOKENS + _walk(m) for m in payload)
        return messages + REPLY_PRIMING_TOKENS
    return _walk(payload)


def _walk(value: object) -> int:
    # Concrete types first: parsed JSON holds only these, and isinstance against an ABC is slow on the hot path.
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, dict):
        if value.get("type") in _MEDIA_TYPES:
            return MEDIA_TOKENS
        return sum(_walk(v) for k, v in value.items() if k not in _NOT_TEXT_KEYS)
    if isinstance(value, list):
        return sum(_walk(v) for v in value)
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return 1  # a token id
    if isinstance(value, Mapping):
        if value.get("type") in _MEDIA_TYPES:
            return MEDIA_TOKENS
        return sum(_walk(v) for k, v in value.items() if k not in _NOT_TEXT_KEYS)
    if isinstance(value, list | tuple):
        return sum(_walk(v) for v in value)
    return 0


def reservation_tokens(*, prompt_tokens: int, max_tokens: int | None, default_max_tokens: int) -> int:
    """What to reserve: the prompt estimate plus ``max_tokens``, or the plan's default when the request names none
    (a request is never rejected for leaving it out)."""
    return prompt_tokens + (default_max_tokens if max_tokens is None else max_tokens)


class AdmissionService:
    """Thin layer over a LimitStore that supplies ``now`` from the injected clock."""

    def __init__(self, store: LimitStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    async def admit_or_raise(self, req: AdmissionRequest) -> Decision:
        """The admitted Decision, or raises its 429 (``RateLimited`` / ``QuotaExceeded``) with the headers."""
        decision = await self.store.admit(req, now=self._clock())
        if not decision.admitted:
            raise decision.error()
        return decision

    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: float, final: bool) -> SettleResult:
        return await self.store.settle(ticket, tokens=tokens, cost_usd=cost_usd, final=final, now=self._clock())

    async def release(self, ticket: Ticket) -> None:
        await self.store.release(ticket, now=self._clock())

    async def seed_usage(self, *, tenant_id: str, level: Level, subject_id: str, period: str, tokens: int,
                         cost_usd: float) -> None:  # fmt: skip
        await self.store.seed_usage(tenant_id=tenant_id, level=level, subject_id=subject_id, period=period,
                                    tokens=tokens, cost_usd=cost_usd)  # fmt: skip
