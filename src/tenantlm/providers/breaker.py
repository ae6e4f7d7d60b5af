"""A circuit breaker per upstream: stop sending requests to a backend that keeps failing, probe it later.

    closed ──(failure_threshold consecutive failures)──▶ open ──(reset_s elapsed)──▶ half-open
      ▲                                                   ▲                              │
      └───────────────(probe succeeds)────────────────────┼──────(probe fails)───────────┘

While open, :meth:`CircuitBreaker.before_call` raises :class:`UpstreamUnavailable` at once. Half-open lets exactly
one probe through; other calls are refused until the probe reports. The breaker lives in one process: each
replica judges the upstream on its own (which is what a breaker should do: it protects this caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from tenantlm.errors import UpstreamUnavailable


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._threshold = max(1, failure_threshold)
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._state = BreakerState.CLOSED

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Admit a call or raise :class:`UpstreamUnavailable`. An admitted call must report success or failure."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._state = BreakerState.HALF_OPEN
            self._probing = True
            return
        retry_in = max(0.0, self._reset_s - (self._clock() - self._opened_at))
        raise UpstreamUnavailable(
            f"upstream {self.name!r} is unavailable (circuit open after repeated failures)",
            headers={"retry-after": str(max(1, round(retry_in)))},
        )

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._open()

    def record_neutral(self) -> None:
        """An admitted call ended with an answer that says nothing about the upstream's health (e.g. a 4xx)."""
        if self._state is BreakerState.HALF_OPEN:
            self.record_success()

    def record_cancelled(self) -> None:
        """An admitted call was abandoned by its caller: no verdict; a half-open breaker may probe again."""
        self._probing = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probing = False
