"""The journal under the ledger: line format and torn-line detection, group commit (fsyncs counted), rotation,
the directory lock, and what a failed write does."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path

import pytest

from tenantlm.metering.journal import Journal, SyncMode, decode, encode_line, written_part


class CountingFsync:
    """The real fdatasync, counted; optionally failing the next N calls."""

    def __init__(self, fail: int = 0) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise OSError(5, "injected I/O error")
        os.fsync(fd)


def test_lines_round_trip_and_a_torn_tail_is_skipped_at_every_cut() -> None:
    payloads = [b'{"n":%d}' % i for i in range(5)]
    data = b"".join(encode_line(p) for p in payloads)
    assert decode(data).payloads == payloads and decode(data).bad == 0
    last_start = len(data) - len(encode_line(payloads[-1]))
    for cut in range(last_start + 1, len(data)):  # every prefix that tears the last line
        d = decode(data[:cut])
        assert d.payloads == payloads[:-1] and d.bad == 1 and not d.corrupt, cut


def test_a_bad_line_before_good_ones_is_corruption() -> None:
    good = [encode_line(b'{"n":%d}' % i) for i in range(3)]
    flipped = bytearray(good[1])
    flipped[12] ^= 0x01
    d = decode(good[0] + bytes(flipped) + good[2])
    assert d.payloads == [b'{"n":0}', b'{"n":2}'] and d.bad == 1 and d.corrupt
    reserved = decode(good[0] + b"\0" * 40)  # the space reserved after the last line is not a line
    assert reserved.payloads == [b'{"n":0}'] and reserved.bad == 0 and not reserved.corrupt
    torn = decode(good[0] + good[1][:7] + b"\0" * 40)  # a line cut short by a crash, then the reserved zeros
    assert torn.payloads == [b'{"n":0}'] and torn.bad == 1 and not torn.corrupt
    hole = decode(good[0] + b"\0" * 40 + good[1] + good[2])  # a power cut kept a later block, lost an earlier one
    assert hole.payloads == [b'{"n":0}', b'{"n":2}'] and hole.bad == 1 and hole.corrupt


def test_dropping_the_reserved_zeros_is_exactly_rstrip() -> None:
    """The fast path (the zeros start right after the last line) and the slow one (a torn line) agree with
    ``bytes.rstrip(b"\\0")`` on every shape a segment can have, a mebibyte of reserve included."""
    rng = random.Random(7)
    lines = [encode_line(b'{"n":%d}' % i) for i in range(5)]
    shapes = [b"", b"\n", b"\0", b"\n\0", bytes(1 << 20), lines[0] + bytes(1 << 20), b"".join(lines),
              b"".join(lines)[:-1], lines[0] + lines[1][:5], lines[0] + b"ab\0\0c" + bytes(9), lines[0] + b"\0x\0",
              bytes(7) + lines[0], lines[0] + bytes(30) + lines[1] + bytes(3)]
    for _ in range(300):
        shapes.append(bytes(rng.choice(b"\0\0\0\na") for _ in range(rng.randrange(12))))
    for data in shapes:
        assert written_part(data) == data.rstrip(b"\0"), data[-40:]


async def test_group_commit_shares_fsyncs_among_concurrent_appends(tmp_path: Path) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync)
    await journal.start()
    n = 3000
    await asyncio.gather(*(journal.append(b'{"i":%d}' % i) for i in range(n)))
    await journal.close()
    assert journal.stats.lines == n
    assert fsync.calls <= journal.stats.batches + journal.stats.segments_created  # data fsyncs + directory fsyncs
    assert journal.stats.batches < n / 20, journal.stats  # far fewer fsyncs than events
    [segment] = journal.segments()
    assert sorted(Journal.read(segment).payloads) == sorted(b'{"i":%d}' % i for i in range(n))


async def test_sequential_appends_each_wait_for_their_own_fsync(tmp_path: Path) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync)
    await journal.start()
    for i in range(5):
        await journal.append(b"%d" % i)
        assert journal.stats.lines == i + 1  # durable when append returned
    await journal.close()
    assert journal.stats.batches == 5


@pytest.mark.parametrize("sync", ["always", "interval"])
async def test_segments_rotate_by_size_and_numbering_continues_after_restart(tmp_path: Path, sync: SyncMode) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", max_segment_bytes=200, fsync=fsync, sync=sync, sync_interval_s=0.01)
    await journal.start()
    for i in range(20):
        await journal.append(b'{"payload":"%040d"}' % i)
    sealed = await journal.seal()
    await journal.close()
    # 64-byte lines: a segment closes after the write that takes it to 200 bytes or more, i.e. after 4 lines
    assert [int(p.stem) for p in sealed] == [1, 2, 3, 4, 5]
    assert [len(Journal.read(p).payloads) for p in sealed] == [4] * 5
    assert fsync.calls >= 5 + 5  # a directory fsync per new segment and at least one data fsync per segment
    again = Journal(tmp_path / "j", sync=sync)
    await again.start()
    await again.append(b"{}")
    segments = await again.seal()
    await again.close()
    assert int(segments[-1].stem) == 6 and sum(len(Journal.read(p).payloads) for p in segments) == 21


class ThreadRecordingFsync(CountingFsync):
    """Counts fsyncs per thread; ``delay_s`` makes each one that slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.threads: list[str] = []

    def __call__(self, fd: int) -> None:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay_s)
        super().__call__(fd)


async def test_a_lone_append_is_fsynced_inline_and_a_group_in_the_journal_thread(tmp_path: Path) -> None:
    fsync = ThreadRecordingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync)
    await journal.start()
    await journal.append(b'{"n":0}', alone=True)  # first a new segment (its directory fsync) and its data fsync
    loop_thread = threading.current_thread().name
    assert fsync.threads == [loop_thread, loop_thread]  # the lone append: no thread hop
    await journal.append(b'{"n":1}')  # not said to be alone: a batch of one, in the journal thread
    assert fsync.threads[2].startswith("ledger-journal") and journal.stats.inline_batches == 1
    # concurrent appends all saying they are alone (a caller's view can be stale): one of them inline at most per
    # turn of the loop, the rest share fsyncs in the journal thread
    await asyncio.gather(*(journal.append(b'{"n":%d}' % i, alone=True) for i in range(2, 40)))
    await journal.close()
    assert journal.stats.inline_batches == 2 and journal.stats.batches < 10 and journal.stats.lines == 40
    assert sorted(Journal.read(journal.segments()[0]).payloads) == sorted(b'{"n":%d}' % i for i in range(40))


async def test_when_fsyncs_are_slow_even_a_lone_append_goes_to_the_journal_thread(tmp_path: Path) -> None:
    fsync = ThreadRecordingFsync(delay_s=0.01)  # a busy disk: 10 ms per fsync, over the 2 ms inline bound
    journal = Journal(tmp_path / "j", fsync=fsync)
    await journal.start()
    for i in range(12):
        await journal.append(b'{"n":%d}' % i, alone=True)
    await journal.close()
    assert journal.fsync_avg_s > journal.inline_fsync_below_s
    # the first appends ran inline (no measurement yet); once the average passed 2 ms, none did
    assert 1 <= journal.stats.inline_batches < 4, journal.stats
    assert fsync.threads[-1].startswith("ledger-journal")
    fast = Journal(tmp_path / "k", fsync=ThreadRecordingFsync(), inline_fsync_below_s=0)  # 0: never inline
    await fast.start()
    await fast.append(b"{}", alone=True)
    await fast.close()
    assert fast.stats.inline_batches == 0


async def test_segments_reserve_space_ahead_and_read_back_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", preallocate_bytes=4096)
    await journal.start()
    lines = [b'{"n":%d,"pad":"%0200d"}' % (i, i) for i in range(40)]  # ~10 KB: the reservation grows twice
    for line in lines:
        await journal.append(line)
    [segment] = journal.segments()
    assert segment.stat().st_size == 3 * 4096  # reserved in 4 KiB steps, zeros after the last line
    assert Journal.read(segment).payloads == lines and Journal.read(segment).bad == 0
    written = sum(len(encode_line(line)) for line in lines)
    await journal.close()  # a closed segment gives its reserve back: the flusher reads lines, not zeros
    assert segment.stat().st_size == written and Journal.read(segment).payloads == lines
    plain = Journal(tmp_path / "k", preallocate_bytes=0)  # 0: the file is exactly what was written
    await plain.start()
    await plain.append(lines[0])
    [segment] = plain.segments()
    assert segment.stat().st_size == len(encode_line(lines[0]))
    await plain.close()


async def test_one_process_per_directory(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j")
    first.open()
    with pytest.raises(RuntimeError, match="another process"):
        Journal(tmp_path / "j").open()
    await first.close()
    Journal(tmp_path / "j").open()


async def test_a_failed_write_fails_its_callers_and_the_next_batch_starts_a_new_segment(tmp_path: Path) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync)
    await journal.start()
    await journal.append(b'{"ok":1}')
    fsync.fail = 1
    with pytest.raises(OSError, match="journal write failed"):
        await journal.append(b'{"lost":1}')
    await journal.append(b'{"ok":2}')
    segments = await journal.seal()
    await journal.close()
    assert len(segments) == 2
    assert Journal.read(segments[1]).payloads == [b'{"ok":2}']


async def test_a_cancelled_caller_does_not_cancel_the_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", inline_fsync_below_s=0)  # every append waits for a batch
    await journal.start()
    tasks = [asyncio.create_task(journal.append(b"%d" % i)) for i in range(50)]
    await asyncio.sleep(0)  # all queued
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    segments = await journal.seal()
    await journal.close()
    assert isinstance(results[0], asyncio.CancelledError) and all(r is None for r in results[1:])
    assert len(Journal.read(segments[0]).payloads) == 50  # the cancelled caller's line was written all the same


async def test_append_needs_a_running_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    with pytest.raises(RuntimeError, match="not running"):
        await journal.append(b"{}")


async def test_appends_are_never_stranded_when_the_writer_is_stopped(tmp_path: Path) -> None:
    """The writer cancelled (as a test harness or a shutdown cancels every task) while appends wait on their batch:
    they fail at once instead of waiting forever, and later appends are refused."""
    journal = Journal(tmp_path / "j", inline_fsync_below_s=0)
    await journal.start()
    assert journal._task is not None
    waiting = [asyncio.create_task(journal.append(b"%d" % i)) for i in range(3)]
    await asyncio.sleep(0)  # queued on the batch; the writer is woken but has not taken it yet
    journal._task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=5)
    assert all(isinstance(r, OSError) for r in results), results
    with pytest.raises(RuntimeError, match="not running"):
        await asyncio.wait_for(journal.append(b"late"), timeout=5)


# --- sync="interval": written before append returns, fsynced in the background ------------------------------------
async def test_interval_append_returns_once_written_and_one_fsync_covers_the_interval(tmp_path: Path) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync, sync="interval", sync_interval_s=0.05)
    await journal.start()
    for i in range(100):
        await journal.append(b'{"i":%d}' % i)
    [segment] = journal.segments()
    # in the file (the page cache) already: another reader sees every line before any data fsync ran
    assert Journal.read(segment).payloads == [b'{"i":%d}' % i for i in range(100)]
    assert fsync.calls == 1  # only the new segment's directory entry so far
    await asyncio.sleep(0.2)
    assert fsync.calls == 2 and journal.stats.batches == 1  # one fsync for all 100 lines
    await asyncio.sleep(0.1)
    assert fsync.calls == 2  # nothing new written: no fsync
    await journal.append(b'{"i":100}')
    await journal.close()
    assert fsync.calls == 3  # close fsyncs what the interval had not yet covered


async def test_interval_mode_a_failed_fsync_retires_the_segment_and_keeps_its_lines(tmp_path: Path) -> None:
    fsync = CountingFsync()
    journal = Journal(tmp_path / "j", fsync=fsync, sync="interval", sync_interval_s=0.01)
    await journal.start()
    await journal.append(b'{"n":1}')
    fsync.fail = 1
    await asyncio.sleep(0.1)  # the background fsync fails: logged, that segment is never written again
    await journal.append(b'{"n":2}')
    segments = await journal.seal()
    await journal.close()
    assert [Journal.read(p).payloads for p in segments] == [[b'{"n":1}'], [b'{"n":2}']]


def test_sync_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync must be"):
        Journal(tmp_path / "j", sync="sometimes")  # type: ignore[arg-type]


async def test_interval_mode_seal_never_hands_over_the_segment_appends_are_writing(tmp_path: Path) -> None:
    """Appends go on while seal() waits for its fsync; they open a new segment, which must not be sealed (the
    flusher deletes what it is handed). Every line ends in exactly one sealed segment, none is written after."""

    def slow_fsync(fd: int) -> None:
        time.sleep(0.005)
        os.fsync(fd)

    journal = Journal(tmp_path / "j", fsync=slow_fsync, sync="interval", sync_interval_s=0.001)
    await journal.start()
    written: list[bytes] = []
    sealed: dict[Path, int] = {}
    stop = False

    async def producer() -> None:
        n = 0
        while not stop:
            line = b'{"n":%d}' % n
            await journal.append(line)
            written.append(line)
            n += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(producer())
    for _ in range(20):
        for path in await journal.seal():
            if path not in sealed:
                sealed[path] = path.stat().st_size
        await asyncio.sleep(0.002)
    stop = True
    await task
    for path in await journal.seal():
        sealed.setdefault(path, path.stat().st_size)
    await journal.close()
    assert all(path.stat().st_size == size for path, size in sealed.items())  # nothing written after its seal
    lines = [p for path in sorted(sealed) for p in Journal.read(path).payloads]
    assert lines == written and len(sealed) > 2
