"""UsageEvent keeps its dataclass contract although its ``__init__`` is written out, and ``Price.of`` (cached) gives
the same prices, to the bit, as building a Price."""

from __future__ import annotations

import dataclasses
import inspect
import math

import orjson
import pytest

from tenantlm.metering.models import UsageEvent
from tenantlm.metering.pricing import Price

FIELDS = dict(id="r1:1", tenant_id="t1", key_id="k1", end_user=None, model="m", provider="p", upstream_model="um",
              region="local", prompt_tokens=12, completion_tokens=16, cached_tokens=0, latency_ms=1.5, ttft_ms=None,
              status="ok", http_status=200, cost_usd=3.1e-05, created_at=1_700_000_000.25)


def test_the_signature_is_the_fields_in_order() -> None:
    params = list(inspect.signature(UsageEvent).parameters.values())
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(UsageEvent)]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)


def test_instances_hold_what_was_given_and_stay_frozen() -> None:
    event = UsageEvent(**FIELDS)  # type: ignore[arg-type]
    assert dataclasses.asdict(event) == FIELDS
    assert UsageEvent(*FIELDS.values()) == event  # type: ignore[arg-type]
    assert dataclasses.replace(event) == event and hash(dataclasses.replace(event)) == hash(event)
    assert repr(event).startswith("UsageEvent(id='r1:1', tenant_id='t1', ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = "error"  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        UsageEvent(**FIELDS, colour=1)  # type: ignore[arg-type, call-arg]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'created_at'"):
        UsageEvent(**{k: v for k, v in FIELDS.items() if k != "created_at"})  # type: ignore[arg-type]


def test_the_json_is_the_dataclass_json() -> None:
    event = UsageEvent(**FIELDS)  # type: ignore[arg-type]
    assert orjson.loads(orjson.dumps(event)) == FIELDS
    assert list(orjson.loads(orjson.dumps(event))) == list(FIELDS)


@pytest.mark.parametrize(("change", "message"), [
    ({"id": ""}, "needs an id"), ({"tenant_id": ""}, "needs an id"), ({"status": "done"}, "unknown usage status"),
    ({"prompt_tokens": -1}, "negative"), ({"completion_tokens": -1}, "negative"), ({"cached_tokens": -1}, "negative"),
])  # fmt: skip
def test_invalid_events_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UsageEvent(**{**FIELDS, **change})  # type: ignore[arg-type]


def test_non_numeric_token_counts_are_refused() -> None:
    with pytest.raises(TypeError):
        UsageEvent(**{**FIELDS, "prompt_tokens": None})  # type: ignore[arg-type]


class _Model:
    def __init__(self, name: str, inp: float, out: float) -> None:
        self.name, self.input_price_per_1m, self.output_price_per_1m = name, inp, out


@pytest.mark.parametrize(("inp", "out"), [(0.5, 1.5), (0.0, -0.0), (-0.0, -0.0), (3, 7), (math.nan, 2.0)])
def test_price_of_gives_the_catalog_prices_bit_for_bit(inp: float, out: float) -> None:
    model = _Model("m", inp, out)
    for _ in range(2):  # built, then cached
        price = Price.of(model)
        assert price.input_per_1m is inp and price.output_per_1m is out
        direct = Price(inp, out).cost(prompt_tokens=12, completion_tokens=0)
        assert math.copysign(1, price.cost(prompt_tokens=12, completion_tokens=0)) == math.copysign(1, direct)


def test_price_of_follows_a_changed_catalog() -> None:
    model = _Model("m", 1.0, 2.0)
    assert Price.of(model) == Price(1.0, 2.0)
    model.input_price_per_1m = 4.0
    assert Price.of(model) == Price(4.0, 2.0)
    assert Price.of(_Model("n", 0.25, 2.0)) == Price(0.25, 2.0)
