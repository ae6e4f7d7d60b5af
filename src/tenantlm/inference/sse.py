"""Server-sent events as OpenAI streams them: one ``data: <json>`` event per chunk, ``data: [DONE]`` at the end."""

from __future__ import annotations

from typing import Any

import orjson


def sse_event(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
