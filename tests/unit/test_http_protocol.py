"""The response head is sent in the same socket write as the start of the body when both come in one turn of the
event loop, and on its own at the end of the turn otherwise; nothing is reordered, lost or held past a close."""

from __future__ import annotations

import asyncio
from typing import Any

from tenantlm.api.http_protocol import _HeadWithBody


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default


async def test_head_and_body_written_in_one_turn_go_out_in_one_write() -> None:
    real = Recorder()
    t = _HeadWithBody(real)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert real.writes == []  # held for the rest of this turn
    t.write(b"{}")
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    t.write(b"more")  # later writes pass straight through
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"more"] and t.get_extra_info("peername") == ("127.0.0.1", 5000)


async def test_a_head_whose_body_is_not_ready_goes_out_at_the_end_of_the_turn() -> None:
    real = Recorder()
    t = _HeadWithBody(real)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    t.write(b"5\r\nhello\r\n")
    assert real.writes[-1] == b"5\r\nhello\r\n" and len(real.writes) == 2


async def test_a_large_body_is_not_copied_into_the_head_and_order_is_kept() -> None:
    real = Recorder()
    t = _HeadWithBody(real)  # type: ignore[arg-type]
    body = b"x" * 100_000
    t.write(b"HEAD")
    t.write(body)
    assert real.writes == [b"HEAD", body]


async def test_close_sends_a_held_head_first() -> None:
    real = Recorder()
    t = _HeadWithBody(real)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    t.close()
    assert real.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"] and real.closed
    await asyncio.sleep(0)  # the cancelled end-of-turn flush does not write again
    assert len(real.writes) == 1 and t.is_closing()
