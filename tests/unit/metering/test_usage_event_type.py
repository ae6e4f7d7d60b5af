"""UsageEvent keeps its dataclass contract although its ``__init__`` and ``to_json`` are written out, ``cost_of``
gives the same costs, to the bit, as building a Price, and a journal write that comes back short is finished."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import struct
from pathlib import Path

import orjson
import pytest

from tenantlm.metering.journal import _Active
from tenantlm.metering.models import UsageEvent
from tenantlm.metering.pricing import Price, cost_of

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


@pytest.mark.parametrize(("inp", "out"), [(0.5, 1.5), (0.0, -0.0), (-0.0, -0.0), (3, 7), (math.nan, 2.0),
                                          (0.15, 0.6), (1e-9, 1e9)])
def test_cost_of_is_the_price_objects_cost_to_the_bit(inp: float, out: float) -> None:
    model = _Model("m", inp, out)
    for prompt, completion in ((12, 0), (0, 0), (1, 1), (123_457, 9_999), (2**40, 3)):
        ours = cost_of(model, prompt, completion)
        theirs = Price.of(model).cost(prompt_tokens=prompt, completion_tokens=completion)
        assert struct.pack("<d", ours) == struct.pack("<d", theirs)  # NaN and the sign of zero included


@pytest.mark.parametrize("change", [
    {}, {"key_id": None, "end_user": "ü-ser \"quoted\"", "ttft_ms": 12.345}, {"cost_usd": 0.1 + 0.2},
    {"cost_usd": 0.0, "latency_ms": 1e-300, "created_at": 1.7e9}, {"prompt_tokens": 2**63, "http_status": 502},
])  # fmt: skip
def test_to_json_is_the_bytes_orjson_makes_of_the_dataclass(change: dict[str, object]) -> None:
    event = UsageEvent(**{**FIELDS, **change})  # type: ignore[arg-type]
    assert event.to_json() == orjson.dumps(event)


def test_a_short_write_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwrite

    def three_bytes_at_a_time(fd: int, data: bytes | memoryview, offset: int) -> int:
        return real(fd, bytes(data[:3]), offset)

    monkeypatch.setattr(os, "pwrite", three_bytes_at_a_time)
    fd = os.open(tmp_path / "seg", os.O_WRONLY | os.O_CREAT)
    active = _Active(fd, tmp_path / "seg")
    active.append(b"0123456789\n", 0)
    active.append(b"abcde\n", 0)
    active.close()
    assert (tmp_path / "seg").read_bytes() == b"0123456789\nabcde\n" and active.size == 17
