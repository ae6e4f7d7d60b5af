"""The CLI mirrors the admin API; a server without TENANTLM_ADMIN_KEY prints one admin key once, at first start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from live import Live, ServerConfig, cli, start_server


def test_cli_creates_tenant_and_key_that_work(sqlite_server: Live) -> None:
    made = cli(sqlite_server, "tenants", "create", "cli-tenant", "--plan", "pro", "--json")
    assert made.returncode == 0, made.stderr
    tenant = json.loads(made.stdout)
    assert tenant["name"] == "cli-tenant" and tenant["plan"] == "pro"
    key = cli(sqlite_server, "keys", "create", tenant["id"], "--role", "member", "--json")
    assert key.returncode == 0, key.stderr
    secret = json.loads(key.stdout)["key"]
    assert sqlite_server.sdk(secret).models.list().data
    listed = cli(sqlite_server, "keys", "list", tenant["id"], "--json")
    assert secret not in listed.stdout and json.loads(listed.stdout)["data"][0]["role"] == "member"
    table = cli(sqlite_server, "tenants", "list")
    assert table.returncode == 0 and "cli-tenant" in table.stdout and "ID" in table.stdout
    assert cli(sqlite_server, "tenants", "suspend", tenant["id"], "--json").returncode == 0
    assert httpx.get(sqlite_server.url + "/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 403
    revoke = cli(sqlite_server, "keys", "revoke", tenant["id"], json.loads(key.stdout)["id"], "--json")
    assert revoke.returncode == 0 and json.loads(revoke.stdout)["revoked_at"]


def test_cli_errors_are_clear(sqlite_server: Live) -> None:
    missing = cli(sqlite_server, "tenants", "get", "ten_doesnotexist")
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    bad_key = cli(sqlite_server, "tenants", "list", key="tlm_wrong")
    assert bad_key.returncode == 2 and "401" in bad_key.stderr
    refused = cli(sqlite_server, "tenants", "delete", "ten_x")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    helped = subprocess.run([sys.executable, "-m", "tenantlm.cli", "keys", "create", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "--role" in helped.stdout


def test_generated_admin_key_is_printed_once(tmp_path: Path) -> None:
    cfg = ServerConfig(providers=[{"name": "fake", "type": "fake"}], models=[{"name": "m", "provider": "fake"}],
                       env={"TENANTLM_ADMIN_KEY": ""})
    data = tmp_path / "data"
    first = start_server(tmp_path, cfg, data_dir=data)
    try:
        found = re.findall(r"tlmadmin_[0-9a-f]{16}[A-Za-z0-9]{43}", first.output())
        assert len(found) == 1
        token = found[0]
        r = httpx.post(first.url + "/admin/v1/tenants", json={"name": "boot"},
                       headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 201
        logged = [line for line in first.output().splitlines() if line.startswith("{")]
        assert all(token not in line for line in logged)
    finally:
        first.stop()
    second = start_server(tmp_path, cfg, data_dir=data)
    try:
        assert "tlmadmin_" not in second.output()
        r = httpx.get(second.url + "/admin/v1/tenants", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and [t["name"] for t in r.json()["data"]] == ["boot"]
    finally:
        second.stop()
