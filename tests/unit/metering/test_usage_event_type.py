"""UsageEvent: what it holds and refuses, its journal line to the byte (the format segments already on disk are read
back in), the cost of an attempt, and a journal write that comes back short is finished."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import pytest

from tenantlm.metering.journal import _Active
from tenantlm.metering.models import UsageEvent
from tenantlm.metering.pricing import cost_of

FIELDS = dict(id="r1:1", tenant_id="t1", key_id="k1", end_user=None, model="m", provider="p", upstream_model="um",
              region="local", prompt_tokens=12, completion_tokens=16, cached_tokens=0, latency_ms=1.5, ttft_ms=None,
              status="ok", http_status=200, cost_usd=3.1e-05, created_at=1_700_000_000.25, prompt_id=None,
              prompt_version=None, prompt_override_version=None, history_items=None)


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


LINE = (b'{"id":"r1:1","tenant_id":"t1","key_id":"k1","end_user":null,"model":"m","provider":"p",'
        b'"upstream_model":"um","region":"local","prompt_tokens":12,"completion_tokens":16,"cached_tokens":0,'
        b'"latency_ms":1.5,"ttft_ms":null,"status":"ok","http_status":200,"cost_usd":0.000031,'
        b'"created_at":1700000000.25,"prompt_id":null,"prompt_version":null,"prompt_override_version":null,'
        b'"history_items":null}')
OLD_LINE = LINE.split(b',"prompt_id"')[0] + b"}"  # a line journaled before events named their prompt


@pytest.mark.parametrize(("change", "old", "new"), [
    ({}, b"", b""),
    ({"key_id": None}, b'"key_id":"k1"', b'"key_id":null'),
    ({"end_user": 'ü-ser "quoted"'}, b'"end_user":null', '"end_user":"ü-ser \\"quoted\\""'.encode()),
    ({"ttft_ms": 12.345}, b'"ttft_ms":null', b'"ttft_ms":12.345'),
    ({"cost_usd": 0.1 + 0.2}, b'"cost_usd":0.000031', b'"cost_usd":0.30000000000000004'),
    ({"cost_usd": 0.0}, b'"cost_usd":0.000031', b'"cost_usd":0.0'),
    ({"latency_ms": 1e-300}, b'"latency_ms":1.5', b'"latency_ms":1e-300'),
    ({"created_at": 1.7e9}, b'"created_at":1700000000.25', b'"created_at":1700000000.0'),
    ({"prompt_tokens": 2**63}, b'"prompt_tokens":12', b'"prompt_tokens":9223372036854775808'),
    ({"prompt_id": "pmpt_1", "prompt_version": "2", "prompt_override_version": "1"},
     b'"prompt_id":null,"prompt_version":null,"prompt_override_version":null',
     b'"prompt_id":"pmpt_1","prompt_version":"2","prompt_override_version":"1"'),
    ({"history_items": 24}, b'"history_items":null', b'"history_items":24'),
])  # fmt: skip
def test_the_journal_line_of_an_event(change: dict[str, object], old: bytes, new: bytes) -> None:
    event = UsageEvent(**{**FIELDS, **change})  # type: ignore[arg-type]
    assert event.to_json() == LINE.replace(old, new)
    assert UsageEvent(**orjson.loads(event.to_json())) == event  # what the flusher rebuilds from the line


def test_a_line_from_before_prompt_fields_reads_back_without_a_prompt() -> None:
    event = UsageEvent(**orjson.loads(OLD_LINE))
    assert event == UsageEvent(**FIELDS)  # type: ignore[arg-type]
    assert event.prompt_id is None and event.prompt_override_version is None


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
    def __init__(self, inp: float, out: float) -> None:
        self.input_price_per_1m, self.output_price_per_1m = inp, out


def test_cost_of_prices_prompt_and_completion_per_million_tokens() -> None:
    assert cost_of(_Model(3.0, 15.0), 1_000_000, 2_000) == pytest.approx(3.03)
    assert cost_of(_Model(3.0, 15.0), 0, 1_000_000) == pytest.approx(15.0)
    assert cost_of(_Model(0.15, 0.6), 12, 16) == pytest.approx(12 * 0.15e-6 + 16 * 0.6e-6)
    assert cost_of(_Model(0.0, 0.0), 123_457, 9_999) == 0.0


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
