"""The Ed25519 key that signs audit checkpoints.

The private key lives in ``data_dir/audit_signing.key`` (PKCS#8 PEM, mode 0600), created at first start; the public
key is written next to it as ``audit_signing.pub`` so that ``tenantlm audit verify`` can check checkpoints without the
private key. ``key_id`` = first 16 hex digits of SHA-256(raw public key); every checkpoint records it.

If the private key is replaced, the previous public key is kept as ``audit_signing.<old key id>.pub`` so that older
checkpoints still verify. In scale-out, every replica must load the same key (mount the same file), or each
replica's public key must be placed in the verifier's data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tenantlm.audit.chain import checkpoint_message

log = logging.getLogger("tenantlm.audit")
PRIVATE_FILE = "audit_signing.key"
PUBLIC_FILE = "audit_signing.pub"


class SigningKeyError(RuntimeError):
    """The signing key file exists but cannot be used."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_checkpoint(public_key: Ed25519PublicKey, *, seq: int, chain_hash: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, checkpoint_message(seq, chain_hash))
    except InvalidSignature:
        return False
    return True


class AuditSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> AuditSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> AuditSigner:
        """Load ``data_dir/audit_signing.key``, creating it (0600) on first start; (re)write the public key file."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / PRIVATE_FILE
        private = _create(path) if not path.exists() else None
        if private is None:
            private = _load(path)
        signer = cls(private)
        _publish(data_dir, signer.public_key)
        return signer

    def sign(self, seq: int, chain_hash: bytes) -> bytes:
        return self._private.sign(checkpoint_message(seq, chain_hash))


def _create(path: Path) -> Ed25519PrivateKey | None:
    """Write a new key atomically (temp file, then a hard link that fails if another process won the race)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None  # another process created it first: load theirs
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created the audit signing key (key id %s)", key_id_of(key.public_key()))
    return key


def _load(path: Path) -> Ed25519PrivateKey:
    if path.stat().st_mode & 0o077:
        log.warning("the audit signing key file is readable by group or others; chmod 600 it")
    data = path.read_bytes()
    try:
        key = (serialization.load_pem_private_key(data, password=None) if data.lstrip().startswith(b"-----")
               else Ed25519PrivateKey.from_private_bytes(data))
    except (ValueError, TypeError):
        raise SigningKeyError(f"cannot read the audit signing key {path}: not an unencrypted Ed25519 key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"the audit signing key {path} is not an Ed25519 key")
    return key


def _publish(data_dir: Path, public_key: Ed25519PublicKey) -> None:
    path = data_dir / PUBLIC_FILE
    pem = public_pem(public_key)
    if path.exists():
        old = path.read_bytes()
        if old == pem:
            return
        with contextlib.suppress(ValueError, TypeError):
            previous = serialization.load_pem_public_key(old)
            if isinstance(previous, Ed25519PublicKey):
                (data_dir / f"audit_signing.{key_id_of(previous)}.pub").write_bytes(old)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


def load_public_keys(data_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``audit_signing*.pub`` in ``data_dir``, by key id (the current key and any kept after a change)."""
    found: dict[str, Ed25519PublicKey] = {}
    for path in sorted(data_dir.glob("audit_signing*.pub")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, TypeError):
            log.warning("ignoring %s: not a PEM public key", path.name)
            continue
        if isinstance(key, Ed25519PublicKey):
            found[key_id_of(key)] = key
    return found
