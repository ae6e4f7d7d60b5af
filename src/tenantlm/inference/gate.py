"""The admission path around one upstream call: limits and budgets, the fair scheduler, and the usage ledger.

    passage = await gate.enter(ctx=ctx, model=model, end_user=user, prompt=messages, max_tokens=n)
    try:
        ... call the provider with on_attempt=passage.on_attempt; while streaming: await passage.progress(n) ...
        await passage.finish(status="ok")          # meters every attempt, settles, frees the slot
    except BaseException:
        await passage.finish(status="error")       # idempotent: the first call wins

Order: admission first (cheap, refuses at once with 429 and the rate headers), then the scheduler (waits for a
slot of the model's capacity in weighted-fair order, or 429 after the tenant's max queue wait). On every path the
scheduler slot and the concurrency reservation are released exactly once, and every upstream attempt is written
to the ledger (durably, before the caller acknowledges the request) with an id built from a server-generated
request uid — never from the client's ``x-request-id``, which a client could reuse to make real attempts look like
replays.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from tenantlm.admission.models import AdmissionRequest, Decision, Limits, SettleResult, Subject
from tenantlm.admission.service import AdmissionService, reservation_tokens
from tenantlm.errors import InvalidRequest, RateLimited
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.models import PromptUse, UsageEvent, event_id
from tenantlm.metering.pricing import cost_of
from tenantlm.providers.base import Attempt
from tenantlm.scheduling.registry import SchedulerRegistry
from tenantlm.scheduling.scheduler import Grant
from tenantlm.settings import Settings
from tenantlm.tenancy.catalog import ResolvedModel
from tenantlm.tenancy.limits import SubLimits, TenantLimits, sub_limits
from tenantlm.tenancy.limits_service import LimitsService
from tenantlm.tenancy.models import TenantContext
from tenantlm.tokens import counter_for, estimate_prompt_tokens

log = logging.getLogger("tenantlm.gate")
T = TypeVar("T")
SETTLE_EVERY_TOKENS = 32  # while streaming, budgets are charged in steps of this many tokens


class BudgetCut(RateLimited):
    """A budget reached zero while a stream was running: the stream ends with this error event."""

    type = "insufficient_quota"
    code = "insufficient_quota"


@functools.lru_cache(maxsize=4096)
def _limits(sub: SubLimits | TenantLimits) -> Limits:
    """The admission port's view of a level's limits (cached: the same few limit sets recur on every request)."""
    return Limits(rpm=sub.rpm, tpm=sub.tpm, max_concurrency=sub.max_concurrency,
                  daily_token_budget=sub.daily_token_budget, monthly_token_budget=sub.monthly_token_budget,
                  monthly_cost_budget_usd=sub.monthly_cost_budget_usd)


def _key_limits(values: dict[str, Any] | None) -> Limits:
    if not values:
        return _limits(_NO_SUB_LIMITS)
    try:
        return _limits_of_items(tuple(sorted(values.items())))
    except TypeError:  # an unhashable value: no cache
        return _limits(sub_limits(values))


@functools.lru_cache(maxsize=4096)
def _limits_of_items(items: tuple[tuple[str, Any], ...]) -> Limits:
    return _limits(sub_limits(dict(items)))


_NO_SUB_LIMITS = sub_limits(None)


def _uids() -> Callable[[], str]:
    """Request uids: 128 random bits as 32 hex digits. Random rather than a counter, which would let a tenant
    read the whole deployment's request rate off the usage ids it is shown."""
    return lambda: os.urandom(16).hex()


@dataclass
class Passage:
    """One request's way through the gate. Created by ``Gate.enter``; ``finish`` must be called once it ends."""

    gate: Gate
    ctx: TenantContext
    model: ResolvedModel
    end_user: str | None
    uid: str
    decision: Decision
    grant: Grant | None
    started: float
    prompt_estimate: int
    attempts: list[Attempt] = field(default_factory=list)
    first_token_at: float | None = None
    charged_tokens: int = 0
    streamed: int = 0
    price_factor: float = 1.0  # the share of the catalog price charged (a response-cache hit: the operator's factor)
    prompt_use: PromptUse | None = None  # the prompt template the request was rendered from
    history_items: int | None = None  # conversation items sent as history (Responses)
    _finished: bool = False

    @property
    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers, and the id under which this request's usage is metered (the ledger's
        event ids are ``<id>:<attempt>``), so a customer can reconcile a bill with its own logs."""
        return {**self.decision.headers(), "x-tenantlm-usage-id": self.uid}

    def on_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    async def progress(self, completion_tokens: int) -> None:
        """While streaming: ``completion_tokens`` so far. Charges the scheduler as tokens flow and the budgets every
        few tokens; raises ``BudgetCut`` when a budget is used up."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        delta = completion_tokens - self.streamed
        if delta <= 0:
            return
        self.streamed = completion_tokens
        if self.grant is not None:
            self.grant.charge_output(delta)
        ticket = self.decision.ticket
        if ticket is None or completion_tokens - self.charged_tokens < SETTLE_EVERY_TOKENS:
            return
        self.charged_tokens = completion_tokens
        prompt = self.prompt_estimate
        result = await self.gate.admission.settle(ticket, tokens=prompt + completion_tokens, final=False,
                                                  cost_usd=self._cost(prompt, completion_tokens))
        if result.budget_exhausted:
            raise BudgetCut("This request used up the remaining budget; the response was cut short. Raise the "
                            "budget or wait for the next period.")

    def _cost(self, prompt: int, completion: int) -> float:
        return cost_of(self.model.config, prompt, completion) * self.price_factor

    async def finish(self, *, status: str, respond: Callable[[], Awaitable[None]] | None = None
                     ) -> SettleResult | None:
        """Meter every attempt, settle the reservation with the actual usage, free the slot. Runs once; shielded
        from cancellation so a client that goes away still gets metered and releases what it held.

        ``respond``: sends the answer to the client. It is called once the usage events are on disk (so the request
        may be acknowledged) and before the settlement, which then runs while the answer travels: at one connection
        the client's next request no longer waits for it. The settlement runs even if ``respond`` raises. With the
        in-process limiter nothing can run in between (the settlement never waits); with Redis the settle script is
        written to Redis before anything else can run here, ahead of any request the answer provokes."""
        if self._finished:
            return None
        self._finished = True
        return await run_shielded(self._finish(status, respond))

    async def _finish(self, status: str, respond: Callable[[], Awaitable[None]] | None) -> SettleResult | None:
        try:
            events = self._events(status)
            for event in events:  # alone: no other passage open, so no other event could share the fsync
                await self.gate.ledger.record(event, alone=self.gate.open == 1)
            try:
                if respond is not None:
                    await respond()
            finally:
                settled = await self._settle(events)
            return settled
        finally:
            self.gate.open -= 1
            if self.grant is not None:
                self.grant.release()

    async def _settle(self, events: list[UsageEvent]) -> SettleResult | None:
        ticket = self.decision.ticket
        if ticket is None:
            return None
        if not events:
            await self.gate.admission.release(ticket)
            return None
        tokens = sum(e.prompt_tokens + e.completion_tokens for e in events)
        cost = sum(e.cost_usd for e in events)
        return await self.gate.admission.settle(ticket, tokens=tokens, cost_usd=cost, final=True)

    def _events(self, status: str) -> list[UsageEvent]:
        now = time.time()
        ttft = None if self.first_token_at is None else (self.first_token_at - self.started) * 1000
        out = []
        use = self.prompt_use
        for n, a in enumerate(self.attempts, start=1):
            config = self.gate.settings.model(a.catalog_model or self.model.config.name) or self.model.config
            usage = a.usage
            prompt = usage.prompt_tokens if usage else 0
            completion = usage.completion_tokens if usage else 0
            state = _status(a.outcome)
            if n == len(self.attempts) and (status in {"cut", "cancelled"} or (a.outcome == "ok" and status != "ok")):
                state = _status(status)  # how the request ended, for the attempt that served it
            out.append(UsageEvent(
                id=event_id(self.uid, n), tenant_id=self.ctx.tenant_id, key_id=self.ctx.key_id,
                end_user=self.end_user, model=self.model.name, provider=a.provider, upstream_model=a.model,
                region=config.region, prompt_tokens=prompt, completion_tokens=completion,
                cached_tokens=usage.cached_tokens if usage else 0, latency_ms=round(a.duration_s * 1000, 3),
                ttft_ms=None if ttft is None else round(ttft, 3), status=state,
                http_status=a.status or (200 if a.outcome == "ok" else 502),
                cost_usd=cost_of(config, prompt, completion) * self.price_factor,
                created_at=now, prompt_id=None if use is None else use.id,
                prompt_version=None if use is None else use.version,
                prompt_override_version=None if use is None else use.override_version,
                history_items=self.history_items))
        return out


@contextlib.asynccontextmanager
async def finishing(passage: Passage) -> AsyncIterator[None]:
    """Finish the passage however the provider call ends: ok, error, or cancelled (the client went away)."""
    try:
        yield
    except asyncio.CancelledError:
        await passage.finish(status="cancelled")
        raise
    except BaseException:
        await passage.finish(status="error")
        raise
    await passage.finish(status="ok")


async def run_shielded(coro: Coroutine[Any, Any, T]) -> T:
    """``await asyncio.shield(coro)`` without a task when ``coro`` never has to wait.

    ``coro`` is stepped at once, on the caller's turn of the event loop. When it ends in that step (a passage's
    finish, as a rule: the journal commits inline and the in-process limiter settles without I/O) its result is
    returned, and no cancellation can have reached it: none is delivered between two awaits that do not suspend.
    Otherwise what is left of it runs in a task the caller awaits through ``asyncio.shield``, so a caller cancelled
    from here on leaves it running to the end, as before. The task asyncio.shield would create, and the two turns
    of the loop it takes to start and to report back, were a measurable share of a request's time on the hot path.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    return await asyncio.shield(asyncio.ensure_future(_Rest(coro, waiting_on)))


class _Rest(collections.abc.Coroutine[Any, Any, T]):
    """The rest of a coroutine already stepped once, for a task to run: the task's first step gets what the
    coroutine is waiting on (as if the task had taken that step itself); every later step, and a cancellation even
    before the first, goes to the coroutine, so its ``await``, its ``finally`` blocks and its result are the task's
    exactly as if the task had run it from the start."""

    def __init__(self, coro: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on: Any = waiting_on
        self._handed = False

    def send(self, value: Any) -> Any:
        if not self._handed:
            self._handed = True
            return self._waiting_on
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._handed = True
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("the rest of a coroutine is run by a task, not awaited")


def _status(state: str) -> str:
    return state if state in {"ok", "error", "cancelled", "cut"} else "error"


# Token and cost dimensions: a request larger than one of these limits (not its remainder, the whole of it) can
# never be admitted, however long it waits.
_SIZE_BOUND = frozenset({"tpm", "daily_token_budget", "monthly_token_budget", "monthly_cost_budget_usd"})


def _refusal(decision: Decision, subjects: list[Subject]) -> Exception:
    """What a refused admission raises: its 429 with retry-after and the rate headers, or, when the request alone is
    larger than a non-zero limit (so no retry can help: ``retry_after_s`` is None), a 400 that says to reduce
    ``max_tokens`` (a limit of zero is a tenant cut off, and stays a 429)."""
    limit = next((getattr(s.limits, decision.dimension) for s in subjects if s.level == decision.level), None) \
        if decision.dimension is not None else None
    if decision.retry_after_s is None and decision.dimension in _SIZE_BOUND and limit:
        return InvalidRequest(decision.message, param="max_tokens", code="request_too_large")
    return decision.error()


class Gate:
    def __init__(self, *, settings: Settings, limits: LimitsService, admission: AdmissionService,
                 schedulers: SchedulerRegistry, ledger: Ledger, uid: Callable[[], str] | None = None
                 ) -> None:
        self.settings = settings
        self.limits = limits
        self.admission = admission
        self.schedulers = schedulers
        self.ledger = ledger
        self.uid = uid or _uids()
        self.open = 0  # passages entered and not yet finished

    async def enter(self, *, ctx: TenantContext, model: ResolvedModel, end_user: str | None,
                    prompt: Any, max_tokens: int | None, output: bool = True, schedule: bool = True,
                    price_factor: float = 1.0, prompt_use: PromptUse | None = None,
                    history_items: int | None = None) -> Passage:
        """Admit (429 on refusal), then wait for a scheduler slot (429 on queue full / max wait). ``schedule``
        False: no slot (an answer that calls no model, such as a response-cache hit, is admitted and metered only).
        ``price_factor``: the share of the catalog price reserved and charged (a response-cache hit's).
        ``prompt_use``: the prompt template the request was rendered from, ``history_items``: how many conversation
        items went with it as history (both on its usage events)."""
        eff = await self.limits.effective(ctx.tenant)
        tl = eff.tenant
        prompt_tokens = estimate_prompt_tokens(prompt, counter_for(model.config.tokenizer))
        out_tokens = (max_tokens if max_tokens is not None else tl.default_max_tokens) if output else 0
        tokens = reservation_tokens(prompt_tokens=prompt_tokens, max_tokens=out_tokens, default_max_tokens=0)
        uid = self.uid()
        subjects = [Subject(level="key", id=ctx.key_id, limits=_key_limits(ctx.key_limits))]
        if end_user is not None and not eff.end_user.empty:
            subjects.append(Subject(level="end_user", id=f"{ctx.tenant_id}/{end_user}",
                                    limits=_limits(eff.end_user)))
        subjects.append(Subject(level="tenant", id=ctx.tenant_id, limits=_limits(tl)))
        cost = cost_of(model.config, prompt_tokens, out_tokens) * price_factor
        decision = await self.admission.admit(AdmissionRequest(
            tenant_id=ctx.tenant_id, request_id=uid, subjects=tuple(subjects), tokens=tokens, cost_usd=cost))
        if not decision.admitted:
            raise _refusal(decision, subjects)
        passage = Passage(gate=self, ctx=ctx, model=model, end_user=end_user, uid=uid, decision=decision,
                          grant=None, started=time.monotonic(), prompt_estimate=prompt_tokens,
                          price_factor=price_factor, prompt_use=prompt_use, history_items=history_items)
        self.open += 1
        if not schedule:
            return passage
        try:
            passage.grant = await self._slot(ctx, model, tl, prompt_tokens)
        except BaseException as exc:
            if isinstance(exc, RateLimited):
                exc.headers.update(decision.headers())
            await passage.finish(status="error")
            raise
        return passage

    async def _slot(self, ctx: TenantContext, model: ResolvedModel, tl: TenantLimits, prompt_tokens: int
                    ) -> Grant | None:
        try:
            scheduler = self.schedulers.get(model.pool)
        except KeyError:
            return None
        return await scheduler.slot(tenant_id=ctx.tenant_id, weight=tl.weight, priority=tl.priority,
                                    input_tokens=prompt_tokens, max_wait_s=tl.max_queue_wait_s,
                                    reserved_share=ctx.tenant.reserved_share or 0.0).__aenter__()
