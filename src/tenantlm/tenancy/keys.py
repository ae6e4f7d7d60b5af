"""API key format, generation and verification.

Tenant keys look like ``tlm_`` + 16 hex characters (the key id) + 43 base62 characters (the secret, 256 bits).
Platform admin keys use the prefix ``tlmadmin_`` with the same body. The id lets the server find the stored record
without searching by secret; the full key is then hashed (SHA-256: the secret is 256 random bits, so a slow hash
adds nothing) and compared with ``hmac.compare_digest``. Only the hash and a 4-character hint are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Literal

TENANT_PREFIX = "tlm_"
ADMIN_PREFIX = "tlmadmin_"
_ID_LEN = 16
_SECRET_LEN = 43
_ALPHABET = string.ascii_letters + string.digits
_HEX = frozenset("0123456789abcdef")
KeyKind = Literal["tenant", "admin"]
_BODY = re.compile(f"[0-9a-f]{{{_ID_LEN}}}[A-Za-z0-9]{{{_SECRET_LEN}}}")  # key id, then secret


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: KeyKind
    key_id: str
    token: str


def _random_b62(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_key_id() -> str:
    return secrets.token_hex(_ID_LEN // 2)


def make_token(prefix: str, key_id: str) -> str:
    return f"{prefix}{key_id}{_random_b62(_SECRET_LEN)}"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def hint(token: str) -> str:
    return token[-4:]


def matches(token_hash: bytes, stored_hash: bytes) -> bool:
    """Whether a presented key's hash (``hash_token``) is the stored one, compared in constant time."""
    return hmac.compare_digest(token_hash, stored_hash)


def parse(token: str) -> ParsedKey | None:
    """Recognise the shape of a key without touching storage; None for anything malformed."""
    kinds: tuple[tuple[str, KeyKind], ...] = ((ADMIN_PREFIX, "admin"), (TENANT_PREFIX, "tenant"))
    for prefix, kind in kinds:
        if token.startswith(prefix):
            if _BODY.fullmatch(token, len(prefix)) is None:
                return None
            return ParsedKey(kind=kind, key_id=token[len(prefix):len(prefix) + _ID_LEN], token=token)
    return None


def public_key_id(key_id: str) -> str:
    return f"key_{key_id}"


def internal_key_id(public_id: str) -> str | None:
    if not public_id.startswith("key_"):
        return None
    raw = public_id[4:]
    return raw if len(raw) == _ID_LEN and set(raw) <= _HEX else None
