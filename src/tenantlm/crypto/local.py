"""The ``local`` KEK provider: one key-encryption key per tenant in ``<keyring_dir>/<tenant_id>.json``.

Each tenant file holds the tenant's KEK versions, each sealed by the master key (AES-256-GCM, the tenant id and
version as associated data). Files are 0600 in a 0700 directory and written atomically (temp file, fsync, rename);
create, rotate and destroy hold an advisory lock on ``<keyring_dir>/.lock`` so several processes can share the dir.
``destroy`` overwrites the file with random bytes, fsyncs, unlinks it and leaves a ``<tenant_id>.shredded``
tombstone (no key material) so later reads answer ``KeyShredded`` rather than "missing".

Crypto-shredding holds for database backups only while the keyring directory is not backed up together with the
database (a copy of the tenant file plus the master key would reopen the tenant). On copy-on-write or
wear-levelled storage the overwrite is best effort; the unlink and the master-key sealing are what count.

The master key comes from ``TENANTLM_MASTER_KEY`` (32 bytes, base64 or hex) or from ``<data_dir>/master.key``,
created on first start with mode 0600 (``load_or_create_master_key``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantlm.crypto.aead import KEY_BYTES, NONCE_BYTES, new_key
from tenantlm.crypto.errors import DecryptionFailed, KeyShredded, KeyUnavailable, MasterKeyError
from tenantlm.crypto.kek import check_tenant_id

MASTER_KEY_FILE = "master.key"
_HOW = "python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'"
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_REF = re.compile(r"local:v([1-9][0-9]{0,9})")


# --------------------------------------------------------------------------------------------------- master key
def parse_master_key(value: str, *, source: str) -> bytes:
    """32 bytes from base64 (standard or url-safe, padding optional) or hex. The value never appears in errors."""
    text = value.strip()
    if not text:
        raise MasterKeyError(f"{source} is set but empty; generate a key with: {_HOW}")
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(
            f"{source} must be 32 random bytes encoded as base64 (44 characters) or hex (64 characters); "
            f"generate one with: {_HOW}")
    return raw


def load_or_create_master_key(data_dir: Path, env_value: str | None) -> bytes:
    """The master key: ``env_value`` (TENANTLM_MASTER_KEY) when given, else ``data_dir/master.key``, created with
    mode 0600 on first start (atomically: concurrent first starts agree on one key)."""
    if env_value is not None:
        return parse_master_key(env_value, source="TENANTLM_MASTER_KEY")
    path = Path(data_dir) / MASTER_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, base64.b64encode(new_key()) + b"\n", exclusive=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise MasterKeyError(f"{path} is accessible to other users (mode {mode:o}); run: chmod 600 {path}")
    return parse_master_key(path.read_text(), source=str(path))


# --------------------------------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a synced temp file; with ``exclusive`` an existing file wins."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


@dataclass
class _KekFile:
    tenant_id: str
    current: int
    versions: dict[int, bytes]  # version -> nonce | KEK sealed by the master key

    def dump(self) -> bytes:
        versions = {str(v): base64.b64encode(b).decode() for v, b in sorted(self.versions.items())}
        doc = {"format": 1, "tenant_id": self.tenant_id, "current": self.current, "versions": versions}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def load(cls, raw: bytes, tenant_id: str) -> _KekFile:
        try:
            doc = json.loads(raw)
            versions = {int(v): base64.b64decode(b, validate=True) for v, b in doc["versions"].items()}
            kf = cls(tenant_id=str(doc["tenant_id"]), current=int(doc["current"]), versions=versions)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise KeyUnavailable("a tenant key file in the keyring directory is unreadable") from None
        if kf.tenant_id != tenant_id or kf.current not in kf.versions:
            raise KeyUnavailable("a tenant key file in the keyring directory is inconsistent")
        return kf


# --------------------------------------------------------------------------------------------------- provider
class LocalKekProvider:
    name = "local"

    def __init__(self, keyring_dir: Path, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise MasterKeyError("the master key must be 32 bytes")
        self.dir = Path(keyring_dir)
        self._master = AESGCM(master_key)

    # -- port ---------------------------------------------------------------------------------------------------
    async def create(self, tenant_id: str) -> str:
        return await asyncio.to_thread(self._create, check_tenant_id(tenant_id))

    async def exists(self, tenant_id: str) -> bool:
        return await asyncio.to_thread(self._path(check_tenant_id(tenant_id)).exists)

    async def wrap(self, tenant_id: str, dek: bytes) -> tuple[bytes, str]:
        return await asyncio.to_thread(self._wrap, check_tenant_id(tenant_id), dek)

    async def unwrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> bytes:
        return await asyncio.to_thread(self._unwrap, check_tenant_id(tenant_id), wrapped, kek_ref)

    async def rewrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> tuple[bytes, str]:
        def run() -> tuple[bytes, str]:
            return self._wrap(tenant_id, self._unwrap(tenant_id, wrapped, kek_ref))
        check_tenant_id(tenant_id)
        return await asyncio.to_thread(run)

    async def rotate(self, tenant_id: str) -> str:
        return await asyncio.to_thread(self._rotate, check_tenant_id(tenant_id))

    async def destroy(self, tenant_id: str) -> None:
        await asyncio.to_thread(self._destroy, check_tenant_id(tenant_id))

    # -- implementation (blocking; run in a thread) --------------------------------------------------------------
    def _path(self, tenant_id: str) -> Path:
        return self.dir / f"{tenant_id}.json"

    def _tombstone(self, tenant_id: str) -> Path:
        return self.dir / f"{tenant_id}.shredded"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.dir.stat().st_mode & 0o077:
            os.chmod(self.dir, 0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _aad(self, tenant_id: str, version: int) -> bytes:
        return f"tenantlm/kek|{tenant_id}|{version}".encode()

    def _read(self, tenant_id: str) -> _KekFile:
        try:
            raw = self._path(tenant_id).read_bytes()
        except FileNotFoundError:
            if self._tombstone(tenant_id).exists():
                raise KeyShredded("this tenant's encryption keys have been destroyed") from None
            raise KeyUnavailable("the tenant's key-encryption key is missing from the keyring directory") from None
        except OSError:
            raise KeyUnavailable("the keyring directory cannot be read") from None
        return _KekFile.load(raw, tenant_id)

    def _write(self, kf: _KekFile) -> None:
        atomic_write(self._path(kf.tenant_id), kf.dump())

    def _new_version(self, tenant_id: str, version: int) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, new_key(), self._aad(tenant_id, version))

    def _kek(self, kf: _KekFile, version: int) -> AESGCM:
        sealed = kf.versions.get(version)
        if sealed is None:
            raise KeyUnavailable("the key-encryption key version named by a data key is missing")
        try:
            key = self._master.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(kf.tenant_id, version))
        except InvalidTag:
            raise KeyUnavailable("the master key does not open the keyring (wrong TENANTLM_MASTER_KEY?)") from None
        return AESGCM(key)

    def _create(self, tenant_id: str) -> str:
        with self._locked():
            if self._tombstone(tenant_id).exists():
                raise KeyShredded("this tenant's encryption keys have been destroyed")
            if not self._path(tenant_id).exists():
                self._write(_KekFile(tenant_id, 1, {1: self._new_version(tenant_id, 1)}))
            return f"local:v{self._read(tenant_id).current}"

    def _wrap(self, tenant_id: str, dek: bytes) -> tuple[bytes, str]:
        kf = self._read(tenant_id)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._kek(kf, kf.current).encrypt(nonce, dek, f"tenantlm/dek|{tenant_id}".encode())
        return wrapped, f"local:v{kf.current}"

    def _unwrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> bytes:
        m = _REF.fullmatch(kek_ref)
        if m is None:
            raise KeyUnavailable("a data key names a key-encryption key this provider does not hold")
        kek = self._kek(self._read(tenant_id), int(m.group(1)))
        try:
            return kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], f"tenantlm/dek|{tenant_id}".encode())
        except InvalidTag:
            raise DecryptionFailed("a wrapped data key failed authentication") from None

    def _rotate(self, tenant_id: str) -> str:
        with self._locked():
            kf = self._read(tenant_id)
            kf.current = max(kf.versions) + 1
            kf.versions[kf.current] = self._new_version(tenant_id, kf.current)
            self._write(kf)
            return f"local:v{kf.current}"

    def _destroy(self, tenant_id: str) -> None:
        path = self._path(tenant_id)
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, os.urandom(max(os.fstat(fd).st_size, 1)))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.unlink(path)
            atomic_write(self._tombstone(tenant_id), json.dumps({"shredded_at": time.time()}).encode())
