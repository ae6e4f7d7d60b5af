from __future__ import annotations

import pytest

from tenantlm.errors import UpstreamUnavailable
from tenantlm.providers.breaker import CircuitBreaker
from tenantlm.providers.stops import StopMatcher


def run(matcher: StopMatcher, pieces: list[str]) -> str:
    out = []
    for piece in pieces:
        out.append(matcher.push(piece))
        if matcher.stopped:
            break
    out.append(matcher.flush())
    return "".join(out)


def test_stop_split_across_pieces_is_cut_and_never_emitted() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.push("hello E") == "hello "  # "E" might start "END": held back
    assert matcher.push("N") == ""
    assert matcher.push("D and more") == ""
    assert matcher.stopped and matcher.flush() == ""


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.push("hello E") == "hello "
    assert matcher.push("NO") == "ENO"
    assert run(StopMatcher(["END"]), ["the E", "N"]) == "the EN"


def test_earliest_of_several_stops_wins() -> None:
    assert run(StopMatcher(["c", "ab"]), ["xxabc"]) == "xx"


def test_no_stops_passes_through() -> None:
    matcher = StopMatcher([])
    assert matcher.push("abc") == "abc" and not matcher.stopped


def state(breaker: CircuitBreaker) -> str:
    return breaker.state.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_then_half_opens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("up", failure_threshold=2, reset_s=10, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert state(breaker) == "open"
    with pytest.raises(UpstreamUnavailable) as info:
        breaker.before_call()
    assert info.value.headers["retry-after"] == "10"
    clock.now = 10
    assert state(breaker) == "half_open"
    breaker.before_call()  # the single probe
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()  # others wait for the probe's verdict
    breaker.record_success()
    assert state(breaker) == "closed"


def test_failed_probe_reopens_and_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("up", failure_threshold=1, reset_s=5, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now = 5
    breaker.before_call()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.now = 9
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()
    clock.now = 10
    breaker.before_call()
    breaker.record_cancelled()
    breaker.before_call()  # a new probe may go
    breaker.record_neutral()  # a 4xx answer proves the upstream is up
    assert state(breaker) == "closed"
