"""Details are JSON objects without secrets; entry fields are bounded."""

from __future__ import annotations

from typing import Any

import pytest

from tenantlm.audit.service import AuditLog, looks_secret, validate_details
from tenantlm.audit.signer import AuditSigner
from tenantlm.storage.sql.engine import Database

TOKEN = "tlm_0123456789abcdef" + "A" * 43


@pytest.mark.parametrize("name", ["key", "secret", "token", "password", "authorization", "api_key", "apiKey",
                                  "API-Key", "private_key", "access_token", "client_secret", "secret_hash",
                                  "db_password", "Authorization", "credentials", "refreshToken"])
def test_secret_looking_names_are_refused(name: str) -> None:
    assert looks_secret(name)
    with pytest.raises(ValueError, match="secret"):
        validate_details({name: "x"})


@pytest.mark.parametrize("details", [{"outer": {"token": "x"}}, {"list": [{"ok": 1}, {"password": "x"}]},
                                     {"note": f"used {TOKEN}"}, {"h": "Bearer abcdefghijk"}])
def test_nested_secrets_and_credential_values_are_refused(details: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="secret"):
        validate_details(details)


@pytest.mark.parametrize("name", ["key_id", "key_prefix", "max_tokens", "tokens", "role", "hint", "dek_version",
                                  "keys_revoked", "monkey"])
def test_ordinary_names_pass(name: str) -> None:
    assert not looks_secret(name)
    assert validate_details({name: 1}) == {name: 1}


@pytest.mark.parametrize("bad", [[1], "x", None, {"x": float("inf")}, {"x": object()}, {1: "int key"},
                                 {"x": b"bytes"}, {"x": "y" * 70_000}])
def test_non_json_or_oversized_details_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        validate_details(bad)


def test_details_are_normalized_to_json() -> None:
    assert validate_details({"t": (1, 2), "n": {"x": None}}) == {"t": [1, 2], "n": {"x": None}}


async def test_append_checks_fields_before_touching_the_database(tmp_path: Any) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")  # never migrated: nothing may reach it
    audit = AuditLog(db, AuditSigner.generate())
    good: dict[str, Any] = {"actor": "a", "action": "x.y", "tenant_id": None, "request_id": None, "details": {}}
    try:
        for bad in ({"action": "Bad Action"}, {"action": ""}, {"actor": ""}, {"tenant_id": "t" * 41},
                    {"request_id": "r\n"}, {"details": {"secret": "s"}}):
            with pytest.raises(ValueError):
                await audit.append(**{**good, **bad})
    finally:
        await db.dispose()
    with pytest.raises(ValueError):
        AuditLog(db, AuditSigner.generate(), checkpoint_every=0)
