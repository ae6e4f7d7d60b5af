"""The sealed-record format and what its associated data binds."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantlm.crypto import aead
from tenantlm.crypto.errors import DecryptionFailed

KEY = AESGCM(bytes(range(32)))
WHERE = {"tenant_id": "ten_a", "kind": "file", "record_id": "file_1"}


def sealed(plaintext: bytes = b"hello tenant", version: int = 7) -> bytes:
    return aead.seal(KEY, version, plaintext=plaintext, **WHERE)


def test_layout_names_the_key_version() -> None:
    ct = sealed(b"x" * 100, version=7)
    assert ct[:4] == b"TLM1" and struct.unpack(">I", ct[4:8]) == (7,)
    assert len(ct) == 4 + 4 + 12 + 100 + 16
    assert aead.key_version(ct) == 7
    assert aead.open_sealed(KEY, ciphertext=ct, **WHERE) == b"x" * 100


def test_empty_plaintext_round_trips() -> None:
    assert aead.open_sealed(KEY, ciphertext=sealed(b""), **WHERE) == b""


@pytest.mark.parametrize("field,value", [("tenant_id", "ten_b"), ("kind", "chunk"), ("record_id", "file_2")])
def test_moving_a_record_fails(field: str, value: str) -> None:
    ct = sealed()
    with pytest.raises(DecryptionFailed, match="failed authentication"):
        aead.open_sealed(KEY, ciphertext=ct, **{**WHERE, field: value})


def test_length_prefixes_keep_fields_apart() -> None:
    ct = aead.seal(KEY, 1, tenant_id="ten_a", kind="ab", record_id="c", plaintext=b"p")
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(KEY, tenant_id="ten_a", kind="a", record_id="bc", ciphertext=ct)


@pytest.mark.parametrize("offset", [5, 7, 8, 19, 20, 30, -1])
def test_any_flipped_byte_fails(offset: int) -> None:
    ct = bytearray(sealed())
    ct[offset] ^= 0x01
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(KEY, ciphertext=bytes(ct), **WHERE)


def test_other_key_fails() -> None:
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(AESGCM(bytes(32)), ciphertext=sealed(), **WHERE)


@pytest.mark.parametrize("garbage", [b"", b"TLM1", b"TLM2" + bytes(40), b"TLM1\x00\x00\x00\x00" + bytes(40),
                                     b"plain text that was never sealed at all"])
def test_garbage_is_refused_clearly(garbage: bytes) -> None:
    with pytest.raises(DecryptionFailed, match="sealed-record format"):
        aead.open_sealed(KEY, ciphertext=garbage, **WHERE)


def test_truncated_ciphertext_fails() -> None:
    ct = sealed(b"some content")
    for cut in (1, 16, len(ct) - aead.MIN_BYTES):
        with pytest.raises(DecryptionFailed):
            aead.open_sealed(KEY, ciphertext=ct[:-cut], **WHERE)


def test_nonces_are_unique() -> None:
    cts = [sealed(b"same") for _ in range(20_000)]
    nonces = {c[8:20] for c in cts}
    assert len(nonces) == len(cts) and len(set(cts)) == len(cts)


def test_version_range_is_checked() -> None:
    with pytest.raises(ValueError):
        aead.seal(KEY, 0, plaintext=b"", **WHERE)
    with pytest.raises(ValueError):
        aead.seal(KEY, 2**32, plaintext=b"", **WHERE)
