"""Prompt token counts before a model has seen the prompt: the one estimator the server uses, for admission's
reservation (``inference.gate``) and for billing an attempt whose upstream reported no usage (``Passage``).

A catalog model may name its tokenizer (``tokenizer:``, a Hugging Face ``tokenizer.json``); its text is then counted
with it. Otherwise text counts as one token per four bytes of UTF-8 (English runs at about four characters a token;
CJK at about one character, three bytes). Around the text, a chat request costs a few tokens per message for roles
and separators, and media parts a fixed amount (their base64 length says nothing about their tokens). The upstream's
own count, when it sends one, always replaces the estimate when the request is settled and billed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from tenantlm.errors import ServiceUnavailable

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators around each chat message (OpenAI's cookbook counts 3-4)
REPLY_PRIMING_TOKENS = 3  # the assistant turn the model is primed with
MEDIA_TOKENS = 765  # an image/audio/file part
_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "file", "input_file"})
_NOT_TEXT_KEYS = frozenset({"role", "type"})

TokenCounter = Callable[[str], int]
"""Tokens in a piece of text."""


def bytes_estimate(text: str) -> int:
    """About four bytes of UTF-8 per token."""
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return math.ceil(size / 4)


@functools.lru_cache(maxsize=32)
def tokenizer_counter(path: str) -> TokenCounter:
    """A counter backed by the ``tokenizer.json`` at ``path`` (loaded once per path)."""
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(path)
        tokenizer.no_padding()  # a tokenizer.json may pad or cut every text to a fixed length: count, don't shape
        tokenizer.no_truncation()
    except Exception as exc:  # a missing package, an unreadable file, or tokenizers' own (bare) Exception
        raise ServiceUnavailable(f"the tokenizer {path!r} cannot be loaded ({type(exc).__name__})") from exc

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def counter_for(tokenizer: str | None) -> TokenCounter:
    """The counter a catalog model's ``tokenizer`` setting names, or the four-bytes estimate."""
    return bytes_estimate if tokenizer is None else tokenizer_counter(tokenizer)


def estimate_prompt_tokens(payload: object, count: TokenCounter = bytes_estimate) -> int:
    """The prompt tokens of chat ``messages`` / Responses ``input`` items (lists of objects: the text of every field
    but role/type, plus the per-message overhead), a string, a list of strings, token ids (``[1, 2]``) or lists of
    them."""
    if isinstance(payload, list | tuple) and any(isinstance(m, dict | Mapping) for m in payload):
        return sum(MESSAGE_OVERHEAD_TOKENS + _walk(m, count) for m in payload) + REPLY_PRIMING_TOKENS
    return _walk(payload, count)


def _walk(value: Any, count: TokenCounter) -> int:
    if isinstance(value, str):
        return count(value)
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return 1  # a token id
    if isinstance(value, Mapping):
        if value.get("type") in _MEDIA_TYPES:
            return MEDIA_TOKENS
        return sum(_walk(v, count) for k, v in value.items() if k not in _NOT_TEXT_KEYS)
    if isinstance(value, list | tuple):
        return sum(_walk(v, count) for v in value)
    return 0
