"""An in-process stand-in for the slice of Vault's transit engine that ``VaultTransitKekProvider`` uses.

It keeps ``hvac``'s call surface (``client.secrets.transit.<method>(name, ..., mount_point=...)``), answers with the
same JSON shapes and raises the same ``hvac.exceptions`` for the same conditions (a 404 on reading a missing key, a
400 for a missing key elsewhere, a failed tag, a disallowed deletion), and does real AES-256-GCM with HKDF-derived
per-context keys, so tests exercise the adapter's code paths without patching. ``down = True`` makes every call
raise ``VaultDown``; ``calls`` records method names.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import hvac.exceptions  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@dataclass
class _Key:
    derived: bool
    versions: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, float] = field(default_factory=dict)
    min_decryption_version: int = 1
    deletion_allowed: bool = False

    def add_version(self) -> None:
        v = max(self.versions, default=0) + 1
        self.versions[v] = AESGCM.generate_key(bit_length=256)
        self.created[v] = time.time()

    @property
    def latest(self) -> int:
        return max(self.versions)


def _invalid(message: str) -> hvac.exceptions.InvalidRequest:
    return hvac.exceptions.InvalidRequest(message, errors=[message])


def _b64decode(value: str | None, what: str) -> bytes:
    try:
        return base64.b64decode(value or "", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"failed to base64-decode {what}") from None


class FakeTransit:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], _Key] = {}
        self.down = False
        self.calls: list[str] = []
        self._lock = threading.Lock()

    # -- key management -------------------------------------------------------------------------------------------
    def create_key(self, name: str, convergent_encryption: Any = None, derived: bool | None = None,
                   exportable: Any = None, allow_plaintext_backup: Any = None, key_type: str | None = None,
                   mount_point: str = "transit", auto_rotate_period: Any = None) -> None:
        with self._enter("create_key"):
            if key_type not in (None, "aes256-gcm96"):
                raise _invalid(f"unsupported key type in this fake: {key_type}")
            if (mount_point, name) not in self.keys:
                key = _Key(derived=bool(derived))
                key.add_version()
                self.keys[(mount_point, name)] = key

    def read_key(self, name: str, mount_point: str = "transit") -> dict[str, Any]:
        with self._enter("read_key"):
            key = self.keys.get((mount_point, name))
            if key is None:
                raise hvac.exceptions.InvalidPath(errors=[])
            return {"data": {
                "name": name, "type": "aes256-gcm96", "derived": key.derived, "latest_version": key.latest,
                "min_decryption_version": key.min_decryption_version, "deletion_allowed": key.deletion_allowed,
                "keys": {str(v): int(t) for v, t in key.created.items()},
            }}

    def rotate_key(self, name: str, mount_point: str = "transit") -> None:
        with self._enter("rotate_key"):
            self._get(name, mount_point).add_version()

    def update_key_configuration(self, name: str, min_decryption_version: int | None = None,
                                 min_encryption_version: int | None = None, deletion_allowed: bool | None = None,
                                 exportable: Any = None, allow_plaintext_backup: Any = None,
                                 mount_point: str = "transit", auto_rotate_period: Any = None) -> None:
        with self._enter("update_key_configuration"):
            key = self._get(name, mount_point)
            if deletion_allowed is not None:
                key.deletion_allowed = deletion_allowed
            if min_decryption_version is not None:
                key.min_decryption_version = min_decryption_version

    def delete_key(self, name: str, mount_point: str = "transit") -> None:
        with self._enter("delete_key"):
            key = self._get(name, mount_point)
            if not key.deletion_allowed:
                raise _invalid("deletion is not allowed for this key")
            del self.keys[(mount_point, name)]

    # -- data operations --------------------------------------------------------------------------------------------
    def encrypt_data(self, name: str, plaintext: str | None = None, context: str | None = None,
                     key_version: int | None = None, nonce: Any = None, batch_input: Any = None, type: Any = None,
                     convergent_encryption: Any = None, mount_point: str = "transit",
                     associated_data: Any = None) -> dict[str, Any]:
        with self._enter("encrypt_data"):
            if (mount_point, name) not in self.keys:  # Vault upserts the key on encrypt
                key = _Key(derived=context is not None)
                key.add_version()
                self.keys[(mount_point, name)] = key
            return {"data": {"ciphertext": self._encrypt(name, mount_point, _b64decode(plaintext, "plaintext"),
                                                         context, key_version)}}

    def decrypt_data(self, name: str, ciphertext: str | None = None, context: str | None = None, nonce: Any = None,
                     batch_input: Any = None, mount_point: str = "transit",
                     associated_data: Any = None) -> dict[str, Any]:
        with self._enter("decrypt_data"):
            plain = self._decrypt(name, mount_point, ciphertext or "", context)
            return {"data": {"plaintext": base64.b64encode(plain).decode()}}

    def rewrap_data(self, name: str, ciphertext: str, context: str | None = None, key_version: int | None = None,
                    nonce: Any = None, batch_input: Any = None, mount_point: str = "transit") -> dict[str, Any]:
        with self._enter("rewrap_data"):
            plain = self._decrypt(name, mount_point, ciphertext, context)
            return {"data": {"ciphertext": self._encrypt(name, mount_point, plain, context, key_version)}}

    # -- internals --------------------------------------------------------------------------------------------------
    def _enter(self, method: str) -> threading.Lock:
        self.calls.append(method)
        if self.down:
            raise hvac.exceptions.VaultDown("Vault is sealed", errors=["Vault is sealed"])
        return self._lock

    def _get(self, name: str, mount_point: str) -> _Key:
        key = self.keys.get((mount_point, name))
        if key is None:
            raise _invalid("encryption key not found")
        return key

    def _aead(self, key: _Key, version: int, context: str | None) -> AESGCM:
        raw = key.versions[version]
        if not key.derived:
            return AESGCM(raw)
        if not context:
            raise _invalid("missing 'context' for key derivation; the key was created using a derived key")
        info = _b64decode(context, "context")
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw))

    def _encrypt(self, name: str, mount: str, plain: bytes, context: str | None, version: int | None) -> str:
        key = self._get(name, mount)
        v = version or key.latest
        if v not in key.versions:
            raise _invalid("requested version for encryption is not available")
        iv = os.urandom(12)
        body = iv + self._aead(key, v, context).encrypt(iv, plain, None)
        return f"vault:v{v}:{base64.b64encode(body).decode()}"

    def _decrypt(self, name: str, mount: str, ciphertext: str, context: str | None) -> bytes:
        key = self._get(name, mount)
        prefix, _, rest = ciphertext.partition(":")
        tag, _, b64 = rest.partition(":")
        if prefix != "vault" or not tag.startswith("v") or not tag[1:].isdigit():
            raise _invalid("invalid ciphertext: no prefix")
        v = int(tag[1:])
        if v < key.min_decryption_version:
            raise _invalid("ciphertext or signature version is disallowed by policy (too old)")
        if v not in key.versions:
            raise _invalid("invalid ciphertext: version is too new")
        body = _b64decode(b64, "ciphertext")
        try:
            return self._aead(key, v, context).decrypt(body[:12], body[12:], None)
        except (InvalidTag, ValueError):
            raise _invalid("cipher: message authentication failed") from None


class _Secrets:
    def __init__(self, transit: FakeTransit) -> None:
        self.transit = transit


class FakeVaultClient:
    """``hvac.Client``'s shape: ``FakeVaultClient().secrets.transit.encrypt_data(...)``."""

    def __init__(self) -> None:
        self.transit = FakeTransit()
        self.secrets = _Secrets(self.transit)
