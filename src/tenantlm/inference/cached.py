"""Answers from the response cache, in the shapes chat completions use: a stored answer replayed as a stream, and
a streamed answer gathered into the stored shape (see ``respcache`` for the cache itself)."""

from __future__ import annotations

import time
from typing import Any

JSON = dict[str, Any]


def replay_chunks(answer: JSON, *, wants_usage: bool) -> list[JSON]:
    """A stored ``chat.completion`` as ``chat.completion.chunk`` bodies: the message in one delta, then the finish
    reason, then (when the client asked for it) the usage chunk, as an upstream stream would end."""
    head = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"]}
    chunks = []
    for choice in answer.get("choices") or ():
        message = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
        index = choice.get("index", 0)
        chunks.append({**head, "choices": [{"index": index, "delta": message, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": index, "delta": {},
                                            "finish_reason": choice.get("finish_reason")}]})
    if wants_usage:
        chunks.append({**head, "choices": [], "usage": answer["usage"]})
    return chunks


def gathered_answer(*, completion_id: str, model: str, content: str, finish_reason: str | None) -> JSON:
    """A streamed answer of plain text as the ``chat.completion`` the cache stores."""
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}]}
