"""``Passage.finish(respond=...)``: the answer goes out once the usage is on disk and before the settlement, the
settlement and the slot's release happen on every path, and nothing is answered when the usage could not be
written (invariant 4: durable before acknowledged)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from tenantlm.inference.gate import Passage
from tenantlm.providers.base import Attempt, Usage


class Rig:
    def __init__(self, *, ledger_fails: bool = False) -> None:
        self.steps: list[str] = []
        self.recorded: list[Any] = []
        self.released = 0
        self.ledger_fails = ledger_fails
        config = SimpleNamespace(name="m", region="eu", input_price_per_1m=1.0, output_price_per_1m=2.0)
        self.gate = SimpleNamespace(ledger=self, admission=self, open=1,
                                    settings=SimpleNamespace(model=lambda name: None))
        self.passage = Passage(gate=self.gate, ctx=SimpleNamespace(tenant_id="ten_a", key_id="key_a"),  # type: ignore[arg-type]
                               model=SimpleNamespace(name="m", config=config), end_user=None,  # type: ignore[arg-type]
                               uid="u1", decision=SimpleNamespace(ticket="ticket-1"),  # type: ignore[arg-type]
                               grant=SimpleNamespace(release=self.release), started=0.0,  # type: ignore[arg-type]
                               prompt_estimate=3)
        self.passage.on_attempt(Attempt("up", "up-model", 1, "ok", 200, Usage(3, 4), duration_s=0.01))

    async def record(self, event: Any, *, alone: bool = False) -> None:
        await asyncio.sleep(0)  # a real write may wait for the journal's thread
        if self.ledger_fails:
            raise OSError("the usage journal write failed")
        self.steps.append("record")
        self.recorded.append(event)

    async def settle(self, ticket: str, *, tokens: int, cost_usd: float, final: bool) -> Any:
        self.steps.append(f"settle {ticket} {tokens}")
        return SimpleNamespace(budget_exhausted=False)

    def release(self) -> None:
        self.released += 1


async def test_the_answer_goes_out_after_the_usage_is_written_and_before_the_settlement() -> None:
    rig = Rig()

    async def respond() -> None:
        assert [e.id for e in rig.recorded] == ["u1:1"], "answered before the usage was on disk"
        rig.steps.append("respond")

    await rig.passage.finish(status="ok", respond=respond)
    assert rig.steps == ["record", "respond", "settle ticket-1 7"]
    assert rig.released == 1 and rig.gate.open == 0
    assert await rig.passage.finish(status="error") is None and rig.steps[-1] == "settle ticket-1 7"  # runs once


async def test_a_failing_answer_still_settles_and_frees_the_slot() -> None:
    rig = Rig()

    async def respond() -> None:
        raise RuntimeError("the client's socket broke")

    with pytest.raises(RuntimeError, match="socket broke"):
        await rig.passage.finish(status="ok", respond=respond)
    assert rig.steps == ["record", "settle ticket-1 7"] and rig.released == 1 and rig.gate.open == 0


async def test_nothing_is_answered_when_the_usage_could_not_be_written() -> None:
    rig = Rig(ledger_fails=True)
    answered = []

    async def respond() -> None:
        answered.append(True)

    with pytest.raises(OSError, match="journal write failed"):
        await rig.passage.finish(status="ok", respond=respond)
    assert answered == [] and rig.released == 1 and rig.gate.open == 0


async def test_a_cancelled_caller_still_gets_the_answer_sent_and_the_request_settled() -> None:
    rig = Rig()
    sent = asyncio.Event()

    async def respond() -> None:
        rig.steps.append("respond")
        sent.set()

    task = asyncio.ensure_future(rig.passage.finish(status="ok", respond=respond))
    await asyncio.sleep(0)  # the finish is now waiting on the ledger write
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(sent.wait(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert rig.steps == ["record", "respond", "settle ticket-1 7"] and rig.released == 1
