"""The chains' canonical encodings and hashes: deterministic, value-based, frozen in format; the tenant encoding
holds no global field."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from tenantlm.audit.chain import (
    FORMAT_V1,
    FORMAT_VERSION,
    GENESIS,
    canonical_entry,
    canonical_json,
    canonical_tenant_entry,
    checkpoint_message,
    entry_hash,
    recompute,
    recompute_tenant,
    tenant_entry_hash,
    to_micros,
)
from tenantlm.audit.models import AuditEntry

FIELDS: dict[str, Any] = {
    "seq": 7, "ts_us": 1_700_000_000_123_456, "actor": "platform_key:adm_1", "tenant_id": "ten_a",
    "action": "tenant.created", "request_id": "req_1", "details": {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}}
TENANT_FIELDS: dict[str, Any] = {"tenant_seq": 3, "tenant_prev_hash": b"\x01" * 32, "tenant_hash": b"\x02" * 32}
# the same entry as its tenant's chain sees it: its own seq, no global field
TENANT_ENTRY: dict[str, Any] = {**{k: v for k, v in FIELDS.items() if k != "seq"}, "seq": 3}


def test_canonical_json_is_sorted_compact_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_depends_on_values_not_on_key_order_or_escaping() -> None:
    h = entry_hash(GENESIS, **FIELDS, **TENANT_FIELDS)
    th = tenant_entry_hash(GENESIS, **TENANT_ENTRY)
    # what a JSON column may hand back: other key order, ASCII escapes
    reread = json.loads(json.dumps(json.loads(json.dumps(FIELDS["details"], ensure_ascii=True))))
    reordered = dict(reversed(list(reread.items())))
    assert entry_hash(GENESIS, **{**FIELDS, "details": reordered}, **TENANT_FIELDS) == h
    assert tenant_entry_hash(GENESIS, **{**TENANT_ENTRY, "details": reordered}) == th
    assert h == hashlib.sha256(GENESIS + canonical_entry(**FIELDS, **TENANT_FIELDS)).digest()
    assert th == hashlib.sha256(GENESIS + canonical_tenant_entry(**TENANT_ENTRY)).digest()


@pytest.mark.parametrize("field,value", [("seq", 8), ("ts_us", 1), ("actor", "x"), ("tenant_id", None),
                                         ("action", "tenant.deleted"), ("request_id", None),
                                         ("details", {"b": [1, 2.5, None], "a": {"z": "e", "y": True}}),
                                         ("tenant_seq", 4), ("tenant_prev_hash", b"\x03" * 32),
                                         ("tenant_hash", b"\x04" * 32)])
def test_every_field_is_covered_by_the_platform_hash(field: str, value: object) -> None:
    base = {**FIELDS, **TENANT_FIELDS}
    assert entry_hash(GENESIS, **{**base, field: value}) != entry_hash(GENESIS, **base)


@pytest.mark.parametrize("field,value", [("seq", 4), ("ts_us", 1), ("actor", "x"), ("tenant_id", "ten_b"),
                                         ("action", "tenant.deleted"), ("request_id", None),
                                         ("details", {"b": [1, 2.5, None], "a": {"z": "e", "y": True}})])
def test_every_field_is_covered_by_the_tenant_hash(field: str, value: object) -> None:
    assert tenant_entry_hash(GENESIS, **{**TENANT_ENTRY, field: value}) != tenant_entry_hash(GENESIS, **TENANT_ENTRY)


def test_format_1_does_not_cover_the_tenant_fields_added_later() -> None:
    # rows written before tenant chains keep their hashes after migration 0007 added the tenant fields to them
    v1 = entry_hash(GENESIS, **FIELDS, format_version=FORMAT_V1)
    assert entry_hash(GENESIS, **FIELDS, **TENANT_FIELDS, format_version=FORMAT_V1) == v1
    assert entry_hash(GENESIS, **FIELDS, format_version=FORMAT_VERSION) != v1  # the version is hashed too
    with pytest.raises(ValueError, match="unknown audit format"):
        canonical_entry(**FIELDS, format_version=3)


def test_prev_hash_is_chained_and_must_be_32_bytes() -> None:
    assert entry_hash(b"\x01" * 32, **FIELDS) != entry_hash(GENESIS, **FIELDS)
    assert tenant_entry_hash(b"\x01" * 32, **TENANT_ENTRY) != tenant_entry_hash(GENESIS, **TENANT_ENTRY)
    with pytest.raises(ValueError):
        entry_hash(b"short", **FIELDS)
    with pytest.raises(ValueError):
        tenant_entry_hash(b"short", **TENANT_ENTRY)


def test_formats_are_frozen() -> None:
    # Changing an encoding would make every stored log fail verification: these vectors must never change.
    assert canonical_entry(**FIELDS, format_version=FORMAT_V1) == (
        b'{"action":"tenant.created","actor":"platform_key:adm_1","details":{"a":{"y":true,"z":"\xc3\xa9"},'
        b'"b":[1,2.5,null]},"request_id":"req_1","seq":7,"tenant_id":"ten_a","ts_us":1700000000123456,"v":1}')
    assert canonical_entry(**FIELDS, **TENANT_FIELDS) == (
        b'{"action":"tenant.created","actor":"platform_key:adm_1","details":{"a":{"y":true,"z":"\xc3\xa9"},'
        b'"b":[1,2.5,null]},"request_id":"req_1","seq":7,"tenant_hash":"' + b"02" * 32 + b'","tenant_id":"ten_a",'
        b'"tenant_prev_hash":"' + b"01" * 32 + b'","tenant_seq":3,"ts_us":1700000000123456,"v":2}')
    assert canonical_tenant_entry(**TENANT_ENTRY) == (
        b'{"action":"tenant.created","actor":"platform_key:adm_1","chain":"tenant","details":{"a":{"y":true,'
        b'"z":"\xc3\xa9"},"b":[1,2.5,null]},"request_id":"req_1","seq":3,"tenant_id":"ten_a",'
        b'"ts_us":1700000000123456,"v":1}')
    assert entry_hash(GENESIS, **FIELDS, **TENANT_FIELDS).hex() == \
        "5c4f0f581916486f05fd6b783830a89f05b5cb706d91c43793784c94a0a9c67e"
    assert tenant_entry_hash(GENESIS, **TENANT_ENTRY).hex() == \
        "851949e6c9ee7735ced0a4817f70128f5041e1924a853dceb59443541f30e9b1"


def test_microseconds_survive_a_float_column() -> None:
    for ts in (1_700_000_000.123456, 1_999_999_999.999999, 0.000001, 1_234_567_890.5):
        us = to_micros(ts)
        assert to_micros(us / 1_000_000) == us


def _entry(**over: Any) -> AuditEntry:
    th = tenant_entry_hash(TENANT_FIELDS["tenant_prev_hash"], **TENANT_ENTRY)
    draft = AuditEntry(prev_hash=GENESIS, hash=b"", format_version=FORMAT_VERSION, **FIELDS,
                       **{**TENANT_FIELDS, "tenant_hash": th})
    draft = replace(draft, **over)
    return replace(draft, hash=recompute(draft))


def test_recompute_matches_entry_hash() -> None:
    entry = _entry()
    assert entry.hash == entry_hash(GENESIS, **FIELDS, **{**TENANT_FIELDS, "tenant_hash": entry.tenant_hash})
    view = entry.tenant_view()
    assert view is not None and recompute_tenant(view) == view.hash == entry.tenant_hash and view.seq == 3


def test_the_tenant_view_carries_nothing_global() -> None:
    # the same tenant entry at another global place, after other platform hashes: the tenant sees the same thing
    here, there = _entry(), _entry(seq=912, prev_hash=b"\x09" * 32)
    assert here.hash != there.hash and here.tenant_view() == there.tenant_view()
    public = here.tenant_view().public()  # type: ignore[union-attr]
    assert public["seq"] == 3 and public["hash"] == here.tenant_hash.hex()  # type: ignore[union-attr]
    assert here.hash.hex() not in json.dumps(public) and here.prev_hash.hex() not in json.dumps(public)
    assert set(public) == {"object", "chain", "seq", "created_at", "ts_us", "actor", "tenant_id", "action",
                           "request_id", "details", "prev_hash", "hash"}
    assert _entry(tenant_id=None, tenant_seq=None, tenant_prev_hash=None, tenant_hash=None).tenant_view() is None


def test_checkpoint_message_layout() -> None:
    msg = checkpoint_message(258, b"\xab" * 32)
    assert msg == b"tenantlm-audit-checkpoint" + b"\x00" * 6 + b"\x01\x02" + b"\xab" * 32
