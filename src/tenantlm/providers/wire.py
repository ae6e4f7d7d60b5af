"""OpenAI wire helpers for the adapters that build response bodies themselves (fake, local).

Only reading the few request fields those adapters act on, and writing ``chat.completion`` /
``chat.completion.chunk`` / embedding bodies. Upstream pass-through adapters never rebuild bodies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantlm.errors import InvalidRequest, UnsupportedFeature
from tenantlm.providers.base import JSON, Usage

MAX_STOP_SEQUENCES = 4


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def messages_of(request: JSON) -> list[JSON]:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("each message must be an object", param="messages")
    return messages


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, ``None`` or an array of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    raise InvalidRequest("message content must be a string or an array of content parts", param="messages")


def _part_text(part: Any) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    if isinstance(part, dict) and isinstance(part.get("type"), str):
        raise UnsupportedFeature(f"content parts of type {part['type']!r} are not supported by this model",
                                 param="messages")
    raise InvalidRequest("invalid content part", param="messages")


def last_user_text(messages: Sequence[JSON]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def max_output_tokens(request: JSON) -> int | None:
    """``max_completion_tokens`` (newer name) wins over ``max_tokens``; ``None`` means "as many as fit"."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
        return value
    return None


def stop_sequences(request: JSON) -> list[str]:
    stop = request.get("stop")
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    if len(items) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"'stop' accepts at most {MAX_STOP_SEQUENCES} sequences", param="stop")
    return [s for s in items if s]


def include_usage(request: JSON) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def number_param(request: JSON, name: str, default: float, low: float, high: float) -> float:
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low:g} and {high:g}", param=name)
    return float(value)


def seed_param(request: JSON) -> int | None:
    value = request.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("'seed' must be an integer", param="seed")
    return value


@dataclass(slots=True)
class ChunkFactory:
    """Builds the bodies of one response so that every chunk shares ``id``, ``created`` and ``model``."""

    model: str
    include_usage: bool = False
    id: str = field(default_factory=new_completion_id)
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(self, delta: JSON, finish_reason: str | None) -> JSON:
        body: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            body["usage"] = None
        return body

    def role(self) -> JSON:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def content(self, text: str) -> JSON:
        return self._chunk({"content": text}, None)

    def tool_call(self, call: JSON) -> JSON:
        return self._chunk({"tool_calls": [{"index": 0, **call}]}, None)

    def finish(self, reason: str) -> JSON:
        return self._chunk({}, reason)

    def usage(self, usage: Usage) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.as_dict(),
        }

    def completion(self, message: JSON, finish_reason: str, usage: Usage) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage.as_dict(),
        }


def assistant_message(text: str) -> JSON:
    return {"role": "assistant", "content": text, "refusal": None}


def embedding_body(vectors: Sequence[Sequence[float]], model: str, usage: Usage) -> JSON:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }


def embedding_inputs(value: Any) -> list[str]:
    """The ``input`` of an embeddings request as strings. Token arrays are refused (see ``check_text_inputs``)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidRequest("'input' must be a non-empty string or array of strings", param="input")
    return check_text_inputs(items)


def check_text_inputs(inputs: Sequence[Any]) -> list[str]:
    """Embedding inputs must be strings: token-id arrays are model specific, so the local and fake models refuse
    them with a clear error instead of guessing which tokenizer produced them."""
    if not inputs:
        raise InvalidRequest("'input' must not be empty", param="input")
    for item in inputs:
        if not isinstance(item, str):
            raise InvalidRequest("'input' must be a string or an array of strings; token arrays are not supported "
                                 "by this model", param="input")
    return list(inputs)
