"""The chain's canonical encoding and hash: deterministic, value-based, frozen in format."""

from __future__ import annotations

import hashlib
import json

import pytest

from tenantlm.audit.chain import (
    GENESIS,
    canonical_entry,
    canonical_json,
    checkpoint_message,
    entry_hash,
    recompute,
    to_micros,
)
from tenantlm.audit.models import AuditEntry

FIELDS = {"seq": 7, "ts_us": 1_700_000_000_123_456, "actor": "platform_key:adm_1", "tenant_id": "ten_a",
          "action": "tenant.created", "request_id": "req_1",
          "details": {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}}


def test_canonical_json_is_sorted_compact_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_depends_on_values_not_on_key_order_or_escaping() -> None:
    h = entry_hash(GENESIS, **FIELDS)  # type: ignore[arg-type]
    # what a JSON column may hand back: other key order, ASCII escapes
    reread = json.loads(json.dumps(json.loads(json.dumps(FIELDS["details"], ensure_ascii=True))))
    reordered = dict(reversed(list(reread.items())))
    assert entry_hash(GENESIS, **{**FIELDS, "details": reordered}) == h  # type: ignore[arg-type]
    assert h == hashlib.sha256(GENESIS + canonical_entry(**FIELDS)).digest()  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("seq", 8), ("ts_us", 1), ("actor", "x"), ("tenant_id", None),
                                         ("action", "tenant.deleted"), ("request_id", None),
                                         ("details", {"b": [1, 2.5, None], "a": {"z": "e", "y": True}})])
def test_every_field_is_covered(field: str, value: object) -> None:
    assert entry_hash(GENESIS, **{**FIELDS, field: value}) != entry_hash(GENESIS, **FIELDS)  # type: ignore[arg-type]


def test_prev_hash_is_chained_and_must_be_32_bytes() -> None:
    assert entry_hash(b"\x01" * 32, **FIELDS) != entry_hash(GENESIS, **FIELDS)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        entry_hash(b"short", **FIELDS)  # type: ignore[arg-type]


def test_format_is_frozen() -> None:
    # Changing the encoding would make every stored log fail verification: this vector must never change.
    body = canonical_entry(**FIELDS)  # type: ignore[arg-type]
    assert body == (b'{"action":"tenant.created","actor":"platform_key:adm_1","details":{"a":{"y":true,"z":"\xc3\xa9"},'
                    b'"b":[1,2.5,null]},"request_id":"req_1","seq":7,"tenant_id":"ten_a","ts_us":1700000000123456,'
                    b'"v":1}')
    assert entry_hash(GENESIS, **FIELDS).hex()[:16] == hashlib.sha256(GENESIS + body).hexdigest()[:16]  # type: ignore[arg-type]


def test_microseconds_survive_a_float_column() -> None:
    for ts in (1_700_000_000.123456, 1_999_999_999.999999, 0.000001, 1_234_567_890.5):
        us = to_micros(ts)
        assert to_micros(us / 1_000_000) == us


def test_recompute_matches_entry_hash() -> None:
    h = entry_hash(GENESIS, **FIELDS)  # type: ignore[arg-type]
    entry = AuditEntry(prev_hash=GENESIS, hash=h, **FIELDS)  # type: ignore[arg-type]
    assert recompute(entry) == h


def test_checkpoint_message_layout() -> None:
    msg = checkpoint_message(258, b"\xab" * 32)
    assert msg == b"tenantlm-audit-checkpoint" + b"\x00" * 6 + b"\x01\x02" + b"\xab" * 32
