"""Response classes: orjson bodies, and server-sent event streams that always close their body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that closes its body iterator however the response ends.

    Starlette iterates the body but does not close it when the client leaves: the sending task is cancelled (or
    ``send`` fails) with the body suspended at a ``yield``, and its cleanup waits for garbage collection. A chat
    stream's cleanup finishes its passage through the gate (meters the attempt, settles the reservation, frees the
    scheduler and concurrency slots), so it runs here, at once, on every path out. A client that left is the
    normal end of a stream nobody reads, not a server error: nothing is logged or answered for it."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
