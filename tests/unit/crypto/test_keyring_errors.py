"""The keyring's errors sit in the server's error tree with the statuses the API renders."""

from __future__ import annotations

from tenantlm.crypto.errors import DecryptionFailed, KeyShredded, KeyUnavailable
from tenantlm.errors import NotFound, ServiceUnavailable, TenantLMError


def test_statuses_and_bodies() -> None:
    shredded, unavailable, failed = KeyShredded("gone"), KeyUnavailable("down"), DecryptionFailed("bad")
    assert isinstance(shredded, NotFound) and shredded.status == 404
    assert isinstance(unavailable, ServiceUnavailable) and unavailable.status == 503
    assert isinstance(failed, TenantLMError) and failed.status == 500
    assert shredded.body() == {"error": {"message": "gone", "type": "invalid_request_error", "param": None,
                                         "code": "tenant_keys_shredded"}}
    assert unavailable.body()["error"]["code"] == "key_unavailable"
    assert failed.body()["error"] == {"message": "bad", "type": "api_error", "param": None,
                                      "code": "decryption_failed"}
