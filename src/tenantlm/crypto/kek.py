"""The key-encryption-key port. One KEK per tenant, held OUTSIDE the database, so destroying it (``destroy``) makes
every data key wrapped by it — in the live database and in any backup of it — impossible to unwrap.

A ``kek_ref`` names the KEK version that wrapped a data key (``local:v2``, ``vault:tenantlm-ten_x:v3``); it is stored
next to the wrapped key so that a rotated KEK still unwraps older rows until they are rewrapped.

Adapters: ``local.LocalKekProvider`` (key files under the data dir, sealed by the master key) and
``vault.VaultTransitKekProvider`` (HashiCorp Vault transit). Errors: ``KeyShredded`` when the KEK is known to be
destroyed, ``KeyUnavailable`` when it cannot be reached, ``DecryptionFailed`` when a wrapped key does not
authenticate.
"""

from __future__ import annotations

import re
from typing import Protocol

_TENANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_tenant_id(tenant_id: str) -> str:
    """Tenant ids end up in file names and KMS key names: allow only a safe alphabet."""
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise ValueError("tenant_id must be 1-64 characters of [A-Za-z0-9_-]")
    return tenant_id


class KekProvider(Protocol):
    name: str

    async def create(self, tenant_id: str) -> str:
        """Create the tenant's KEK if absent (idempotent, safe across processes); return the current kek_ref."""
        ...

    async def exists(self, tenant_id: str) -> bool: ...

    async def wrap(self, tenant_id: str, dek: bytes) -> tuple[bytes, str]:
        """Encrypt a data key under the tenant's current KEK version: (wrapped, kek_ref)."""
        ...

    async def unwrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> bytes: ...

    async def rewrap(self, tenant_id: str, wrapped: bytes, kek_ref: str) -> tuple[bytes, str]:
        """Re-encrypt a wrapped data key under the current KEK version."""
        ...

    async def rotate(self, tenant_id: str) -> str:
        """Add a KEK version and make it current; older versions still unwrap. Returns the new kek_ref."""
        ...

    async def destroy(self, tenant_id: str) -> None:
        """Irreversibly destroy every version of the tenant's KEK. Idempotent."""
        ...
