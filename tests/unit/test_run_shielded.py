"""``run_shielded``: what ``asyncio.shield`` promises (the work runs to its end whatever happens to the caller), without
a task when the work never has to wait."""

from __future__ import annotations

import asyncio

import pytest

from tenantlm.inference.gate import run_shielded


async def test_work_that_never_waits_runs_on_the_callers_turn_without_a_task() -> None:
    tasks_before = len(asyncio.all_tasks())
    seen: list[int] = []

    async def work() -> str:
        seen.append(len(asyncio.all_tasks()))
        return "done"

    assert await run_shielded(work()) == "done"
    assert seen == [tasks_before]  # no task was made to run it


async def test_work_that_waits_returns_its_result_and_raises_its_errors() -> None:
    async def sleeps() -> int:
        await asyncio.sleep(0)  # a bare turn of the loop
        await asyncio.sleep(0.01)  # a future
        return 7

    async def fails_later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("later")

    async def fails_at_once() -> None:
        raise KeyError("now")

    assert await run_shielded(sleeps()) == 7
    with pytest.raises(ValueError, match="later"):
        await run_shielded(fails_later())
    with pytest.raises(KeyError, match="now"):
        await run_shielded(fails_at_once())


async def test_a_cancelled_caller_leaves_the_work_running_to_its_end() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def work() -> None:
        started.set()
        await release.wait()
        await asyncio.sleep(0)
        finished.append("all of it")

    caller = asyncio.ensure_future(run_shielded(work()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == []
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert finished == ["all of it"]


async def test_the_work_reads_the_result_or_error_of_what_it_waited_for() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[int] = loop.create_future()
    bad: asyncio.Future[int] = loop.create_future()

    async def work() -> tuple[int, str]:
        value = await ok
        try:
            await bad
        except RuntimeError as exc:
            return value, str(exc)
        return value, "no error"

    loop.call_later(0.01, ok.set_result, 5)
    loop.call_later(0.02, bad.set_exception, RuntimeError("upstream gone"))
    assert await run_shielded(work()) == (5, "upstream gone")


async def test_when_the_loop_cancels_the_work_itself_its_finally_blocks_run() -> None:
    """Shutting down cancels every task, the one carrying the suspended work too: the cancellation is thrown into
    the work, as a task would, so what it holds is released."""
    released: list[str] = []
    parked = asyncio.Event()

    async def work() -> None:
        try:
            parked.set()
            await asyncio.Event().wait()
        finally:
            released.append("slot")

    caller = asyncio.ensure_future(run_shielded(work()))
    await parked.wait()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(5):
        await asyncio.sleep(0)
    assert released == ["slot"]
