"""The keyring's errors, placed in the server's one error tree (``tenantlm.errors``).

    NotFound (404)            └── KeyShredded       code=tenant_keys_shredded
    ServiceUnavailable (503)  └── KeyUnavailable    code=key_unavailable
    TenantLMError (500)       └── DecryptionFailed  code=decryption_failed
    ValueError                └── MasterKeyError    (configuration, raised at start; never reaches HTTP)

``KeyShredded`` is a 404: once a tenant's keys are destroyed its content does not exist any more for anyone, and a
404 is what a missing record answers everywhere else (no existence oracle). ``KeyUnavailable`` is a 503 because it is
an operational fault worth retrying (the KMS is down, the keyring directory is not mounted, the master key does not
match). ``DecryptionFailed`` is a 500: a stored ciphertext that does not authenticate is corruption or tampering on
the server's side, never the caller's fault. Messages never carry key material, ciphertext or another tenant's id.
"""

from __future__ import annotations

from tenantlm.errors import NotFound, ServiceUnavailable, TenantLMError


class KeyShredded(NotFound):
    code = "tenant_keys_shredded"


class KeyUnavailable(ServiceUnavailable):
    code = "key_unavailable"


class DecryptionFailed(TenantLMError):
    code = "decryption_failed"


class MasterKeyError(ValueError):
    """The master key is missing, malformed or stored with unsafe permissions."""
