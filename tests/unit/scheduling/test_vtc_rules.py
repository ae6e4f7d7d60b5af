"""VTC's rules on the pure algorithm (tenantlm.scheduling.vtc): lift, order, charging, weights, classes, starvation."""

from __future__ import annotations

import itertools

import pytest

from tenantlm.scheduling.vtc import Flow, Request, VirtualTokenCounter

_seq = itertools.count()


def req(tenant: str, tokens: int = 10, *, weight: float = 1.0, priority: int = 0) -> Request:
    return Request(tenant_id=tenant, weight=weight, priority=priority, input_tokens=tokens, seq=next(_seq))


def counter(vtc: VirtualTokenCounter[Request], tenant: str, priority: int = 0) -> float:
    return next(f.counter for f in vtc.flows() if f.tenant_id == tenant and f.priority == priority)


def serve(vtc: VirtualTokenCounter[Request], output_tokens: int = 0) -> Request:
    """Dispatches the next request, charges its output and finishes it (one whole service, as the upstream would)."""
    r = vtc.pop()
    assert r is not None and r.flow is not None
    vtc.charge_output(r.flow, output_tokens, r.weight)
    vtc.finish(r.flow)
    return r


def test_counter_lifts_to_min_of_backlogged_on_becoming_backlogged() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for r in (req("a", 300), req("a", 1), req("c", 100), req("c", 1)):
        vtc.enqueue(r)
    serve(vtc)
    serve(vtc)  # a (300) then c (100), each still has one waiting
    assert (counter(vtc, "a"), counter(vtc, "c")) == (300, 100)
    vtc.enqueue(req("b"))  # new: lifted to min(300, 100)
    assert counter(vtc, "b") == 100


def test_counter_is_not_lowered_by_the_lift() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    vtc.admit(req("b", 500))
    vtc.admit(req("a", 100))  # lifted to 500, then charged: 600
    vtc.enqueue(req("a"))
    vtc.enqueue(req("b"))  # b (500) joins a backlogged a (600): max(500, 600) = 600
    assert counter(vtc, "b") == 600
    vtc.enqueue(req("c"))
    vtc.pop()
    vtc.enqueue(req("b"))  # b is already backlogged: a second request does not lift it again
    assert counter(vtc, "b") == 600


def test_arrival_to_an_empty_queue_lifts_to_the_last_tenant_that_left() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    vtc.enqueue(req("a", 300))
    vtc.enqueue(req("b", 50))
    serve(vtc)  # a or b; both start at 0, a arrived first
    serve(vtc)  # the other: b leaves last with c_b = 50
    assert vtc.total_queued == 0
    vtc.enqueue(req("idle", 1))
    assert counter(vtc, "idle") == 50  # the last leaver's counter, not 0 and not a's 300


def test_a_timed_out_request_that_empties_its_queue_makes_its_tenant_the_last_leaver() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    vtc.admit(req("b", 70))
    r = req("b")
    vtc.enqueue(r)
    assert vtc.remove(r) == 0
    vtc.enqueue(req("c"))
    assert counter(vtc, "c") == 70


def test_ties_go_to_the_earlier_arrival() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for t in ("b", "a", "c"):
        vtc.enqueue(req(t))
    assert [serve(vtc).tenant_id for _ in range(3)] == ["b", "a", "c"]  # all at 0: arrival order


def test_the_smallest_counter_is_served() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for t, n in (("a", 30), ("b", 10), ("c", 20)):
        vtc.enqueue(req(t, n))
    for t in ("a", "b", "c") * 2:
        vtc.enqueue(req(t, 1))
    assert [serve(vtc).tenant_id for _ in range(3)] == ["a", "b", "c"]  # ties at 0; now a=30, b=10, c=20
    head = vtc.head()
    assert head is not None and head.tenant_id == "b"
    assert [serve(vtc).tenant_id for _ in range(6)] == ["b", "b", "c", "c", "a", "a"]


def test_input_and_output_are_charged_with_w_in_w_out_and_weight() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter(w_in=3.0, w_out=5.0)
    flow = vtc.admit(req("a", 10, weight=2.0))
    assert flow.counter == 10 * 3.0 / 2.0
    vtc.charge_output(flow, 4, 2.0)
    vtc.charge_output(flow, 6, 2.0)  # deltas add up
    assert flow.counter == 15 + 10 * 5.0 / 2.0


def test_default_charges_are_one_per_input_and_two_per_output_token() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    flow = vtc.admit(req("a", 7))
    vtc.charge_output(flow, 5, 1.0)
    assert flow.counter == 7 + 10


def saturate(vtc: VirtualTokenCounter[Request], tenants: dict[str, float], rounds: int, in_tok: int,
             out_tok: int) -> dict[str, int]:  # fmt: skip
    """Keeps every tenant backlogged for ``rounds`` dispatches; returns the raw tokens (in + 2 * out) each got."""
    service = dict.fromkeys(tenants, 0)
    for t, w in tenants.items():
        for _ in range(4):  # several waiting, so the queue never empties (an emptied queue is lifted on return)
            vtc.enqueue(req(t, in_tok, weight=w))
    for _ in range(rounds):
        r = serve(vtc, out_tok)
        service[r.tenant_id] += in_tok + 2 * out_tok
        vtc.enqueue(req(r.tenant_id, in_tok, weight=tenants[r.tenant_id]))
    return service


def test_weight_two_gets_twice_the_service_under_saturation() -> None:
    service = saturate(VirtualTokenCounter(), {"one": 1.0, "two": 2.0}, rounds=3000, in_tok=50, out_tok=100)
    assert service["two"] / service["one"] == pytest.approx(2.0, rel=0.01)


def test_equal_weights_share_equally_whatever_each_offers() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for _ in range(500):  # "heavy" has 500 queued, "light" keeps only one waiting at a time
        vtc.enqueue(req("heavy", 20))
    vtc.enqueue(req("light", 20))
    served = {"heavy": 0, "light": 0}
    for _ in range(400):
        r = serve(vtc, 10)
        served[r.tenant_id] += 1
        if r.tenant_id == "light":
            vtc.enqueue(req("light", 20))
    assert abs(served["heavy"] - served["light"]) <= 1


def test_a_light_tenant_behind_1000_heavy_requests_is_served_within_two_dispatches() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for _ in range(1000):
        vtc.enqueue(req("heavy", 100))
    for _ in range(10):
        serve(vtc, 100)  # heavy has had service: c_heavy = 10 * 300
    vtc.enqueue(req("light", 100))  # lifted to c_heavy: a tie, heavy's head arrived first
    order = [serve(vtc, 100).tenant_id for _ in range(2)]
    assert order == ["heavy", "light"]


def test_a_tenant_with_a_lead_waits_exactly_its_lead_in_dispatches_of_the_other() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    for _ in range(1000):
        vtc.enqueue(req("heavy", 100))
    serve(vtc)  # c_heavy = 100
    vtc.enqueue(req("light", 2000))  # lifted to 100: tie, heavy first (c_heavy = 200), then light (c_light = 2100)
    assert [serve(vtc).tenant_id for _ in range(2)] == ["heavy", "light"]
    vtc.enqueue(req("light", 100))  # not lifted (2100 > 200): light is 1900 ahead of heavy
    dispatches = 0
    while serve(vtc).tenant_id != "light":
        dispatches += 1
    assert dispatches == 1900 // 100 + 1  # heavy catches up (19), then wins the tie on arrival order (1)


def test_higher_priority_class_is_served_first_and_weights_act_within_a_class() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    vtc.admit(req("low", 1, priority=0))  # low has the smallest counter of anyone
    for _ in range(3):
        vtc.enqueue(req("low", 1, priority=0))
    vtc.enqueue(req("hi-a", 1000, priority=1))
    vtc.enqueue(req("hi-b", 1000, priority=1))
    vtc.enqueue(req("hi-a", 1000, priority=1))
    order = [serve(vtc).tenant_id for _ in range(6)]
    assert order == ["hi-a", "hi-b", "hi-a", "low", "low", "low"]  # strict: low starves while hi waits
    assert vtc.virtual_time(5) == 0.0


def test_counters_are_per_class() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    vtc.admit(req("a", 100, priority=1))
    vtc.admit(req("a", 7, priority=0))
    assert counter(vtc, "a", 1) == 100 and counter(vtc, "a", 0) == 7


def test_idle_tenants_are_forgotten_only_when_that_changes_nothing() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    flows: list[Flow] = []
    for i in range(200):
        flow = vtc.admit(req(f"t{i}", 10))
        flows.append(flow)
        vtc.finish(flow)
    remaining = {f.tenant_id for f in vtc.flows()}
    assert len(remaining) < 200  # swept
    assert "t199" in remaining  # the last leaver (the reference) is kept...
    before = vtc.virtual_time(0)
    vtc.enqueue(req("t0", 1))  # ...and a forgotten tenant comes back exactly where a remembered one would
    assert counter(vtc, "t0") == before == max(flows[0].counter, before)


def test_busy_tenants_are_never_forgotten() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    busy = vtc.admit(req("busy", 1))  # in flight the whole time
    for i in range(300):
        vtc.finish(vtc.admit(req(f"t{i}", 10)))
    assert busy in list(vtc.flows())


def test_dispatch_takes_only_the_head_and_remove_only_a_queued_request() -> None:
    vtc: VirtualTokenCounter[Request] = VirtualTokenCounter()
    first, second = req("a"), req("a")
    vtc.enqueue(first)
    vtc.enqueue(second)
    with pytest.raises(ValueError):
        vtc.dispatch(second)
    assert vtc.remove(second) == 1
    assert vtc.pop() is first and vtc.pop() is None
    with pytest.raises(ValueError):
        vtc.remove(req("b"))


def test_requests_are_validated() -> None:
    with pytest.raises(ValueError):
        req("a", weight=0.0)
    with pytest.raises(ValueError):
        req("a", -1)
    with pytest.raises(ValueError):
        VirtualTokenCounter(w_in=-1.0)
