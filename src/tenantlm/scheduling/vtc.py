"""Weighted Virtual Token Counter (VTC): the pure scheduling rule, with no asyncio, clock or capacity in it.

Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024 (arXiv:2401.00588), Algorithm 2 ("VTC"),
with its weighted variant (counters charged service / weight). What is implemented, exactly (the weighted form and
the priority classes are ours to state; the reference implementation is the paper's artifact,
Ying1123/VTC-artifact, slora/server/router/vtc_req_queue.py):

- **Flows.** Requests belong to a flow = (priority class, tenant). Each flow has a counter ``c`` (its weighted
  service so far, in virtual tokens), a FIFO queue of waiting requests, and a count of requests in flight. Each class
  is an independent VTC instance: counters are never compared across classes.
- **Backlogged** means "has at least one request waiting in this class" (the paper's *u ∈ Q*); requests in flight
  do not make a flow backlogged.
- **Counter lift on arrival.** When a request arrives at a flow whose queue is empty: if other flows of the class are
  backlogged, ``c = max(c, min{c_i : i backlogged})``; if none is, ``c = max(c, c_l)`` where *l* is the flow that most
  recently left the class's queue (its queue became empty, whether by dispatch, timeout or cancellation; on the fast
  path a request arrives and leaves at once, so its flow becomes *l*). Before any flow has ever left, there is no
  lift. This is what stops an idle tenant from banking credit: it comes back at the current "virtual time", not at the
  counter it had when it left. (The last-leaver case is our reading of Algorithm 2; the artifact's vtc_req_queue.py
  lifts only when other flows are backlogged, which lets a tenant that used little while the model was uncontended
  arrive with a lead.)
- **Dispatch**. The class served is the highest-priority class with anyone waiting (strict priority:
  a lower class gets nothing while a higher one is backlogged, so sustained high-class load starves lower classes;
  weights act only within a class). Within it, the backlogged flow with the smallest counter; ties go to the flow
  whose head request arrived first (global arrival sequence). Its head request is dispatched and the flow is
  charged ``input_tokens * w_in / weight``.
- **Output charging**. While the response streams, ``output_tokens * w_out / weight`` per token
  generated (callers pass deltas). ``weight`` is the request's (the tenant's limits at admission), > 0.

Guarantee (the paper's fairness bound, section 4, stated there for the unweighted case): two flows backlogged over
the same interval receive weighted service within a bound that depends on the largest charges in flight, not on how
much either one offers; a flow that arrives behind any number of queued requests of other flows is served after a
number of dispatches bounded by its counter's lead over theirs (none when it was idle: the lift makes it level).

Cost per operation: dispatch and lift scan the backlogged flows of one class (O(B), B is small: the tenants waiting
for one model right now); everything else is O(1) except removing a request from the middle of its queue (O(queue)).

Idle flows (nothing queued or in flight) whose counter is at or below the class's *virtual time* (the value a
returning flow would be lifted to) are forgotten now and then: forgetting them is exact, because that virtual time
never decreases (a joining flow starts at >= the minimum, and the flow that leaves last was >= the minimum), so on
return a fresh counter of 0 is lifted to the same value the old one would have been.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

_SWEEP_MIN = 64


class Flow:
    """One tenant's state in one priority class."""

    __slots__ = ("cls", "counter", "in_flight", "priority", "queue", "tenant_id")

    def __init__(self, tenant_id: str, priority: int, cls: _Class) -> None:
        self.tenant_id = tenant_id
        self.priority = priority
        self.cls = cls
        self.counter = 0.0
        self.in_flight = 0
        self.queue: deque[Request] = deque()


class Request:
    """A request as the algorithm sees it. The scheduler subclasses it to hang its own state on it."""

    __slots__ = ("flow", "input_tokens", "priority", "seq", "tenant_id", "weight")

    def __init__(self, tenant_id: str, weight: float, priority: int, input_tokens: int, seq: int = 0) -> None:
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight!r}")
        if input_tokens < 0:
            raise ValueError(f"input_tokens must be >= 0, got {input_tokens!r}")
        self.tenant_id = tenant_id
        self.weight = weight
        self.priority = priority
        self.input_tokens = input_tokens
        self.seq = seq
        self.flow: Flow | None = None


R = TypeVar("R", bound=Request)


class _Class:
    """One priority class: its flows, the backlogged ones (in the order they became backlogged), its last leaver."""

    __slots__ = ("backlogged", "flows", "last_left", "queued", "swept_at")

    def __init__(self) -> None:
        self.flows: dict[str, Flow] = {}
        self.backlogged: dict[str, Flow] = {}
        self.last_left: Flow | None = None
        self.queued = 0
        self.swept_at = 0

    def virtual_time(self) -> float:
        """What a flow arriving now at an empty queue is lifted to (0 before anyone has left)."""
        if self.backlogged:
            return min(f.counter for f in self.backlogged.values())
        return self.last_left.counter if self.last_left is not None else 0.0

    def flow(self, tenant_id: str, priority: int) -> Flow:
        flow = self.flows.get(tenant_id)
        if flow is None:
            flow = self.flows[tenant_id] = Flow(tenant_id, priority, self)
        return flow

    def lift(self, flow: Flow) -> None:
        """The lift: called when ``flow`` is about to join Q (its queue is empty)."""
        reference = self.virtual_time()
        if reference > flow.counter:
            flow.counter = reference

    def sweep(self) -> None:
        """Forgets idle flows that a lift would bring to the class's virtual time anyway (see module docstring)."""
        floor = self.virtual_time()
        for tenant_id in [t for t, f in self.flows.items() if not f.queue and not f.in_flight and f.counter <= floor]:
            del self.flows[tenant_id]
        self.swept_at = len(self.flows)


class VirtualTokenCounter(Generic[R]):
    """Per-class, per-tenant queues ordered by weighted VTC. Not thread-safe; the asyncio scheduler owns one."""

    def __init__(self, *, w_in: float = 1.0, w_out: float = 2.0) -> None:
        if w_in < 0 or w_out < 0:
            raise ValueError("w_in and w_out must be >= 0")
        self.w_in = w_in
        self.w_out = w_out
        self.total_queued = 0
        self._classes: dict[int, _Class] = {}

    # ------------------------------------------------------------------------------------------------ arrivals
    def admit(self, request: R) -> Flow:
        """Arrival and immediate dispatch (the fast path: capacity free and nothing of this class waiting).

        The same as enqueue() + dispatch(), inlined: this runs on every uncontended request."""
        cls = self._classes.get(request.priority) or self._class(request.priority)
        if cls.backlogged:
            raise RuntimeError("admit() with requests waiting in the class; enqueue() instead")
        flow = cls.flows.get(request.tenant_id) or cls.flow(request.tenant_id, request.priority)
        last = cls.last_left
        counter = flow.counter
        if last is not None and last.counter > counter:  # lift (Q is empty: to the last leaver)
            counter = last.counter
        flow.counter = counter + request.input_tokens * self.w_in / request.weight
        flow.in_flight += 1
        request.flow = cls.last_left = flow
        return flow

    def enqueue(self, request: R) -> int:
        """Appends the request to its flow's queue (lifting the counter if the flow was not backlogged).

        Returns the flow's queue depth after the append."""
        cls = self._class(request.priority)
        flow = cls.flow(request.tenant_id, request.priority)
        if not flow.queue:
            cls.lift(flow)
            cls.backlogged[request.tenant_id] = flow
        flow.queue.append(request)
        request.flow = flow
        cls.queued += 1
        self.total_queued += 1
        return len(flow.queue)

    def remove(self, request: R) -> int:
        """Takes a waiting request out of its queue (timeout, cancellation). Returns its flow's depth after."""
        flow = request.flow
        if flow is None:
            raise ValueError("request is not queued")
        flow.queue.remove(request)
        self._dequeued(flow)
        return len(flow.queue)

    # ------------------------------------------------------------------------------------------------ dispatch
    def head(self) -> R | None:
        """The request that dispatch would take next, or None if nothing waits. Does not change any state."""
        if not self.total_queued:
            return None
        cls = self._classes[max(p for p, c in self._classes.items() if c.queued)]
        flow = min(cls.backlogged.values(), key=_order)
        head: R = flow.queue[0]  # type: ignore[assignment]
        return head

    def newcomer_head(self, below: int) -> R | None:
        """In the highest class with requests waiting, the best waiting request of a newcomer: a flow with only that
        one request waiting and fewer than ``below`` in flight. None if there is none."""
        if not self.total_queued:
            return None
        cls = self._classes[max(p for p, c in self._classes.items() if c.queued)]
        flow = min((f for f in cls.backlogged.values() if len(f.queue) == 1 and f.in_flight < below), key=_order,
                   default=None)  # fmt: skip
        if flow is None:
            return None
        head: R = flow.queue[0]  # type: ignore[assignment]
        return head

    def dispatch(self, request: R) -> Flow:
        """Dispatches ``request``, which must be first in its flow's queue (what :meth:`head` or
        :meth:`newcomer_head` returned, or one just enqueued to an empty queue), and charges its input tokens."""
        flow = request.flow
        if flow is None or not flow.queue or flow.queue[0] is not request:
            raise ValueError("dispatch() takes a request that is first in its flow's queue")
        flow.queue.popleft()
        self._dequeued(flow)
        self._start(flow, request)
        return flow

    def pop(self) -> R | None:
        """head() + dispatch() in one step."""
        request = self.head()
        if request is not None:
            self.dispatch(request)
        return request

    # ------------------------------------------------------------------------------------------------ service
    def charge_output(self, flow: Flow, tokens: int, weight: float) -> None:
        """Charges ``tokens`` newly generated output tokens (a delta) to the flow."""
        flow.counter += tokens * self.w_out / weight

    def finish(self, flow: Flow) -> None:
        """A dispatched request of ``flow`` is done (completed, failed or cancelled)."""
        flow.in_flight -= 1
        cls = flow.cls
        if len(cls.flows) > _SWEEP_MIN and len(cls.flows) > 2 * cls.swept_at:
            cls.sweep()

    # ------------------------------------------------------------------------------------------------ reading
    def flows(self) -> Iterator[Flow]:
        for cls in self._classes.values():
            yield from cls.flows.values()

    def depth(self, tenant_id: str, priority: int) -> int:
        cls = self._classes.get(priority)
        flow = cls.flows.get(tenant_id) if cls is not None else None
        return len(flow.queue) if flow is not None else 0

    def backlogged_in(self, priority: int) -> int:
        """How many flows of the class are waiting (the round a waiting request takes turns with)."""
        cls = self._classes.get(priority)
        return len(cls.backlogged) if cls is not None else 0

    def queued_in(self, priority: int) -> int:
        cls = self._classes.get(priority)
        return cls.queued if cls is not None else 0

    def virtual_time(self, priority: int) -> float:
        cls = self._classes.get(priority)
        return cls.virtual_time() if cls is not None else 0.0

    def in_flight(self, tenant_id: str, priority: int) -> int:
        cls = self._classes.get(priority)
        flow = cls.flows.get(tenant_id) if cls is not None else None
        return flow.in_flight if flow is not None else 0

    def waiting_flows(self, tenant_id: str) -> list[Flow]:
        """The tenant's flows that have requests waiting, in every class."""
        found = []
        for cls in self._classes.values():
            flow = cls.flows.get(tenant_id)
            if flow is not None and flow.queue:
                found.append(flow)
        return found

    def queued_above(self, priority: int) -> int:
        """Requests waiting in classes of higher priority."""
        return sum(c.queued for p, c in self._classes.items() if p > priority)

    def ahead_of(self, tenant_id: str, priority: int) -> int:
        """About how many dispatches come before a new request of this tenant: everything queued in higher classes,
        plus, in its class, one round of the backlogged flows per request the tenant already has waiting (equal
        weights assumed; it is an estimate for retry-after, not a promise)."""
        higher = sum(c.queued for p, c in self._classes.items() if p > priority)
        cls = self._classes.get(priority)
        if cls is None:
            return higher
        flow = cls.flows.get(tenant_id)
        mine = len(flow.queue) if flow is not None else 0
        others = len(cls.backlogged) - (1 if mine else 0)
        return higher + min(cls.queued, mine + mine * others + others)

    # ------------------------------------------------------------------------------------------------ internals
    def _class(self, priority: int) -> _Class:
        cls = self._classes.get(priority)
        if cls is None:
            cls = self._classes[priority] = _Class()
        return cls

    def _dequeued(self, flow: Flow) -> None:
        cls = self._classes[flow.priority]
        cls.queued -= 1
        self.total_queued -= 1
        if not flow.queue:
            del cls.backlogged[flow.tenant_id]
            cls.last_left = flow

    def _start(self, flow: Flow, request: Request) -> None:
        request.flow = flow
        flow.in_flight += 1
        flow.counter += request.input_tokens * self.w_in / request.weight


def _order(flow: Flow) -> tuple[float, int]:
    return flow.counter, flow.queue[0].seq
