"""The keyring: per-tenant, versioned data keys (DEKs) wrapped by the tenant's key-encryption key (KEK), and the one
API every store uses to encrypt tenant content:

    sealed = await keyring.seal(tenant_id=t, kind="conversation_item", record_id=item_id, plaintext=data)
    data = await keyring.open(tenant_id=t, kind="conversation_item", record_id=item_id, ciphertext=sealed)

Data keys live wrapped in ``tenant_keys`` (SQL); the KEK lives outside the database in a ``KekProvider`` (key files
or Vault). Plaintext data keys are cached in memory for ``cache_ttl_s``; after a rotation or a shred in another
process this process notices within that TTL (``evict_tenant`` is the hook for a faster cross-replica signal).

- ``rotate_dek``: new writes use a new version; older versions stay readable (``rewrap_record`` moves a record
  forward, ``drop_dek_version`` removes a version no record uses any more).
- ``rotate_kek``: a new KEK version, then every wrapped DEK row of the tenant is rewrapped; no record is touched.
- ``shred``: destroys the KEK first (so every copy of the wrapped DEKs, backups included, becomes useless), then
  deletes the DEK rows leaving a tombstone, then evicts the cache. Afterwards ``seal``/``open`` raise ``KeyShredded``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tenantlm.cache import TtlCache
from tenantlm.crypto import aead
from tenantlm.crypto.errors import DecryptionFailed, KeyShredded
from tenantlm.crypto.kek import KekProvider, check_tenant_id
from tenantlm.crypto.store import ACTIVE, SHREDDED, DekRow, KeyStore
from tenantlm.errors import Conflict, NotFound
from tenantlm.storage.sql.engine import Database

_SHREDDED_MSG = "this tenant's encryption keys have been destroyed"


@dataclass(frozen=True)
class KeyInfo:
    version: int
    state: str
    kek_ref: str
    created_at: float


class Keyring:
    def __init__(self, db: Database, kek: KekProvider, *, cache_ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = KeyStore(db)
        self.kek = kek
        self._deks: TtlCache[tuple[str, int], AESGCM] = TtlCache(ttl_s=cache_ttl_s, clock=clock)
        self._active: TtlCache[str, int] = TtlCache(ttl_s=cache_ttl_s, clock=clock)
        self._derived: TtlCache[tuple[str, str, int], bytes] = TtlCache(ttl_s=cache_ttl_s, clock=clock)

    # --- the record API -----------------------------------------------------------------------------------------
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes:
        _check_names(kind, record_id)
        version = self._active.get(tenant_id) or await self._active_version(tenant_id)
        key = self._deks.get((tenant_id, version)) or await self._dek(tenant_id, version)
        return aead.seal(key, version, tenant_id=tenant_id, kind=kind, record_id=record_id, plaintext=plaintext)

    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes:
        _check_names(kind, record_id)
        version = aead.key_version(ciphertext)
        key = self._deks.get((tenant_id, version)) or await self._dek(tenant_id, version)
        return aead.open_sealed(key, tenant_id=tenant_id, kind=kind, record_id=record_id, ciphertext=ciphertext)

    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes | None:
        """The record sealed under the active data key, or None when it already is (or is newer)."""
        version = aead.key_version(ciphertext)
        if version >= await self._active_version(tenant_id):
            return None
        plain = await self.open(tenant_id=tenant_id, kind=kind, record_id=record_id, ciphertext=ciphertext)
        return await self.seal(tenant_id=tenant_id, kind=kind, record_id=record_id, plaintext=plain)

    async def derive_key(self, *, tenant_id: str, purpose: str) -> bytes:
        """A 32-byte secret for ``purpose`` (e.g. keying the response cache's HMAC), derived with HKDF-SHA256 from
        the tenant's active data key: the same on every replica while that key is active, another one after a
        rotation, and gone with a shred (``KeyShredded``)."""
        _check_names(purpose, tenant_id)
        version = self._active.get(tenant_id) or await self._active_version(tenant_id)

        async def load() -> bytes:
            rows = {r.version: r for r in await self.store.get(tenant_id=tenant_id, version=version)}
            if any(r.state == SHREDDED for r in rows.values()):
                raise KeyShredded(_SHREDDED_MSG)
            row = rows.get(version)
            if row is None:
                raise DecryptionFailed("the tenant's active data key is missing")
            dek = await self.kek.unwrap(tenant_id, row.wrapped, row.kek_ref)
            info = f"tenantlm:{purpose}:{tenant_id}:{version}".encode()
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)
        return await self._derived.get_or_load((tenant_id, purpose, version), load)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def ensure_tenant(self, tenant_id: str) -> int:
        """Create the tenant's KEK and first data key if absent; returns the active version. Idempotent and safe
        under concurrent callers in any number of processes (the primary key picks one winner)."""
        check_tenant_id(tenant_id)
        rows = await self.store.active(tenant_id=tenant_id)
        if rows:
            return self._pick_active(rows)
        if not await self.store.tenant_exists(tenant_id=tenant_id):
            raise NotFound("no such tenant")  # before creating a KEK that nothing would ever use
        await self.kek.create(tenant_id)
        dek = aead.new_key()
        wrapped, ref = await self.kek.wrap(tenant_id, dek)
        if await self.store.insert_first(tenant_id=tenant_id, row=DekRow(1, wrapped, ref, ACTIVE)):
            self._remember(tenant_id, 1, dek)
            return 1
        rows = await self.store.active(tenant_id=tenant_id)
        if not rows:
            raise NotFound("no such tenant")
        return self._pick_active(rows)

    async def rotate_dek(self, *, tenant_id: str) -> int:
        """Make a new data-key version the active one; returns it. Older versions keep opening their records."""
        rows = await self._live_rows(tenant_id)
        if not rows:
            return await self.ensure_tenant(tenant_id)
        version = max(r.version for r in rows) + 1
        dek = aead.new_key()
        wrapped, ref = await self.kek.wrap(tenant_id, dek)
        if await self.store.rotate(tenant_id=tenant_id, row=DekRow(version, wrapped, ref, ACTIVE)):
            self._remember(tenant_id, version, dek)
            return version
        # another caller rotated at the same moment: its version is the new one
        self._active.evict(lambda t, _v: t == tenant_id)
        return await self._active_version(tenant_id)

    async def rotate_kek(self, *, tenant_id: str) -> str:
        """Rotate the tenant's KEK and rewrap every data key under the new version; returns the new kek_ref."""
        if not await self._live_rows(tenant_id):
            await self.ensure_tenant(tenant_id)
        new_ref = await self.kek.rotate(tenant_id)
        for row in await self._live_rows(tenant_id):
            if row.kek_ref == new_ref:
                continue
            wrapped, ref = await self.kek.rewrap(tenant_id, row.wrapped, row.kek_ref)
            # compare-and-set: a concurrent rotate_kek may have rewrapped this row already, which is just as good
            await self.store.replace_wrapped(tenant_id=tenant_id, version=row.version, old=row.wrapped,
                                             new=wrapped, kek_ref=ref)
        return new_ref

    async def shred(self, *, tenant_id: str) -> None:
        """Crypto-shred: destroy the KEK, then the wrapped data keys, then the cached ones. Idempotent."""
        check_tenant_id(tenant_id)
        await self.kek.destroy(tenant_id)
        await self.store.shred(tenant_id=tenant_id)
        self.evict_tenant(tenant_id)

    async def drop_dek_version(self, *, tenant_id: str, version: int) -> bool:
        """Delete a retired data-key version once no record is sealed under it (the active one is refused)."""
        if version == await self._active_version(tenant_id):
            raise Conflict("the active data key cannot be dropped; rotate first")
        dropped = await self.store.delete_version(tenant_id=tenant_id, version=version)
        self._deks.evict(lambda k, _v: k == (tenant_id, version))
        return dropped

    async def describe(self, *, tenant_id: str) -> list[KeyInfo]:
        """The tenant's data-key versions (no key material), for the admin API and the CLI."""
        return [KeyInfo(r.version, r.state, r.kek_ref, r.created_at)
                for r in await self.store.list_rows(tenant_id=tenant_id)]

    def evict_tenant(self, tenant_id: str) -> None:
        """Forget the tenant's cached keys now (called by shred; also the hook for cross-replica invalidation)."""
        self._deks.evict(lambda k, _v: k[0] == tenant_id)
        self._active.evict(lambda t, _v: t == tenant_id)
        self._derived.evict(lambda k, _v: k[0] == tenant_id)

    # --- internals ----------------------------------------------------------------------------------------------
    async def _active_version(self, tenant_id: str) -> int:
        return await self._active.get_or_load(tenant_id, lambda: self.ensure_tenant(tenant_id))

    async def _dek(self, tenant_id: str, version: int) -> AESGCM:
        async def load() -> AESGCM:
            check_tenant_id(tenant_id)
            rows = {r.version: r for r in await self.store.get(tenant_id=tenant_id, version=version)}
            if any(r.state == SHREDDED for r in rows.values()):
                raise KeyShredded(_SHREDDED_MSG)
            row = rows.get(version)
            if row is None:
                raise DecryptionFailed("the record names a data-key version this tenant does not have")
            return AESGCM(await self.kek.unwrap(tenant_id, row.wrapped, row.kek_ref))
        return await self._deks.get_or_load((tenant_id, version), load)

    async def _live_rows(self, tenant_id: str) -> list[DekRow]:
        rows = await self.store.list_rows(tenant_id=check_tenant_id(tenant_id))
        if any(r.state == SHREDDED for r in rows):
            raise KeyShredded(_SHREDDED_MSG)
        return rows

    @staticmethod
    def _pick_active(rows: list[DekRow]) -> int:
        if any(r.state == SHREDDED for r in rows):
            raise KeyShredded(_SHREDDED_MSG)
        return rows[0].version

    def _remember(self, tenant_id: str, version: int, dek: bytes) -> None:
        self._deks.put((tenant_id, version), AESGCM(dek))
        self._active.put(tenant_id, version)


def _check_names(kind: str, record_id: str) -> None:
    if not isinstance(kind, str) or not kind or not isinstance(record_id, str) or not record_id:
        raise ValueError("kind and record_id must be non-empty strings")
