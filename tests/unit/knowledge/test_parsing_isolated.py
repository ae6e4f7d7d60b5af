"""IsolatedParser: the same answers as parse_document, from a confined worker process that a hang, a crash or a
memory blow-up kills alone; the next call gets a fresh worker and works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from parsing_hooks import misbehaving
from parsing_samples import docx_file, pdf

from tenantlm.errors import ServiceUnavailable
from tenantlm.knowledge.parsing import IsolatedParser, ParsedDocument, ParseError, ParseLimits, parse_isolated

MiB = 1024 * 1024
GENEROUS_S = 120.0  # only ever reached if something is broken


@pytest.fixture(scope="module")
def parser() -> Iterator[IsolatedParser]:
    with IsolatedParser(memory_limit_bytes=512 * MiB, parse=misbehaving) as shared:
        yield shared


def isolated_failure(parser: IsolatedParser, data: bytes, filename: str, timeout_s: float = GENEROUS_S) -> str:
    with pytest.raises(ParseError) as caught:
        parser.parse(data, filename=filename, timeout_s=timeout_s)
    assert caught.value.code == "invalid_file"
    return caught.value.message


def still_works(parser: IsolatedParser) -> None:
    assert parser.parse(b"still works", filename="after.txt", timeout_s=GENEROUS_S) == ParsedDocument(
        kind="txt", text="still works")


@pytest.mark.parametrize(("data", "filename", "text"), [
    (b"plain text", "a.txt", "plain text"),
    (b"# title", "a.md", "# title"),
    (b"<p>para</p><script>x</script>", "a.html", "para"),
    (b'{"a": [1]}', "a.json", "a[0]: 1"),
    (b"h\nv", "a.csv", "h: v"),
    (pdf("pdf text"), "a.pdf", "pdf text"),
    (docx_file("docx text"), "a.docx", "docx text"),
])
def test_every_kind_round_trips_through_the_worker(parser: IsolatedParser, data: bytes, filename: str,
                                                   text: str) -> None:
    document = parser.parse(data, filename=filename, timeout_s=GENEROUS_S)
    assert document == ParsedDocument(kind=filename.rsplit(".", 1)[1], text=text)  # type: ignore[arg-type]


def test_parse_errors_come_back_as_they_are(parser: IsolatedParser) -> None:
    pid = parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text
    assert isolated_failure(parser, b"", "a.txt") == "The file is empty."
    assert isolated_failure(parser, pdf("x", user_password="pw"), "a.pdf") == "The PDF is protected by a password."
    with pytest.raises(ParseError) as caught:
        parser.parse(b"x", filename="a.exe")
    assert caught.value.code == "unsupported_file"
    assert parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text == pid  # an answer, not a failure


def test_limits_travel_to_the_worker(parser: IsolatedParser) -> None:
    assert parser.parse(b"h\n" + b"r\n" * 5, filename="a.csv", timeout_s=GENEROUS_S).text.count("h: r") == 5
    with pytest.raises(ParseError, match="more than 3 rows"):
        parser.parse(b"h\n" + b"r\n" * 5, filename="a.csv", limits=ParseLimits(max_csv_rows=3), timeout_s=GENEROUS_S)


def test_a_hung_parser_is_killed_and_the_next_call_gets_a_fresh_worker(parser: IsolatedParser) -> None:
    before = parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text
    assert isolated_failure(parser, b"", "hang.txt", timeout_s=1.0) == "The file took too long to parse."
    assert parser.worker_pid is None
    after = parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text
    assert after != before
    still_works(parser)


def test_the_memory_cap_holds_and_the_next_call_works(parser: IsolatedParser) -> None:
    before = parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text
    message = isolated_failure(parser, str(1024 * MiB).encode(), "swell.txt")  # twice the 512 MiB cap
    assert message == "The file needs more memory to parse than is allowed."
    assert parser.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text != before  # retired, replaced
    still_works(parser)


def test_a_real_parser_swelling_past_the_cap_fails_the_file() -> None:
    """16 MiB of JSON that parses into ~5 M dicts (~450 MiB) against a 256 MiB cap."""
    swelling = b"[" + b"{}," * (16 * MiB // 3 - 1) + b"{}]"
    with IsolatedParser(memory_limit_bytes=256 * MiB) as capped:
        with pytest.raises(ParseError) as caught:
            capped.parse(swelling, filename="swell.json", limits=ParseLimits(max_json_bytes=17 * MiB),
                         timeout_s=GENEROUS_S)
        assert "memory" in caught.value.message
        assert capped.parse(b'{"small": "json"}', filename="ok.json", timeout_s=GENEROUS_S).text == "small: json"


def test_a_crashed_worker_fails_the_file_and_is_replaced(parser: IsolatedParser) -> None:
    assert "parser failed" in isolated_failure(parser, b"", "crash.txt")
    assert parser.worker_pid is None
    still_works(parser)


def test_an_unexpected_exception_fails_the_file_without_its_words(parser: IsolatedParser) -> None:
    assert isolated_failure(parser, b"TENANT-SECRET-7f3a", "raise.txt") == "The parser failed on this file."
    still_works(parser)


def test_the_worker_is_confined(parser: IsolatedParser) -> None:
    reported = parser.parse(b"", filename="confinement.txt", timeout_s=GENEROUS_S).text
    assert reported == f"{(512 * MiB, 512 * MiB)} (0, 0) True"


def test_the_worker_is_reused_then_recycled_after_max_uses() -> None:
    with IsolatedParser(max_uses=3, parse=misbehaving) as recycled:
        pids = [recycled.parse(b"", filename="pid.txt", timeout_s=GENEROUS_S).text for _ in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]


def test_files_refused_before_parsing_never_start_a_worker() -> None:
    with IsolatedParser() as idle:
        with pytest.raises(ParseError) as caught:
            idle.parse(b"x" * 11, filename="big.txt", limits=ParseLimits(max_input_bytes=10))
        assert caught.value.code == "invalid_file"
        with pytest.raises(ParseError) as caught:
            idle.parse(b"x", filename="a.exe")
        assert caught.value.code == "unsupported_file"
        assert idle.worker_pid is None


def test_a_worker_that_cannot_start_is_service_unavailable_not_the_files_fault() -> None:
    """No interpreter starts in a microsecond: the worker is killed before it is ready."""
    with IsolatedParser(startup_timeout_s=1e-6) as never_ready:
        with pytest.raises(ServiceUnavailable, match="could not start"):
            never_ready.parse(b"text", filename="a.txt", timeout_s=GENEROUS_S)
        assert never_ready.worker_pid is None


async def test_parse_async(parser: IsolatedParser) -> None:
    documents = await asyncio.gather(*(parser.parse_async(json.dumps({"n": n}).encode(), filename="n.json",
                                                          timeout_s=GENEROUS_S) for n in range(3)))
    assert [document.text for document in documents] == ["n: 0", "n: 1", "n: 2"]


def test_parse_isolated_one_shot() -> None:
    assert parse_isolated(b"<b>one</b> shot", filename="a.html", timeout_s=GENEROUS_S) == ParsedDocument(
        kind="html", text="one shot")


def test_a_closed_parser_refuses_work() -> None:
    closed = IsolatedParser()
    closed.close()
    with pytest.raises(RuntimeError):
        closed.parse(b"x", filename="a.txt")
