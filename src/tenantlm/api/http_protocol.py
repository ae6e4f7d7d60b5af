"""uvicorn's httptools protocol, with each response's head sent in the same write as the start of its body.

uvicorn writes the status line and headers to the socket as soon as the app sends ``http.response.start``, and the
body in a second write when ``http.response.body`` follows. On loopback and on this kind of VM each socket write is a
system call that also runs the receiving side's TCP processing and wakes the client, tens of microseconds that the
client waits for twice. Here the head is held for the rest of the current turn of the event loop: if the body is
written in the same turn (as for every JSON answer: start and body are sent back to back) both go out in one write;
otherwise (a stream whose first event is not ready yet, a response without a body) the head goes out at the end of
the turn, as good as at once. Nothing else changes: the same checks on headers, the same keep-alive and
flow-control handling, the same order of bytes on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeadWithBody:
    """A response's view of the connection's transport that holds its first write (the head) for the current turn
    of the event loop and sends it together with the next one."""

    __slots__ = ("_flush", "_held", "_passthrough", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._passthrough = False

    def write(self, data: bytes) -> None:
        if self._passthrough:
            self._transport.write(data)
        elif self._held is None:
            self._held = bytes(data)
            self._flush = asyncio.get_running_loop().call_soon(self._send_held)
        else:
            held, self._held, self._passthrough = self._held, None, True
            if self._flush is not None:
                self._flush.cancel()
            self._transport.write(held + data if len(data) < 65536 else held)
            if len(data) >= 65536:
                self._transport.write(data)

    def _send_held(self) -> None:
        self._passthrough = True
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._send_held()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=OneWriteHttpToolsProtocol)``: see the module's doc."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # A new request's cycle (its task starts on a later turn); an upgrade returns early and keeps the old one.
        if cycle is not None and getattr(cycle, "transport", None) is self.transport:
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]
