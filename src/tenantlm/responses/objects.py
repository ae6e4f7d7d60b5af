"""The Responses API's objects in OpenAI's wire shape (what the SDK's ``Response``, ``ResponseOutputMessage``,
``ResponseFileSearchToolCall``, ``ResponseUsage`` and stream events parse), and the SSE framing of its events.

A stream is a sequence of ``event: <type>`` / ``data: <json>`` frames, each event carrying its ``type`` and a
``sequence_number`` counting from 0; it ends with ``response.completed`` (or ``response.incomplete`` /
``response.failed``) and no ``[DONE]`` line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson

from tenantlm.responses.models import ResponseRequest

JSON = dict[str, Any]


def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens}


def file_search_call(item_id: str, queries: list[str], status: str, results: list[JSON] | None) -> JSON:
    return {"id": item_id, "type": "file_search_call", "status": status, "queries": queries, "results": results}


def search_results(results: list[JSON]) -> list[JSON]:
    """Vector store search results as a file_search call's ``results``."""
    return [{"file_id": r["file_id"], "filename": r.get("filename"), "score": r.get("score"),
             "attributes": r.get("attributes"),
             "text": "".join(str(p.get("text", "")) for p in r.get("content", ()))} for r in results]


def output_text(text: str, annotations: list[JSON]) -> JSON:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def output_message(item_id: str, status: str, content: list[JSON]) -> JSON:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def response_object(*, response_id: str, created_at: float, request: ResponseRequest, status: str,
                    output: list[JSON], usage: JSON | None = None, incomplete_reason: str | None = None,
                    error: JSON | None = None, completed_at: float | None = None) -> JSON:
    return {
        "id": response_id, "object": "response", "created_at": int(created_at), "status": status,
        "completed_at": None if completed_at is None else int(completed_at), "background": False,
        "error": error,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "model": request.model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": request.previous_response_id,
        "conversation": None if request.conversation is None else {"id": request.conversation},
        "reasoning": {"effort": None, "summary": None}, "store": request.store,
        "temperature": request.temperature, "text": {"format": {"type": "text"}},
        "tool_choice": request.tool_choice,
        "tools": [] if request.file_search is None else [request.file_search.wire],
        "top_p": request.top_p, "truncation": "disabled", "usage": usage, "user": request.user,
        "safety_identifier": request.safety_identifier, "metadata": request.metadata, "prompt": request.prompt,
    }


def without_results(response: JSON) -> JSON:
    """The response with its file_search calls' ``results`` left out (shown only when included)."""
    out = copy.deepcopy(response)
    for item in out["output"]:
        if item.get("type") == "file_search_call":
            item["results"] = None
    return out


@dataclass
class EventWriter:
    """Frames a stream's events, numbering them in order."""

    sequence: int = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"
