"""``tenantlm files`` and ``tenantlm vector-stores`` against a live server with a tenant key: a store filled from the
shell with a progress bar, a failed file reported with its error and exit status 3, search, download and deletion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from live import Live, Tenant, catalog_config, start_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("knowledge-cli")
    config = catalog_config(None, local=False)
    config.env.update({"TENANTLM_KNOWLEDGE_EMBEDDING_MODEL": "fake-embed"})
    proc = start_server(tmp, config, warmup=False)
    try:
        yield Live(proc.url, proc, "sqlite")
    finally:
        proc.stop()


def _cli(live: Live, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TENANTLM_")}
    env = {**clean, "TENANTLM_URL": live.url, "TENANTLM_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "tenantlm.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def _docs(tmp_path: Path) -> list[Path]:
    docs = {"tides.txt": "Tides rise and fall twice a day, pulled by the moon.",
            "ferns.md": "# Ferns\n\nFerns reproduce with spores instead of seeds.",
            "broken.pdf": "this is not a pdf at all"}
    for name, text in docs.items():
        (tmp_path / name).write_text(text)
    return [tmp_path / name for name in docs]


def test_a_store_filled_from_the_shell(live: Live, tmp_path: Path) -> None:
    tenant: Tenant = live.new_tenant(f"cli-k-{uuid.uuid4().hex[:8]}")
    made = _cli(live, tenant.member_key, "vector-stores", "create", "notes", "--json")
    assert made.returncode == 0, made.stderr
    store_id = json.loads(made.stdout)["id"]

    added = _cli(live, tenant.member_key, "vector-stores", "add", store_id, *map(str, _docs(tmp_path)), "--json")
    assert added.returncode == 3, added.stderr  # one file failed
    batch = json.loads(added.stdout)
    assert batch["status"] == "completed"
    assert batch["file_counts"] == {"in_progress": 0, "completed": 2, "failed": 1, "cancelled": 0, "total": 3}
    assert "ingesting" in added.stderr
    [failure] = [line for line in added.stderr.splitlines() if line.startswith("failed:")]
    assert "invalid_file" in failure

    listed = _cli(live, tenant.member_key, "vector-stores", "list")
    assert listed.returncode == 0 and "2/3 done, 1 failed" in listed.stdout
    found = _cli(live, tenant.member_key, "vector-stores", "search", store_id, "spores", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["data"][0]["filename"] == "ferns.md"

    files = json.loads(_cli(live, tenant.member_key, "files", "list", "--json").stdout)["data"]
    assert sorted(f["filename"] for f in files) == ["broken.pdf", "ferns.md", "tides.txt"]
    tides = next(f["id"] for f in files if f["filename"] == "tides.txt")
    out = tmp_path / "copy.txt"
    assert _cli(live, tenant.member_key, "files", "download", tides, "-o", str(out)).returncode == 0
    assert out.read_text() == (tmp_path / "tides.txt").read_text()
    assert _cli(live, tenant.member_key, "files", "delete", tides).returncode == 0
    assert tides not in _cli(live, tenant.member_key, "files", "list").stdout
    assert _cli(live, tenant.member_key, "vector-stores", "delete", store_id).returncode == 0


def test_errors_are_one_line_with_a_status(live: Live, tmp_path: Path) -> None:
    tenant = live.new_tenant(f"cli-e-{uuid.uuid4().hex[:8]}")
    viewer = _cli(live, tenant.viewer_key, "vector-stores", "create", "nope")
    assert viewer.returncode == 2 and "HTTP 403" in viewer.stderr
    missing = _cli(live, tenant.member_key, "vector-stores", "search", "vs_" + "0" * 24, "q")
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    no_key = _cli(live, "", "files", "list")
    assert no_key.returncode == 1 and "TENANTLM_API_KEY" in no_key.stderr
