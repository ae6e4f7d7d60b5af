"""Server-sent events, as OpenAI-compatible servers send them: only ``data:`` fields matter.

An event is dispatched at the blank line that ends it, so each chunk reaches the caller as soon as the upstream
finished sending it (nothing is buffered beyond one event).
"""

from __future__ import annotations

from collections.abc import AsyncIterator


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each event (multi-line data joined with ``\\n``); comments and other fields are skipped."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
