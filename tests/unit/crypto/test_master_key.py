"""The master key: from TENANTLM_MASTER_KEY or a 0600 file created at first start."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from tenantlm.crypto.errors import MasterKeyError
from tenantlm.crypto.local import load_or_create_master_key, parse_master_key

RAW = bytes(range(1, 33))


@pytest.mark.parametrize("text", [
    RAW.hex(), RAW.hex().upper(), base64.b64encode(RAW).decode(), base64.urlsafe_b64encode(RAW).decode().rstrip("="),
    f"  {base64.b64encode(RAW).decode()}\n",
])
def test_env_value_in_hex_or_base64(tmp_path: Path, text: str) -> None:
    assert load_or_create_master_key(tmp_path, text) == RAW
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize("text", ["", "   ", "too-short", base64.b64encode(RAW[:31]).decode(),
                                  base64.b64encode(RAW + b"x").decode(), RAW.hex()[:-1] + "g", "é" * 44])
def test_bad_env_value_has_a_clear_message_without_the_value(tmp_path: Path, text: str) -> None:
    with pytest.raises(MasterKeyError, match="TENANTLM_MASTER_KEY") as info:
        load_or_create_master_key(tmp_path, text)
    msg = str(info.value)
    assert "base64" in msg or "empty" in msg
    if text.strip():
        assert text.strip() not in msg


def test_file_created_once_with_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_master_key(data_dir, None)
    path = data_dir / "master.key"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_master_key(data_dir, None) == first
    assert parse_master_key(path.read_text(), source="file") == first
    assert [p.name for p in data_dir.iterdir()] == ["master.key"]  # no temp files left


def test_env_wins_over_file(tmp_path: Path) -> None:
    load_or_create_master_key(tmp_path, None)
    assert load_or_create_master_key(tmp_path, RAW.hex()) == RAW


def test_group_readable_file_is_refused(tmp_path: Path) -> None:
    load_or_create_master_key(tmp_path, None)
    os.chmod(tmp_path / "master.key", 0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_or_create_master_key(tmp_path, None)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match=r"master\.key must be 32 random bytes"):
        load_or_create_master_key(tmp_path, None)


def test_concurrent_first_starts_agree(tmp_path: Path) -> None:
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(load_or_create_master_key(tmp_path, None))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
