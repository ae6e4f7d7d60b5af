"""IsolatedParser: parse_document in a worker process, so a parser that hangs, loops or swells kills only its worker.

The worker is started with multiprocessing's ``spawn`` method (a fresh interpreter: nothing of the server's threads,
locks, keys or connections is inherited), confined with ``RLIMIT_AS`` (its address space) and ``RLIMIT_CORE = 0``
(a crash never writes the file's content to disk as a core dump), and ignores SIGINT (the server's shutdown owns it).
The file goes to it over a pipe and the text comes back over the same pipe: nothing touches the disk. Its answer is
a small JSON header and the UTF-8 text, never a pickle, so even a worker subverted by a hostile file cannot run code
in the server. Logging and warnings are off in the worker: a library's words about a file can quote it.

One worker is kept and reused; calls on one IsolatedParser take turns (a lock). A watchdog kills the worker when a
call outlives ``timeout_s`` (which covers sending the file, parsing it and sending the text back); a worker that
timed out, died, ran out of memory or raised something unexpected is replaced by a fresh one on the next call, and
every worker is replaced after ``max_uses`` files (whatever a library leaks goes with it). The caller gets
``ParseError("invalid_file", ...)`` for all of these: the file is what made the worker fail. A worker that cannot
start at all is the server's fault, not the file's: ``ServiceUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import resource
import signal
import threading
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Protocol, TypeVar

from tenantlm.errors import ServiceUnavailable
from tenantlm.knowledge.parsing.document import check_name_and_size, parse_document
from tenantlm.knowledge.parsing.model import DOCUMENT_KINDS, ParsedDocument, ParseError, ParseLimits, invalid

DEFAULT_MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_STARTUP_TIMEOUT_S = 60.0
DEFAULT_MAX_USES = 100

_READY = b"ready"
_MAX_MESSAGE_CHARS = 300
_T = TypeVar("_T")


class ParseFunction(Protocol):
    """parse_document's signature. The worker imports it by name, so it must be a module-level function."""

    def __call__(self, data: bytes, *, filename: str, limits: ParseLimits) -> ParsedDocument: ...


class IsolatedParser:
    """parse_document in one reusable worker process. Sync ``parse`` (blocks the calling thread) and async
    ``parse_async`` (the same in a thread). Thread-safe; calls take turns, and ``timeout_s`` counts from a call's
    turn, so callers should keep one file in flight per parser (several parsers for parallel parsing).
    ``close()`` (or ``with``) stops the worker."""

    def __init__(
        self,
        *,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        max_uses: int = DEFAULT_MAX_USES,
        parse: ParseFunction = parse_document,
    ) -> None:
        self._memory_limit_bytes = memory_limit_bytes
        self._startup_timeout_s = startup_timeout_s
        self._max_uses = max_uses
        self._parse = parse
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._closed = False

    def parse(
        self, data: bytes, *, filename: str, limits: ParseLimits = ParseLimits(), timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> ParsedDocument:
        """parse_document's answer from the worker; ``invalid_file`` if the worker times out or dies on it."""
        check_name_and_size(data, filename=filename, limits=limits)  # no need to ship what is refused anyway
        with self._lock:
            worker = self._ready_worker()
            try:
                raw = worker.ask(data, filename=filename, limits=limits, timeout_s=timeout_s)
            except (EOFError, OSError):
                timed_out = worker.timed_out
                self._discard()
                if timed_out:
                    raise invalid("The file took too long to parse.") from None
                raise invalid("The parser failed on this file (it may need more memory than allowed).") from None
            worker.uses += 1
            answer, retire = _read_answer(raw)
            if retire or worker.uses >= self._max_uses:
                self._discard()
        if isinstance(answer, ParseError):
            raise answer
        return answer

    async def parse_async(
        self, data: bytes, *, filename: str, limits: ParseLimits = ParseLimits(), timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> ParsedDocument:
        """``parse`` in a worker thread. Cancelling the awaiting task does not stop the parse early: it ends within
        ``timeout_s`` and its result is dropped."""
        return await asyncio.to_thread(self.parse, data, filename=filename, limits=limits, timeout_s=timeout_s)

    def start(self) -> None:
        """Start the worker now rather than on the first file (startup costs an interpreter and the imports)."""
        with self._lock:
            self._ready_worker()

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id, None when there is none."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()

    def __enter__(self) -> IsolatedParser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _ready_worker(self) -> _Worker:
        if self._closed:
            raise RuntimeError("IsolatedParser is closed")
        if self._worker is not None and not self._worker.process.is_alive():
            self._discard()
        if self._worker is None:
            self._worker = _Worker.start(self._context, self._memory_limit_bytes, self._parse, self._startup_timeout_s)
        return self._worker

    def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()


def parse_isolated(
    data: bytes,
    *,
    filename: str,
    limits: ParseLimits = ParseLimits(),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
) -> ParsedDocument:
    """One file in a worker of its own, started for it and stopped after it (sync). Costs a process start per file;
    a service keeps an IsolatedParser instead."""
    with IsolatedParser(memory_limit_bytes=memory_limit_bytes) as parser:
        return parser.parse(data, filename=filename, limits=limits, timeout_s=timeout_s)


class _Worker:
    """The parent's handle on one worker process: its pipe end, a use count and the watchdog's verdict."""

    def __init__(self, process: Any, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.uses = 0
        self.timed_out = False

    @classmethod
    def start(cls, context: Any, memory_limit_bytes: int, parse: ParseFunction, timeout_s: float) -> _Worker:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=serve, args=(child_end, memory_limit_bytes, parse), daemon=True,
                                  name="tenantlm-parser")
        try:
            process.start()
        except OSError:
            parent_end.close()
            raise ServiceUnavailable("The document parser could not start.") from None
        finally:
            child_end.close()
        worker = cls(process, parent_end)
        try:
            ready = worker._watched(lambda: parent_end.recv_bytes(len(_READY)), timeout_s)
        except (EOFError, OSError):
            ready = b""
        if ready != _READY:
            worker.stop()
            raise ServiceUnavailable("The document parser could not start.")
        return worker

    def ask(self, data: bytes, *, filename: str, limits: ParseLimits, timeout_s: float) -> bytes:
        header = json.dumps({"filename": filename, "limits": limits.as_dict()}).encode()
        longest_reply = 4 * limits.max_output_chars + 1024

        def exchange() -> bytes:
            self.connection.send_bytes(header)
            self.connection.send_bytes(data)
            return self.connection.recv_bytes(longest_reply)

        return self._watched(exchange, timeout_s)

    def stop(self) -> None:
        self.connection.close()
        self.process.kill()
        self.process.join()
        self.process.close()

    def _watched(self, call: Callable[[], _T], timeout_s: float) -> _T:
        """``call()``, with the worker killed if it outlives ``timeout_s`` (the call then fails with EOFError or
        OSError as the pipe closes)."""
        watchdog = threading.Timer(timeout_s, self._time_out)
        watchdog.daemon = True
        watchdog.start()
        try:
            return call()
        finally:
            watchdog.cancel()
            watchdog.join()

    def _time_out(self) -> None:
        self.timed_out = True
        self.process.kill()


def _read_answer(raw: bytes) -> tuple[ParsedDocument | ParseError, bool]:
    """The worker's answer: the document or the error, and whether the worker asked to be retired. Anything
    malformed is treated as the worker failing on the file."""
    head, _, body = raw.partition(b"\n")
    try:
        answer = json.loads(head)
        retire = answer["retire"] is True
        if answer["ok"] is True and answer["kind"] in DOCUMENT_KINDS:
            return ParsedDocument(kind=answer["kind"], text=body.decode()), retire
        if answer["ok"] is False and answer["code"] in ("unsupported_file", "invalid_file"):
            return ParseError(answer["code"], str(answer["message"])[:_MAX_MESSAGE_CHARS]), retire
    except (ValueError, KeyError, TypeError):
        pass
    return invalid("The parser failed on this file."), True


# ---- the worker process ----


def serve(connection: Connection, memory_limit_bytes: int, parse: ParseFunction) -> None:
    """The worker's loop: one file in, one answer out, until the pipe closes or the worker asks to retire."""
    try:
        _confine(memory_limit_bytes)
        connection.send_bytes(_READY)
        while True:
            try:
                header = connection.recv_bytes()
                data = connection.recv_bytes()
            except EOFError:
                return
            answer, retire = _answer(parse, header, data)
            del data
            connection.send_bytes(answer)
            if retire:
                return
    except BaseException:  # noqa: S110 - quietly: a traceback on stderr could carry a library's words about the file
        pass


def _confine(memory_limit_bytes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_limit_bytes if hard == resource.RLIM_INFINITY else min(memory_limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _answer(parse: ParseFunction, header: bytes, data: bytes) -> tuple[bytes, bool]:
    failure: str | None = None
    try:
        request = json.loads(header)
        document = parse(data, filename=request["filename"], limits=ParseLimits(**request["limits"]))
        return _message({"ok": True, "kind": document.kind, "retire": False}, document.text.encode()), False
    except ParseError as error:
        return _message({"ok": False, "code": error.code, "message": error.message, "retire": False}), False
    except MemoryError:
        failure = "The file needs more memory to parse than is allowed."
    except Exception:
        failure = "The parser failed on this file."
    return _message({"ok": False, "code": "invalid_file", "message": failure, "retire": True}), True


def _message(head: dict[str, Any], body: bytes = b"") -> bytes:
    return json.dumps(head).encode() + b"\n" + body
