"""VaultTransitKekProvider against the in-tree FakeVaultClient (hvac's call surface, real AES-GCM inside)."""

from __future__ import annotations

import base64

import hvac.exceptions  # type: ignore[import-untyped]
import pytest

from tenantlm.crypto.errors import DecryptionFailed, KeyUnavailable
from tenantlm.crypto.fake_vault import FakeVaultClient
from tenantlm.crypto.vault import VaultTransitKekProvider

DEK = bytes(range(32))


@pytest.fixture
def fake() -> FakeVaultClient:
    return FakeVaultClient()


@pytest.fixture
def vault(fake: FakeVaultClient) -> VaultTransitKekProvider:
    return VaultTransitKekProvider(fake, mount_point="kms")


async def test_create_makes_a_derived_per_tenant_key(fake: FakeVaultClient, vault: VaultTransitKekProvider) -> None:
    assert not await vault.exists("ten_a")
    assert await vault.create("ten_a") == "vault:tenantlm-ten_a:v1"
    assert await vault.create("ten_a") == "vault:tenantlm-ten_a:v1"
    assert await vault.exists("ten_a")
    info = fake.transit.read_key("tenantlm-ten_a", mount_point="kms")["data"]
    assert info["derived"] is True and info["deletion_allowed"] is False
    assert list(fake.transit.keys) == [("kms", "tenantlm-ten_a")]


async def test_wrap_unwrap_round_trip(vault: VaultTransitKekProvider) -> None:
    await vault.create("ten_a")
    wrapped, ref = await vault.wrap("ten_a", DEK)
    assert wrapped.startswith(b"vault:v1:") and ref == "vault:tenantlm-ten_a:v1"
    assert await vault.unwrap("ten_a", wrapped, ref) == DEK


async def test_context_binds_the_tenant(fake: FakeVaultClient, vault: VaultTransitKekProvider) -> None:
    await vault.create("ten_a")
    await vault.create("ten_b")
    wrapped, ref = await vault.wrap("ten_a", DEK)
    with pytest.raises(DecryptionFailed):
        await vault.unwrap("ten_b", wrapped, ref)
    other_context = base64.b64encode(b"ten_b").decode()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authentication failed"):
        fake.transit.decrypt_data("tenantlm-ten_a", ciphertext=wrapped.decode(), context=other_context,
                                  mount_point="kms")
    with pytest.raises(DecryptionFailed):
        await vault.unwrap("ten_a", b"\xff\xfe", ref)


async def test_rotate_and_rewrap(fake: FakeVaultClient, vault: VaultTransitKekProvider) -> None:
    await vault.create("ten_a")
    old, old_ref = await vault.wrap("ten_a", DEK)
    assert await vault.rotate("ten_a") == "vault:tenantlm-ten_a:v2"
    new, new_ref = await vault.rewrap("ten_a", old, old_ref)
    assert new.startswith(b"vault:v2:") and new_ref == "vault:tenantlm-ten_a:v2"
    assert await vault.unwrap("ten_a", old, old_ref) == DEK == await vault.unwrap("ten_a", new, new_ref)
    assert "rewrap_data" in fake.transit.calls


async def test_destroy_deletes_the_transit_key(fake: FakeVaultClient, vault: VaultTransitKekProvider) -> None:
    await vault.create("ten_a")
    await vault.create("ten_b")
    wrapped, ref = await vault.wrap("ten_a", DEK)
    other, other_ref = await vault.wrap("ten_b", DEK)
    await vault.destroy("ten_a")
    assert fake.transit.calls[-2:] == ["update_key_configuration", "delete_key"]
    assert ("kms", "tenantlm-ten_a") not in fake.transit.keys and not await vault.exists("ten_a")
    with pytest.raises(KeyUnavailable):
        await vault.unwrap("ten_a", wrapped, ref)
    await vault.destroy("ten_a")  # idempotent
    assert await vault.unwrap("ten_b", other, other_ref) == DEK


async def test_the_fake_refuses_deletion_unless_allowed(fake: FakeVaultClient) -> None:
    fake.transit.create_key("k")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="deletion is not allowed"):
        fake.transit.delete_key("k")
    with pytest.raises(hvac.exceptions.InvalidPath):
        fake.transit.read_key("missing")


async def test_vault_down_is_unavailable(fake: FakeVaultClient, vault: VaultTransitKekProvider) -> None:
    await vault.create("ten_a")
    wrapped, ref = await vault.wrap("ten_a", DEK)
    fake.transit.down = True
    with pytest.raises(KeyUnavailable, match="VaultDown") as info:
        await vault.unwrap("ten_a", wrapped, ref)
    assert info.value.status == 503
    fake.transit.down = False
    assert await vault.unwrap("ten_a", wrapped, ref) == DEK


async def test_connection_errors_are_unavailable() -> None:
    from tenantlm.crypto.vault import vault_client

    client = vault_client("http://127.0.0.1:9", "token", timeout_s=2)
    with pytest.raises(KeyUnavailable, match="unavailable"):
        await VaultTransitKekProvider(client).create("ten_a")
