"""Tenant content encryption: envelope encryption with a per-tenant KEK outside the database and versioned,
per-tenant data keys inside it. Stores use ``Keyring.seal`` / ``Keyring.open``; ``app.py`` builds the provider
(``LocalKekProvider`` or ``vault.VaultTransitKekProvider``, imported only when configured)."""

from tenantlm.crypto.errors import DecryptionFailed, KeyShredded, KeyUnavailable, MasterKeyError
from tenantlm.crypto.kek import KekProvider
from tenantlm.crypto.keyring import KeyInfo, Keyring
from tenantlm.crypto.local import LocalKekProvider, load_or_create_master_key, parse_master_key

__all__ = [
    "DecryptionFailed",
    "KekProvider",
    "KeyInfo",
    "KeyShredded",
    "KeyUnavailable",
    "Keyring",
    "LocalKekProvider",
    "MasterKeyError",
    "load_or_create_master_key",
    "parse_master_key",
]
