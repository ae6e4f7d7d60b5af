"""LocalKekProvider: per-tenant KEK files sealed by the master key."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from tenantlm.crypto.errors import DecryptionFailed, KeyShredded, KeyUnavailable
from tenantlm.crypto.local import LocalKekProvider

DEK = bytes(range(32))


async def test_create_is_idempotent_and_private(local_kek: LocalKekProvider) -> None:
    assert not await local_kek.exists("ten_a")
    assert await local_kek.create("ten_a") == "local:v1"
    assert await local_kek.create("ten_a") == "local:v1"
    assert await local_kek.exists("ten_a")
    path = local_kek.dir / "ten_a.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(local_kek.dir.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["tenant_id"] == "ten_a" and doc["current"] == 1 and set(doc["versions"]) == {"1"}
    assert sorted(p.name for p in local_kek.dir.iterdir()) == [".lock", "ten_a.json"]


async def test_wrap_unwrap_round_trip(local_kek: LocalKekProvider) -> None:
    await local_kek.create("ten_a")
    wrapped, ref = await local_kek.wrap("ten_a", DEK)
    assert ref == "local:v1" and DEK not in wrapped and len(wrapped) == 12 + 32 + 16
    assert await local_kek.unwrap("ten_a", wrapped, ref) == DEK
    assert DEK.hex() not in (local_kek.dir / "ten_a.json").read_text()


async def test_a_wrapped_key_only_unwraps_for_its_tenant(local_kek: LocalKekProvider) -> None:
    for t in ("ten_a", "ten_b"):
        await local_kek.create(t)
    wrapped, ref = await local_kek.wrap("ten_a", DEK)
    with pytest.raises(DecryptionFailed):
        await local_kek.unwrap("ten_b", wrapped, ref)
    with pytest.raises(DecryptionFailed):
        await local_kek.unwrap("ten_a", wrapped[:-1] + bytes([wrapped[-1] ^ 1]), ref)


async def test_rotate_keeps_old_versions_readable(local_kek: LocalKekProvider) -> None:
    await local_kek.create("ten_a")
    old, old_ref = await local_kek.wrap("ten_a", DEK)
    assert await local_kek.rotate("ten_a") == "local:v2"
    assert await local_kek.create("ten_a") == "local:v2"
    new, new_ref = await local_kek.wrap("ten_a", DEK)
    assert new_ref == "local:v2"
    assert await local_kek.unwrap("ten_a", old, old_ref) == DEK == await local_kek.unwrap("ten_a", new, new_ref)
    rewrapped, ref = await local_kek.rewrap("ten_a", old, old_ref)
    assert ref == "local:v2" and rewrapped != old and await local_kek.unwrap("ten_a", rewrapped, ref) == DEK
    with pytest.raises(KeyUnavailable):
        await local_kek.unwrap("ten_a", old, "local:v9")
    with pytest.raises(KeyUnavailable):
        await local_kek.unwrap("ten_a", old, "vault:x:v1")


async def test_destroy_removes_the_file_and_unwrap_fails(local_kek: LocalKekProvider) -> None:
    for t in ("ten_a", "ten_b"):
        await local_kek.create(t)
    wrapped, ref = await local_kek.wrap("ten_a", DEK)
    other, other_ref = await local_kek.wrap("ten_b", DEK)
    await local_kek.destroy("ten_a")
    assert not (local_kek.dir / "ten_a.json").exists() and not await local_kek.exists("ten_a")
    assert (local_kek.dir / "ten_a.shredded").exists()
    assert not [p for p in local_kek.dir.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(KeyShredded):
        await local_kek.unwrap("ten_a", wrapped, ref)
    with pytest.raises(KeyShredded):
        await local_kek.create("ten_a")
    with pytest.raises(KeyShredded):
        await local_kek.rotate("ten_a")
    await local_kek.destroy("ten_a")  # idempotent
    assert await local_kek.unwrap("ten_b", other, other_ref) == DEK


async def test_other_master_key_cannot_open_the_keyring(local_kek: LocalKekProvider) -> None:
    await local_kek.create("ten_a")
    wrapped, ref = await local_kek.wrap("ten_a", DEK)
    impostor = LocalKekProvider(local_kek.dir, os.urandom(32))
    with pytest.raises(KeyUnavailable, match="master key"):
        await impostor.unwrap("ten_a", wrapped, ref)


async def test_missing_or_corrupt_file_is_unavailable_not_shredded(local_kek: LocalKekProvider) -> None:
    await local_kek.create("ten_a")
    wrapped, ref = await local_kek.wrap("ten_a", DEK)
    path = local_kek.dir / "ten_a.json"
    saved = path.read_bytes()
    path.write_bytes(b"{not json")
    with pytest.raises(KeyUnavailable, match="unreadable"):
        await local_kek.unwrap("ten_a", wrapped, ref)
    path.unlink()
    with pytest.raises(KeyUnavailable, match="missing"):
        await local_kek.unwrap("ten_a", wrapped, ref)
    (local_kek.dir / "ten_b.json").write_bytes(saved)  # a file copied under another tenant's name
    with pytest.raises(KeyUnavailable, match="inconsistent"):
        await local_kek.wrap("ten_b", DEK)


async def test_concurrent_creates_and_rotations_lose_nothing(tmp_path: Path, master_key: bytes) -> None:
    # two providers over one directory stand for two processes
    p1, p2 = LocalKekProvider(tmp_path / "k", master_key), LocalKekProvider(tmp_path / "k", master_key)
    refs = await asyncio.gather(*(p.create("ten_a") for p in (p1, p2) * 5))
    assert set(refs) == {"local:v1"}
    wrapped = [await p1.wrap("ten_a", DEK)]
    new_refs = await asyncio.gather(*(p.rotate("ten_a") for p in (p1, p2) * 3))
    assert sorted(new_refs) == [f"local:v{v}" for v in range(2, 8)]
    wrapped.append(await p2.wrap("ten_a", DEK))
    for w, ref in wrapped:
        assert await p1.unwrap("ten_a", w, ref) == DEK


@pytest.mark.parametrize("bad", ["", "../etc", "ten/a", "a" * 65, "ten a", "ten.a"])
async def test_unsafe_tenant_ids_are_refused(local_kek: LocalKekProvider, bad: str) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        await local_kek.create(bad)


def test_master_key_length_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LocalKekProvider(tmp_path, b"short")
