"""Test doubles for the scheduler tests: a fake upstream driven by hand, a manual clock, a recording observer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tenantlm.errors import RateLimited
from tenantlm.scheduling import FairScheduler, Grant, RefusalReason


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingObserver:
    depths: list[tuple[str, int]] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)
    refusals: list[tuple[str, RefusalReason]] = field(default_factory=list)

    def queued(self, tenant_id: str, depth: int) -> None:
        self.depths.append((tenant_id, depth))

    def waited(self, tenant_id: str, seconds: float) -> None:
        self.waits.append((tenant_id, seconds))

    def refused(self, tenant_id: str, reason: RefusalReason) -> None:
        self.refusals.append((tenant_id, reason))


@dataclass(eq=False)
class Call:
    """One request through the fake upstream: it holds its slot until the test calls ``finish``."""

    tenant: str
    output_tokens: int = 0
    grant: Grant | None = None
    error: BaseException | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class FakeUpstream:
    def __init__(self, scheduler: FairScheduler) -> None:
        self.scheduler = scheduler
        self.order: list[str] = []  # tenants in the order they were granted
        self.running: list[Call] = []

    def send(self, tenant: str, *, weight: float = 1.0, priority: int = 0, input_tokens: int = 10,
             max_wait_s: float = 60.0, reserved_share: float = 0.0) -> Call:  # fmt: skip
        call = Call(tenant)
        slot = self.scheduler.slot(tenant_id=tenant, weight=weight, priority=priority, input_tokens=input_tokens,
                                   max_wait_s=max_wait_s, reserved_share=reserved_share)  # fmt: skip
        call.task = asyncio.create_task(self._run(call, slot))
        return call

    async def _run(self, call: Call, slot: object) -> None:
        try:
            async with slot as grant:  # type: ignore[attr-defined]
                call.grant = grant
                self.order.append(call.tenant)
                self.running.append(call)
                try:
                    await call.done.wait()
                    grant.charge_output(call.output_tokens)
                finally:
                    self.running.remove(call)
        except RateLimited as e:
            call.error = e

    async def finish(self, call: Call, output_tokens: int = 0) -> None:
        call.output_tokens = output_tokens
        call.done.set()
        await settle()

    async def finish_first(self, output_tokens: int = 0) -> Call:
        call = self.running[0]
        await self.finish(call, output_tokens)
        return call


async def settle(rounds: int = 5) -> None:
    """Lets every ready task run until nothing moves (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
