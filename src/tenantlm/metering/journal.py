"""The durable local buffer in front of the SQL ledger: an append-only journal of segment files with group commit.

Why a local journal: the request path must not wait for the database (or fail when it is down), yet an event must be
on disk before its request is acknowledged. ``append`` returns once the line is written *and* fsynced.

Group commit: callers queue lines; one writer task takes whatever queued while the previous write+fsync ran and
writes it with one ``write`` and one ``fdatasync`` (in a dedicated thread, so the event loop keeps serving). Under
load a batch holds hundreds of lines, so the fsync cost is shared instead of paid per event. An append whose caller
says it is alone (no other request in flight: nothing to share an fsync with) and that finds nothing queued and
nothing being written is written and fsynced right away on the event loop's own thread, as long as fsyncs are fast
(their moving average under ``inline_fsync_below_s``, 2 ms by default): there the hand-off to the thread and back
costs more than the fsync itself, and the loop has nothing else to do meanwhile. When fsyncs slow down (a busy
disk) every append goes to the thread again, so the loop is never held for long.

Format: ``<dir>/<seq:012d>.seg``, one line per event: ``<crc32 of payload, 8 hex> <payload JSON>\n``. A kill -9 (or a
power cut) can leave a torn last line; its checksum fails and it is skipped. It can only be a line whose append never
returned, because ``append`` returns after the fsync that covered the whole line. Segments are never appended to after
a restart or a write error (a new one is started), so a bad line anywhere but at the tail means real corruption; the
flusher then keeps the file in ``quarantine/`` instead of deleting it (its readable events are still inserted).

Space is reserved ahead of the writes (``PREALLOCATE_BYTES`` at a time), so a segment being written ends in zeros
after its last line; the reserve is given back when the segment is closed, and readers drop zeros left by a crash.
A power cut may persist blocks of unacknowledged lines out of order, leaving zeros between lines: that segment reads
as corrupt and is quarantined, with nothing acknowledged missing from it.

Segments rotate when they reach ``max_segment_bytes`` and whenever the flusher seals the active one; a sealed segment
is deleted only after every event in it is committed to SQL. One process owns a directory (an exclusive ``flock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("tenantlm.ledger")
SUFFIX = ".seg"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
PREALLOCATE_BYTES = 1024 * 1024  # a segment's space is reserved this much at a time, ahead of the writes


def encode_line(payload: bytes) -> bytes:
    return b"%08x %b\n" % (zlib.crc32(payload), payload)  # %b: bytes as they are, the same output as %s, cheaper


def _check(line: bytes) -> bytes | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    payload = line[9:]
    return payload if zlib.crc32(payload) == crc else None


@dataclass(slots=True)
class Decoded:
    """The readable payloads of a segment; ``bad`` lines were skipped; ``corrupt`` when one was not at the tail."""

    payloads: list[bytes]
    bad: int
    corrupt: bool


def written_part(data: bytes) -> bytes:
    """``data`` without the zeros at its end (space reserved ahead of the writes, never written).

    Not ``data.rstrip(b"\\0")``: that looks each byte up in the strip set with its own ``memchr`` call, tens of
    instructions per byte, and a segment sealed soon after it was started is almost all reserved zeros (megabytes
    of them: 2-4 ms per mebibyte with the interpreter lock held). The common case, the zeros start right after the
    last line, takes one ``memrchr`` and one ``memcmp``; only a segment that ends in a torn line (a crash while it
    was written) goes the slow way."""
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return data
    if data.endswith(bytes(len(data) - end)):
        return data[:end]
    return data.rstrip(b"\0")


def decode(data: bytes) -> Decoded:
    pieces = written_part(data).split(b"\n")
    tail = pieces.pop()  # b"" when the file ends with a newline, else a torn last line
    payloads: list[bytes] = []
    bad_at: list[int] = []
    last_good = -1
    for i, line in enumerate(pieces):
        payload = _check(line)
        if payload is None:
            bad_at.append(i)
        else:
            payloads.append(payload)
            last_good = i
    if tail:
        bad_at.append(len(pieces))
    corrupt = any(i < last_good for i in bad_at)
    return Decoded(payloads, len(bad_at), corrupt)


@dataclass(slots=True)
class JournalStats:
    batches: int = 0  # = write+fsync calls
    inline_batches: int = 0  # of which written and fsynced on the event loop's thread
    lines: int = 0
    bytes: int = 0
    segments_created: int = 0

    def committed(self, lines: int, nbytes: int) -> None:
        """One write+fsync of ``lines`` lines, ``nbytes`` bytes."""
        self.batches += 1
        self.lines += lines
        self.bytes += nbytes


@dataclass(slots=True)
class _Active:
    fd: int
    path: Path
    size: int = 0  # bytes written (the file is longer: its reserved tail is zeros)
    synced: int = 0  # interval mode: bytes covered by the last fsync
    reserved: int = 0  # bytes allocated on disk

    def append(self, data: bytes, preallocate: int) -> None:
        """Write ``data`` at the end of what is written. The space is allocated ahead, ``preallocate`` bytes at a
        time, so that the fsync after a write has only data to flush and no file size to update (about half the
        cost of an fsync after an append on ext4 on this kind of machine)."""
        end = self.size + len(data)
        if end > self.reserved and preallocate:
            grow = max(preallocate, end - self.reserved)
            try:
                os.posix_fallocate(self.fd, self.reserved, grow)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
            else:
                self.reserved += grow
        written = os.pwrite(self.fd, data, self.size)
        while written < len(data):  # a short write (rare for a regular file): write the rest
            written += os.pwrite(self.fd, memoryview(data)[written:], self.size + written)
        self.size = end

    def close(self) -> None:
        """Give back the reserved space after the last line, then close. The flusher then reads only lines, not a
        mebibyte of zeros per segment; a crash before this leaves the zeros, which readers drop."""
        try:
            if self.reserved > self.size:
                os.ftruncate(self.fd, self.size)
        except OSError:
            pass
        finally:
            os.close(self.fd)


@dataclass(slots=True)
class _Batch:
    """Lines waiting for the next write+fsync. Waiters block on ``done`` (an Event: a cancelled waiter leaves the
    batch alone, unlike awaiting one shared future) and read ``error`` after it is set."""

    lines: list[bytes] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


SyncMode = Literal["always", "interval"]


class Journal:
    def __init__(self, directory: Path, *, max_segment_bytes: int = 64 * 1024 * 1024,
                 fsync: Callable[[int], None] = fdatasync, sync: SyncMode = "always",
                 sync_interval_s: float = 0.05, inline_fsync_below_s: float = 0.002,
                 preallocate_bytes: int = PREALLOCATE_BYTES) -> None:
        if sync not in ("always", "interval"):
            raise ValueError(f"sync must be 'always' or 'interval', not {sync!r}")
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.fsync = fsync  # the durability barrier; tests count calls, benchmarks measure its cost
        self.sync = sync
        self.sync_interval_s = sync_interval_s
        self.inline_fsync_below_s = inline_fsync_below_s  # 0 turns inline commits off
        self.preallocate_bytes = preallocate_bytes  # 0: no space reserved ahead, the file grows with each write
        self.fsync_avg_s = 0.0  # moving average of the data fsyncs' duration
        self._inline_turn = False  # an append was committed inline in this turn of the event loop
        self._dirty = False  # interval mode: written since the last fsync
        self._retired: list[_Active] = []  # interval mode: full segments waiting for their last fsync and close
        self.stats = JournalStats()
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._active: _Active | None = None
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._io = asyncio.Lock()  # one file operation at a time: a batch write or a seal
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take the directory (exclusive lock) and continue numbering after the segments already there."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"another process is using the ledger journal in {self.directory}") from None
        self._lock_fd = fd
        existing = self.segments()
        self._next_seq = (int(existing[-1].stem) + 1) if existing else 1

    async def start(self) -> None:
        self.open()
        if self._task is None:
            self._closing = False
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ledger-journal")
            writer = self._writer() if self.sync == "always" else self._syncer()
            self._task = asyncio.create_task(writer, name="ledger-journal-writer")

    async def close(self) -> None:
        """Write what is queued, stop the writer, close the segment and release the directory."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        async with self._io:
            if self.sync == "interval":
                self._retire_active()
                await self._sync_retired()
            else:
                self._close_active()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- appending ------------------------------------------------------------------------------------------------

    async def append(self, payload: bytes, *, alone: bool = False) -> None:
        """``always``: return once ``payload`` is written and fsynced. ``interval``: return once it is written (in
        the kernel's page cache: it survives the process being killed; an fsync follows within the interval, so
        a power cut or kernel crash loses at most that interval). Raise if the write failed.

        ``alone``: the caller knows of no other append coming soon (no other request in flight), so nothing could
        share this one's fsync: it may be committed inline (see the module's doc)."""
        if self._task is None or self._task.done() or self._closing:
            raise RuntimeError("the ledger journal is not running")
        if self.sync == "interval":
            self._write_now(encode_line(payload))
            return
        batch = self._batch
        if alone and self._inline():
            self._commit_inline(encode_line(payload))
            return
        batch.lines.append(encode_line(payload))
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise OSError("the usage journal write failed") from batch.error

    def _inline(self) -> bool:
        """Whether to commit an append its caller says is alone inline: nothing is queued or being written, no other
        append was committed inline in this turn of the event loop, and fsyncs are fast."""
        if self._batch.lines or self._io.locked() or self._inline_turn or self.fsync_avg_s >= self.inline_fsync_below_s:
            return False
        self._inline_turn = True
        asyncio.get_running_loop().call_soon(self._end_inline_turn)
        return True

    def _end_inline_turn(self) -> None:
        self._inline_turn = False

    def _commit_inline(self, line: bytes) -> None:
        """A batch of one, written and fsynced on the event loop's thread: no task or thread hop."""
        try:
            self._write(line)
        except Exception as exc:
            raise OSError("the usage journal write failed") from exc
        self.stats.committed(1, len(line))
        self.stats.inline_batches += 1

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch = self._batch
                if not batch.lines:
                    if self._closing:
                        return
                    continue
                self._batch = _Batch()
                await self._commit(batch)
        except BaseException as exc:  # stopped (cancelled) with appends maybe queued: fail them, never strand them
            self._batch.error = exc
            self._batch.done.set()
            raise

    async def _commit(self, batch: _Batch) -> None:
        assert self._executor is not None
        data = b"".join(batch.lines)
        try:
            async with self._io:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._write, data)
            self.stats.committed(len(batch.lines), len(data))
        except Exception as exc:
            batch.error = exc
        except BaseException as exc:  # the writer itself is cancelled: fail this batch's callers, then stop
            batch.error = exc
            raise
        finally:
            batch.done.set()

    # -- interval mode: written in the caller's thread, fsynced in the background ------------------------------------

    def _write_now(self, line: bytes) -> None:
        """One ``write`` on the event loop's thread (a page-cache copy of a few hundred bytes), no thread hop."""
        try:
            active = self._active or self._new_segment()
            active.append(line, self.preallocate_bytes)
        except OSError as exc:
            self._retire_active()  # a segment that failed a write is never written again
            raise OSError("the usage journal write failed") from exc
        self.stats.lines += 1
        self.stats.bytes += len(line)
        if not self._dirty:
            self._dirty = True
            self._wake.set()
        if active.size >= self.max_segment_bytes:
            self._retire_active()

    def _retire_active(self) -> None:
        """Stop writing to the active segment; its fd stays open until the syncer has fsynced it (an fsync may be
        running on it in the journal thread right now, so it must not be closed here)."""
        if self._active is not None:
            self._retired.append(self._active)
            self._active = None

    async def _syncer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing:
                await asyncio.sleep(self.sync_interval_s)  # gather what is written meanwhile into this fsync
            async with self._io:
                await self._sync_retired()
            if self._closing:
                return

    async def _sync_retired(self) -> None:
        """Under ``_io``: fsync the active segment if written since the last one, and fsync and close retired ones."""
        if self._executor is None:
            for seg in self._retired:
                with contextlib.suppress(OSError):
                    seg.close()
            self._retired.clear()
            return
        retired, self._retired = self._retired, []
        active = self._active
        self._dirty = False
        dirty = [(seg, seg.size) for seg in (*retired, active) if seg is not None and seg.size > seg.synced]
        if not dirty and not retired:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._fsync_close, dirty, retired)
            for seg, size in dirty:
                seg.synced = size
            if dirty:
                self.stats.batches += 1
        except OSError:
            log.exception("usage journal fsync failed; the segment is retired and the events stay in it")
            if active is not None and active is self._active:
                self._retire_active()
                self._retired.remove(active)
                with contextlib.suppress(OSError):
                    active.close()

    def _fsync_close(self, dirty: list[tuple[_Active, int]], retired: list[_Active]) -> None:
        """Runs in the journal thread: fsync what was written since the last fsync, close the retired segments."""
        try:
            for seg, _ in dirty:
                self.fsync(seg.fd)
        finally:
            for seg in retired:
                with contextlib.suppress(OSError):
                    seg.close()

    def _write(self, data: bytes) -> None:
        """Runs in the journal thread (or inline, for a one-line batch). After any error the segment is abandoned: a
        new one takes the next batch."""
        try:
            active = self._active or self._new_segment()
            active.append(data, self.preallocate_bytes)
            started = time.perf_counter()
            self.fsync(active.fd)
            self.fsync_avg_s += (time.perf_counter() - started - self.fsync_avg_s) / 8
        except BaseException:
            self._close_active()
            raise
        if active.size >= self.max_segment_bytes:
            self._close_active()

    def _new_segment(self) -> _Active:
        if self._lock_fd is None:
            raise RuntimeError("the ledger journal is not open")
        path = self.directory / f"{self._next_seq:012d}{SUFFIX}"
        self._next_seq += 1
        fd = os.open(path, _FLAGS, 0o600)
        self._active = _Active(fd, path)
        self.stats.segments_created += 1
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            self.fsync(dfd)  # the new directory entry must be durable too
        finally:
            os.close(dfd)
        return self._active

    def _close_active(self) -> None:
        if self._active is not None:
            with contextlib.suppress(OSError):
                self._active.close()
            self._active = None

    # -- the flusher's side ---------------------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())

    async def seal(self) -> list[Path]:
        """Close the active segment and return every segment on disk, oldest first. None of them is written again."""
        if self._lock_fd is None:
            raise RuntimeError("the ledger journal is not open")
        async with self._io:
            if self.sync == "interval":
                self._retire_active()
                # Listed before the await below: appends keep running meanwhile and open a new active segment,
                # which must not be handed to the flusher (it would delete it while it is being written).
                sealed = self.segments()
                await self._sync_retired()
                return sealed
            self._close_active()
            return self.segments()

    @staticmethod
    def read(path: Path) -> Decoded:
        return decode(path.read_bytes())

    @staticmethod
    def delete(path: Path) -> None:
        path.unlink(missing_ok=True)

    def quarantine(self, path: Path) -> Path:
        target = self.directory / "quarantine" / path.name
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        return target
