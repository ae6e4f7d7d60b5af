"""The sealed-record format: AES-256-GCM under a tenant's data key, bound to where the record lives.

    b"TLM1" | key_version (uint32, big-endian) | nonce (12 bytes) | AES-256-GCM ciphertext + 16-byte tag

The head names the data-key version that sealed the record (the tenant is implicit: it is bound as associated data).
The associated data is the length-prefixed tenant id, record kind and record id followed by the 8-byte head, so a
ciphertext moved to another tenant, kind or record id — or given another version number — fails to open. Nonces are
random (96 bits): stay well under 2**32 seals per data-key version (rotate the data key long before that).
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantlm.crypto.errors import DecryptionFailed

MAGIC = b"TLM1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEAD = struct.Struct(">4sI")
_LEN = struct.Struct(">I")
HEAD_BYTES = _HEAD.size
MIN_BYTES = HEAD_BYTES + NONCE_BYTES + TAG_BYTES
MAX_VERSION = 2**32 - 1


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def associated_data(tenant_id: str, kind: str, record_id: str, head: bytes) -> bytes:
    parts = [p.encode() for p in (tenant_id, kind, record_id)]
    return b"".join(_LEN.pack(len(p)) + p for p in parts) + head


def head(version: int) -> bytes:
    if not 0 < version <= MAX_VERSION:
        raise ValueError(f"key version out of range: {version}")
    return _HEAD.pack(MAGIC, version)


def key_version(ciphertext: bytes) -> int:
    """The data-key version named at the head; ``DecryptionFailed`` when the bytes are not a sealed record."""
    if not isinstance(ciphertext, bytes | bytearray | memoryview) or len(ciphertext) < MIN_BYTES:
        raise DecryptionFailed("the stored ciphertext is truncated or not in the sealed-record format")
    magic, version = _HEAD.unpack_from(ciphertext)
    if magic != MAGIC or version == 0:
        raise DecryptionFailed("the stored ciphertext is not in the sealed-record format")
    return int(version)


def seal(key: AESGCM, version: int, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes:
    h = head(version)
    nonce = os.urandom(NONCE_BYTES)
    return h + nonce + key.encrypt(nonce, plaintext, associated_data(tenant_id, kind, record_id, h))


def open_sealed(key: AESGCM, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes:
    """Decrypt a record sealed by ``seal``; the caller has already picked ``key`` by ``key_version``."""
    key_version(ciphertext)
    data = bytes(ciphertext)
    h, nonce, body = data[:HEAD_BYTES], data[HEAD_BYTES:HEAD_BYTES + NONCE_BYTES], data[HEAD_BYTES + NONCE_BYTES:]
    try:
        return key.decrypt(nonce, body, associated_data(tenant_id, kind, record_id, h))
    except InvalidTag:
        raise DecryptionFailed(
            "the stored ciphertext failed authentication (tampered, or not sealed for this tenant, kind and id)"
        ) from None
