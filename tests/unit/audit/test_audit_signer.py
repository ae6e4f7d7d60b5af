"""The checkpoint signing key: created once at 0600, reloaded, published for verifiers."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenantlm.audit.signer import (
    PRIVATE_FILE,
    PUBLIC_FILE,
    AuditSigner,
    SigningKeyError,
    key_id_of,
    load_public_keys,
    verify_checkpoint,
)


def test_created_private_and_reloaded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    signer = AuditSigner.load_or_create(data)
    key_file = data / PRIVATE_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id == hashlib.sha256(raw).hexdigest()[:16] and len(signer.key_id) == 16
    again = AuditSigner.load_or_create(data)
    assert again.key_id == signer.key_id
    assert not list(data.glob(".*"))  # no temp files left behind


def test_public_key_file_verifies_signatures(tmp_path: Path) -> None:
    signer = AuditSigner.load_or_create(tmp_path)
    assert (tmp_path / PUBLIC_FILE).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    keys = load_public_keys(tmp_path)
    assert list(keys) == [signer.key_id]
    sig = signer.sign(5, b"\x11" * 32)
    assert len(sig) == 64
    assert verify_checkpoint(keys[signer.key_id], seq=5, chain_hash=b"\x11" * 32, signature=sig)
    assert not verify_checkpoint(keys[signer.key_id], seq=6, chain_hash=b"\x11" * 32, signature=sig)
    assert not verify_checkpoint(keys[signer.key_id], seq=5, chain_hash=b"\x12" * 32, signature=sig)


def test_raw_key_file_is_accepted(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / PRIVATE_FILE).write_bytes(
        key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
    (tmp_path / PRIVATE_FILE).chmod(0o600)
    assert AuditSigner.load_or_create(tmp_path).key_id == key_id_of(key.public_key())


def test_unusable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / PRIVATE_FILE).write_bytes(b"not a key")
    with pytest.raises(SigningKeyError, match="Ed25519") as info:
        AuditSigner.load_or_create(tmp_path)
    assert "not a key" not in str(info.value)


def test_replaced_key_keeps_the_old_public_key(tmp_path: Path) -> None:
    old = AuditSigner.load_or_create(tmp_path)
    (tmp_path / PRIVATE_FILE).unlink()
    new = AuditSigner.load_or_create(tmp_path)
    assert new.key_id != old.key_id
    assert set(load_public_keys(tmp_path)) == {old.key_id, new.key_id}
    assert (tmp_path / f"audit_signing.{old.key_id}.pub").is_file()
