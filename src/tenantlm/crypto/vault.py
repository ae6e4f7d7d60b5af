"""The ``vault`` KEK provider: HashiCorp Vault's transit engine holds one key per tenant (``tenantlm-<tenant_id>``).

Data keys are wrapped by ``transit/encrypt`` and never stored by Vault; the tenant id is the key-derivation context
(``derived=True``), so a wrapped key only unwraps for the tenant it was wrapped for. KEK rotation is
``transit/keys/<name>/rotate`` plus ``transit/rewrap`` of each data key (the data key never leaves Vault in the
clear while being rewrapped). Shredding sets ``deletion_allowed`` and deletes the transit key.

``client`` is an ``hvac.Client`` (``vault_client(...)`` builds one) or ``fake_vault.FakeVaultClient`` in tests; hvac
is synchronous, so each call runs in a worker thread. The Vault token needs create/update/read/delete on
``<mount>/keys/tenantlm-*`` and update on ``<mount>/{encrypt,decrypt,rewrap}/tenantlm-*``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import hvac.exceptions  # type: ignore[import-untyped]

from tenantlm.crypto.errors import DecryptionFailed, KeyUnavailable
from tenantlm.crypto.kek import check_tenant_id

T = TypeVar("T")
_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/=]+")


class TransitApi(Protocol):
    """The part of ``hvac.api.secrets_engines.Transit`` this adapter uses."""

    def create_key(self, name: str, **kw: Any) -> Any: ...
    def read_key(self, name: str, **kw: Any) -> Any: ...
    def encrypt_data(self, name: str, **kw: Any) -> Any: ...
    def decrypt_data(self, name: str, **kw: Any) -> Any: ...
    def rewrap_data(self, name: str, ciphertext: str, **kw: Any) -> Any: ...
    def rotate_key(self, name: str, **kw: Any) -> Any: ...
    def update_key_configuration(self, name: str, **kw: Any) -> Any: ...
    def delete_key(self, name: str, **kw: Any) -> Any: ...


class _Secrets(Protocol):
    @property
    def transit(self) -> TransitApi: ...


class VaultClient(Protocol):
    @property
    def secrets(self) -> _Secrets: ...


def vault_client(url: str, token: str, *, namespace: str | None = None, verify: bool | str = True,
                 timeout_s: float = 10.0) -> VaultClient:
    """An ``hvac.Client`` for ``VaultTransitKekProvider``."""
    import hvac  # the package is only needed when the vault provider is configured

    client: VaultClient = hvac.Client(url=url, token=token, namespace=namespace, verify=verify, timeout=timeout_s)
    return client


class VaultTransitKekProvider:
    name = "vault"

    def __init__(self, client: VaultClient, *, mount_point: str = "transit", key_prefix: str = "tenantlm-") -> None:
        self._transit = client.secrets.transit
        self._mount = mount_point
        self._prefix = key_prefix

    # -- port ---------------------------------------------------------------------------------------------------
    async def create(self, tenant_id: str) -> str:
        name = self._key(tenant_id)
        await self._call(self._transit.create_key, name, key_type="aes256-gcm96", derived=True)
        return await self._current_ref(name)

    async def exists(self, tenant_id: str) -> bool:
        try:
            await self._call(self._transit.read_key, self._key(tenant_id), probe=True)
        except _Missing:
            return False
        return True

    async def wrap(self, tenant_id: str, dek: bytes) -> tuple[bytes, str]:
        name = self._key(tenant_id)
        resp = await self._call(self._transit.encrypt_data, name, plaintext=_b64(dek), context=_b64(tenant_id.encode()))
        return self._wrapped(name, resp)

    async def unwrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> bytes:
        name = self._key(tenant_id)
        resp = await self._call(self._transit.decrypt_data, name, ciphertext=_text(wrapped),
                                context=_b64(tenant_id.encode()))
        try:
            return base64.b64decode(resp["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise KeyUnavailable("the key service returned an unexpected answer") from None

    async def rewrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> tuple[bytes, str]:
        name = self._key(tenant_id)
        resp = await self._call(self._transit.rewrap_data, name, ciphertext=_text(wrapped),
                                context=_b64(tenant_id.encode()))
        return self._wrapped(name, resp)

    async def rotate(self, tenant_id: str) -> str:
        name = self._key(tenant_id)
        await self._call(self._transit.rotate_key, name)
        return await self._current_ref(name)

    async def destroy(self, tenant_id: str) -> None:
        name = self._key(tenant_id)
        if not await self.exists(tenant_id):
            return
        await self._call(self._transit.update_key_configuration, name, deletion_allowed=True)
        await self._call(self._transit.delete_key, name)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _key(self, tenant_id: str) -> str:
        return f"{self._prefix}{check_tenant_id(tenant_id)}"

    async def _current_ref(self, name: str) -> str:
        resp = await self._call(self._transit.read_key, name)
        try:
            return f"vault:{name}:v{int(resp['data']['latest_version'])}"
        except (KeyError, TypeError, ValueError):
            raise KeyUnavailable("the key service returned an unexpected answer") from None

    def _wrapped(self, name: str, resp: Any) -> tuple[bytes, str]:
        try:
            ciphertext = str(resp["data"]["ciphertext"])
        except (KeyError, TypeError):
            raise KeyUnavailable("the key service returned an unexpected answer") from None
        m = _CIPHERTEXT.fullmatch(ciphertext)
        if m is None:
            raise KeyUnavailable("the key service returned an unexpected answer")
        return ciphertext.encode(), f"vault:{name}:v{m.group(1)}"

    async def _call(self, fn: Callable[..., T], name: str, *, probe: bool = False, **kw: Any) -> T:
        """One transit call in a worker thread, its failures mapped onto the keyring's errors (``probe``: a missing
        key raises ``_Missing`` for ``exists``)."""
        try:
            return await asyncio.to_thread(fn, name, mount_point=self._mount, **kw)
        except hvac.exceptions.InvalidPath:
            if probe:
                raise _Missing from None
            raise KeyUnavailable("the tenant's key is missing from the key service") from None
        except hvac.exceptions.InvalidRequest as exc:
            if "authentication failed" in str(exc):
                raise DecryptionFailed("a wrapped data key failed authentication") from None
            raise KeyUnavailable("the key service refused the request (key missing or misconfigured)") from None
        except (hvac.exceptions.VaultError, OSError) as exc:  # requests' errors are OSErrors
            raise KeyUnavailable(f"the key service is unavailable ({type(exc).__name__})") from None


class _Missing(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _text(wrapped: bytes) -> str:
    try:
        return bytes(wrapped).decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionFailed("a wrapped data key is not a Vault transit ciphertext") from None
