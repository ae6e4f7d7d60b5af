"""The asyncio fair scheduler of one upstream model: a capacity (requests in flight), weighted VTC queues behind it.

Usage, on the request path (after admission, before the provider call)::

    async with scheduler.slot(tenant_id=t, weight=w, priority=p, input_tokens=n, max_wait_s=30.0) as grant:
        async for chunk in provider.stream(...):
            grant.charge_output(chunk.new_tokens)      # a delta: tokens generated since the last call
            yield chunk

``slot()`` waits for the request's turn (see :mod:`tenantlm.scheduling.vtc` for the rule) and raises
:class:`QueueFull` at once if the tenant's queue or the model's queue is at its limit, or :class:`QueueTimeout` after
``max_wait_s`` in the queue; both are 429 with a retry-after. Leaving the block releases the slot exactly once, on
every path: normal exit, exception, or cancellation of the task (client disconnect). A task cancelled while it
waits leaves the queue; one cancelled just after it was granted (before it resumed) gives the slot back.

Fast path: when a slot is free and nothing waits, ``slot()`` grants without creating a future or yielding to the
event loop (bench/fairness.py measures it). The counters are charged on the fast path too, so a tenant that used
the model while it was idle has paid for that use when contention starts.

Headroom (``headroom``, 0 here; the server's registry gives a model without one ``default_headroom``): slots are never
taken back from a running request, so with every slot busy a newcomer waits for the next one to free, however fair the
order (about service time / capacity on average, several times that at the tail). With ``headroom = h``, the last h free
slots go only to newcomers, tenants with fewer than capacity - h requests in flight: an arrival whose tenant has nothing
waiting (and nothing of a higher priority waits) starts in one at once, and a waiting request takes one only if it is
its tenant's only request waiting. So a flooding tenant fills at most capacity - h slots, and a light tenant arriving
next to it finds one free. The price: while a flood runs, up to h slots stay idle (h / capacity of the upstream's
throughput). At most capacity - 1 slots are held back.

Reserved shares (``slot(reserved_share=s)``, a silo tenant's option): ``floor(s * capacity)`` slots are the tenant's
own. While it uses fewer, the rest of them stay free for it: other tenants fill at most capacity minus the unused
reserved slots (never less than one), and a request of the tenant within its reservation starts at once, ahead of
the queue. Beyond its reservation it shares the rest like anyone else. A share is known from the tenant's first
request (each call says it; 0 removes it); shares that add up to more than the capacity are honoured only as far as
it goes. The price: reserved slots idle while their tenant does not use them.

Timing: ``max_wait_s`` is enforced with the event loop's timer (``loop.call_later``); the injected ``clock`` times
waits (observer, QueueTimeout.waited_s) and service (the mean service time behind retry-after estimates).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from tenantlm.scheduling.models import (
    NullObserver,
    QueueFull,
    QueueTimeout,
    RefusalReason,
    SchedulerObserver,
    SchedulerStats,
    TenantStats,
)
from tenantlm.scheduling.vtc import Flow, Request, VirtualTokenCounter

_QUEUED, _GRANTED, _TIMED_OUT, _ABANDONED = range(4)
_DEFAULT_SERVICE_S = 1.0  # retry-after estimates before the first request has finished
_EWMA = 0.1


class Grant:
    """A held slot. ``charge_output`` charges streamed output tokens; ``release`` is idempotent."""

    __slots__ = ("_flow", "_released", "_scheduler", "_weight", "granted_at", "priority", "tenant_id", "waited_s")

    def __init__(self, scheduler: FairScheduler, ticket: _Ticket, flow: Flow, granted_at: float,
                 waited_s: float) -> None:  # fmt: skip
        self._scheduler = scheduler
        self._flow = flow
        self._weight = ticket.weight
        self._released = False
        self.tenant_id = ticket.tenant_id
        self.priority = ticket.priority
        self.granted_at = granted_at
        self.waited_s = waited_s

    def charge_output(self, tokens: int) -> None:
        """Charges ``tokens`` output tokens generated since the previous call (a delta, not a running total)."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        self._scheduler._vtc.charge_output(self._flow, tokens, self._weight)

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Gives the slot back (the ``async with`` exit does this); later calls do nothing."""
        if not self._released:
            self._released = True
            self._scheduler._release(self)


class _Ticket(Request):
    """One call to ``slot()``: the request, its place in the queue, and the async context manager itself."""

    __slots__ = ("enqueued_at", "future", "grant", "max_wait_s", "scheduler", "state", "timer")

    def __init__(self, scheduler: FairScheduler, tenant_id: str, weight: float, priority: int, input_tokens: int,
                 max_wait_s: float, seq: int) -> None:  # fmt: skip
        Request.__init__(self, tenant_id, weight, priority, input_tokens, seq)
        self.scheduler = scheduler
        self.max_wait_s = max_wait_s
        self.state = _QUEUED
        self.grant: Grant | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.enqueued_at = 0.0
        self.future: asyncio.Future[Grant] | None = None

    async def __aenter__(self) -> Grant:
        if self.grant is not None or self.future is not None:
            raise RuntimeError("a slot can be entered once")
        grant = self.scheduler._grant_now(self)
        if grant is None:
            grant = await self.scheduler._wait(self)
        return grant

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        if self.grant is not None:
            self.grant.release()


class FairScheduler:
    """Weighted fair scheduling of one upstream model's capacity among tenants. One per model and replica."""

    def __init__(self, *, model: str, capacity: int, max_queue_per_tenant: int = 256, max_queue_total: int = 4096,
                 w_in: float = 1.0, w_out: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 observer: SchedulerObserver | None = None, headroom: int = 0) -> None:  # fmt: skip
        _check_capacity(capacity)
        if max_queue_per_tenant < 0 or max_queue_total < 0:
            raise ValueError("queue limits must be >= 0")
        _check_headroom(headroom)
        self.model = model
        self._capacity = capacity
        self._headroom = headroom
        self._in_flight = 0
        self._max_per_tenant = max_queue_per_tenant
        self._max_total = max_queue_total
        self._clock = clock
        self._observer: SchedulerObserver = observer or NullObserver()
        self._vtc: VirtualTokenCounter[_Ticket] = VirtualTokenCounter(w_in=w_in, w_out=w_out)
        self._tenant_queued: dict[str, int] = {}
        self._mean_service_s: float | None = None
        self._seq = itertools.count()
        self._shares: dict[str, float] = {}  # tenant -> reserved share of the capacity
        self._tenant_in_flight: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------------ public
    def slot(self, *, tenant_id: str, weight: float, priority: int, input_tokens: int,
             max_wait_s: float, reserved_share: float = 0.0) -> AbstractAsyncContextManager[Grant]:  # fmt: skip
        """An async context manager that waits for this request's turn and holds a slot while inside it.
        ``reserved_share``: the share of the capacity reserved for this tenant (0: none)."""
        if reserved_share > 0:
            if reserved_share >= 1:
                raise ValueError(f"reserved_share must be < 1, got {reserved_share!r}")
            self._shares[tenant_id] = reserved_share
        elif self._shares.pop(tenant_id, None) is not None:
            self._dispatch()  # its held slots are free for everyone now
        return _Ticket(self, tenant_id, weight, priority, input_tokens, max_wait_s, next(self._seq))

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def reserved_shares(self) -> dict[str, float]:
        """Tenant -> its reserved share of the capacity, as its latest request said."""
        return dict(self._shares)

    @property
    def headroom(self) -> int:
        """Slots held back for newcomers (see the module docstring); at most capacity - 1 apply."""
        return self._headroom

    def set_headroom(self, headroom: int) -> None:
        """Changes the slots held back for newcomers; requests in flight are not affected."""
        _check_headroom(headroom)
        self._headroom = headroom
        self._dispatch()

    def _queue_limit(self, capacity: int) -> int:
        """How many of ``capacity`` slots requests dispatched from the queue may fill."""
        return capacity - min(self._headroom, capacity - 1)

    def _reserved(self, tenant_id: str) -> int:
        share = self._shares.get(tenant_id)
        return int(share * self._capacity) if share else 0

    def _within_reservation(self, tenant_id: str) -> bool:
        return self._tenant_in_flight.get(tenant_id, 0) < self._reserved(tenant_id)

    def _shared_capacity(self, exclude: str | None) -> int:
        """The capacity less the reserved slots their tenants do not use (``exclude``'s own do not count)."""
        if not self._shares:
            return self._capacity
        unused = sum(max(0, self._reserved(t) - self._tenant_in_flight.get(t, 0)) for t in self._shares
                     if t != exclude)
        return max(1, self._capacity - unused)

    def set_capacity(self, capacity: int) -> None:
        """Changes the number of slots. Growing dispatches waiters at once; shrinking lets the requests in flight
        finish and grants nothing more until in-flight is below the new capacity."""
        _check_capacity(capacity)
        self._capacity = capacity
        self._dispatch()

    def stats(self) -> SchedulerStats:
        tenants = tuple(_tenant_stats(f) for f in self._vtc.flows())
        return SchedulerStats(model=self.model, capacity=self._capacity, in_flight=self._in_flight,
                              queued=self._vtc.total_queued, mean_service_s=self._mean_service_s,
                              tenants=tenants)  # fmt: skip

    # ------------------------------------------------------------------------------------------------ granting
    def _grant_now(self, ticket: _Ticket) -> Grant | None:
        """The fast path: a free slot and nobody waiting (or, with headroom, nobody of this tenant or of a higher
        priority waiting). No future, no await."""
        if self._in_flight >= self._capacity:
            return None
        if (self._shares and self._within_reservation(ticket.tenant_id)
                and not self._vtc.depth(ticket.tenant_id, ticket.priority)):
            return self._start_now(ticket)  # its reserved slot is free: others never fill it
        capacity = self._shared_capacity(ticket.tenant_id)
        if self._in_flight >= capacity:
            return None
        limit = self._queue_limit(capacity)
        if self._in_flight >= limit:  # only the headroom is free: for a newcomer
            if (self._vtc.depth(ticket.tenant_id, ticket.priority) or self._vtc.queued_above(ticket.priority)
                    or self._vtc.in_flight(ticket.tenant_id, ticket.priority) >= limit):
                return None
        elif self._vtc.total_queued:
            return None
        return self._start_now(ticket)

    def _start_now(self, ticket: _Ticket) -> Grant:
        if self._vtc.total_queued:
            self._vtc.enqueue(ticket)  # joins at the class's virtual time, like any newcomer, and goes at once
            flow = self._vtc.dispatch(ticket)
        else:
            flow = self._vtc.admit(ticket)
        self._in_flight += 1
        self._count_in(ticket.tenant_id)
        ticket.state = _GRANTED
        grant = ticket.grant = Grant(self, ticket, flow, self._clock(), 0.0)
        self._observer.waited(ticket.tenant_id, 0.0)
        return grant

    async def _wait(self, ticket: _Ticket) -> Grant:
        future = self._enqueue(ticket)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise

    def _enqueue(self, ticket: _Ticket) -> asyncio.Future[Grant]:
        tenant_id = ticket.tenant_id
        depth = self._tenant_queued.get(tenant_id, 0)
        if depth >= self._max_per_tenant:
            raise self._refuse_full(ticket, "tenant_queue_full")
        if self._vtc.total_queued >= self._max_total:
            raise self._refuse_full(ticket, "queue_full")
        if not ticket.max_wait_s > 0:  # 0 (or less): "do not queue me"
            raise self._timeout_error(ticket, 0.0)
        loop = asyncio.get_running_loop()
        future = ticket.future = loop.create_future()
        ticket.enqueued_at = self._clock()
        self._vtc.enqueue(ticket)
        self._set_depth(tenant_id, depth + 1)
        if math.isfinite(ticket.max_wait_s):
            ticket.timer = loop.call_later(ticket.max_wait_s, self._expire, ticket)
        return future

    def _dispatch(self) -> None:
        """Grants waiters, best first, while there are free slots."""
        while self._in_flight < self._capacity:
            ticket = self._reserved_head() if self._shares else None
            if ticket is None:
                capacity = self._shared_capacity(None)
                if self._in_flight >= capacity:
                    return
                limit = self._queue_limit(capacity)
                ticket = self._vtc.head() if self._in_flight < limit else self._vtc.newcomer_head(limit)
                if ticket is None:
                    return
            assert ticket.future is not None
            if ticket.future.cancelled():  # its task was cancelled and has not run its handler yet
                self._unqueue(ticket, _ABANDONED)
                continue
            flow = self._vtc.dispatch(ticket)
            self._dequeued(ticket, _GRANTED)
            self._in_flight += 1
            self._count_in(ticket.tenant_id)
            now = self._clock()
            waited = now - ticket.enqueued_at
            grant = ticket.grant = Grant(self, ticket, flow, now, waited)
            ticket.future.set_result(grant)
            self._observer.waited(ticket.tenant_id, waited)

    def _reserved_head(self) -> _Ticket | None:
        """The best waiting request of a tenant below its reservation (highest priority, then VTC order)."""
        flows = [f for t in self._shares if self._within_reservation(t) for f in self._vtc.waiting_flows(t)]
        if not flows:
            return None
        best = min(flows, key=lambda f: (-f.priority, f.counter, f.queue[0].seq))
        head: _Ticket = best.queue[0]  # type: ignore[assignment]
        return head

    def _count_in(self, tenant_id: str) -> None:
        self._tenant_in_flight[tenant_id] = self._tenant_in_flight.get(tenant_id, 0) + 1

    def _release(self, grant: Grant) -> None:
        self._in_flight -= 1
        left = self._tenant_in_flight[grant.tenant_id] - 1
        if left:
            self._tenant_in_flight[grant.tenant_id] = left
        else:
            del self._tenant_in_flight[grant.tenant_id]
        self._vtc.finish(grant._flow)
        elapsed = self._clock() - grant.granted_at
        mean = self._mean_service_s
        self._mean_service_s = elapsed if mean is None else mean + _EWMA * (elapsed - mean)
        if self._vtc.total_queued:
            self._dispatch()

    # ------------------------------------------------------------------------------------------------ leaving
    def _abandon(self, ticket: _Ticket) -> None:
        """The waiting task was cancelled: leave the queue, or give back a slot granted in the meantime."""
        if ticket.state == _QUEUED:
            self._unqueue(ticket, _ABANDONED)
        elif ticket.state == _GRANTED and ticket.grant is not None:
            ticket.grant.release()
        elif ticket.state == _TIMED_OUT and ticket.future is not None and not ticket.future.cancelled():
            ticket.future.exception()  # retrieved: no "exception was never retrieved" log

    def _expire(self, ticket: _Ticket) -> None:
        if ticket.state != _QUEUED or ticket.future is None:
            return
        if ticket.future.cancelled():
            self._unqueue(ticket, _ABANDONED)
            return
        self._unqueue(ticket, _TIMED_OUT)
        ticket.future.set_exception(self._timeout_error(ticket, self._clock() - ticket.enqueued_at))

    def _unqueue(self, ticket: _Ticket, state: int) -> None:
        self._vtc.remove(ticket)
        self._dequeued(ticket, state)

    def _dequeued(self, ticket: _Ticket, state: int) -> None:
        ticket.state = state
        if ticket.timer is not None:
            ticket.timer.cancel()
            ticket.timer = None
        self._set_depth(ticket.tenant_id, self._tenant_queued[ticket.tenant_id] - 1)

    def _set_depth(self, tenant_id: str, depth: int) -> None:
        if depth:
            self._tenant_queued[tenant_id] = depth
        else:
            del self._tenant_queued[tenant_id]
        self._observer.queued(tenant_id, depth)

    # ------------------------------------------------------------------------------------------------ refusing
    def _refuse_full(self, ticket: _Ticket, reason: RefusalReason) -> QueueFull:
        self._observer.refused(ticket.tenant_id, reason)
        what = "your queue" if reason == "tenant_queue_full" else "the queue"
        return QueueFull(f"{what} for model '{self.model}' is full; retry later", reason=reason,
                         retry_after=self._retry_after(ticket))  # fmt: skip

    def _timeout_error(self, ticket: _Ticket, waited: float) -> QueueTimeout:
        self._observer.refused(ticket.tenant_id, "queue_timeout")
        return QueueTimeout(f"no capacity on model '{self.model}' within {ticket.max_wait_s:g} s; retry later",
                            waited_s=waited, retry_after=self._retry_after(ticket))  # fmt: skip

    def _retry_after(self, ticket: _Ticket) -> float:
        """Seconds until a new request of this tenant would likely be served: the dispatches ahead of it, each
        freeing after mean service time / capacity on average."""
        ahead = self._vtc.ahead_of(ticket.tenant_id, ticket.priority)
        mean = self._mean_service_s if self._mean_service_s is not None else _DEFAULT_SERVICE_S
        return mean * (ahead + 1) / self._capacity


def _tenant_stats(flow: Flow) -> TenantStats:
    return TenantStats(tenant_id=flow.tenant_id, priority=flow.priority, queued=len(flow.queue),
                       in_flight=flow.in_flight, counter=flow.counter)  # fmt: skip


def _check_capacity(capacity: int) -> None:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")


def _check_headroom(headroom: int) -> None:
    if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:
        raise ValueError(f"headroom must be an int >= 0, got {headroom!r}")
