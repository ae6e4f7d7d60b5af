"""The CLI for limits, plans, encryption, the request log, export, the audit trail and erasure."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from live import Live, cli


def test_limits_and_plans_from_the_cli(sqlite_server: Live) -> None:
    t = sqlite_server.new_tenant("cli-limits")
    out = cli(sqlite_server, "limits", "set", t.id, '{"rpm": 9, "weight": 2}', "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rpm"] == 9 and json.loads(out.stdout)["weight"] == 2.0
    table = cli(sqlite_server, "limits", "get", t.id)
    assert table.returncode == 0 and "rpm" in table.stdout and "9" in table.stdout
    bad = cli(sqlite_server, "limits", "set", t.id, '{"rpm": -3}')
    assert bad.returncode == 2 and "rpm" in bad.stderr
    assert cli(sqlite_server, "limits", "set", t.id, "not json").returncode != 0
    made = cli(sqlite_server, "limits", "set-plan", "cli-team", '{"rpm": 5}', "--description", "from the cli")
    assert made.returncode == 0, made.stderr
    plans = cli(sqlite_server, "limits", "plans")
    assert plans.returncode == 0 and "cli-team" in plans.stdout and "free" in plans.stdout
    tenant_admin = cli(sqlite_server, "limits", "set", t.id, '{"rpm": 100000}', key=t.admin_key)
    assert tenant_admin.returncode == 2 and "403" in tenant_admin.stderr


def test_tenant_data_lifecycle_from_the_cli(sqlite_server: Live, tmp_path: Path) -> None:
    t = sqlite_server.new_tenant("cli-data")
    on = cli(sqlite_server, "tenants", "update", t.id, "--settings", '{"request_log_days": 3}', "--json")
    assert on.returncode == 0 and json.loads(on.stdout)["settings"]["request_log_days"] == 3
    sqlite_server.sdk(t.member_key).chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "from the cli test"}])
    listed = cli(sqlite_server, "tenants", "requests", t.id, "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["data"]) == 1
    status = cli(sqlite_server, "encryption", "status", t.id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["active_version"] == 1
    rotated = cli(sqlite_server, "encryption", "rotate", t.id, "--json")
    assert rotated.returncode == 0 and json.loads(rotated.stdout)["active_version"] == 2
    kek = cli(sqlite_server, "encryption", "rotate", t.id, "--kek")
    assert kek.returncode == 0 and "VERSION" in kek.stdout
    archive = tmp_path / "t.zip"
    exported = cli(sqlite_server, "tenants", "export", t.id, "-o", str(archive), key=t.admin_key)
    assert exported.returncode == 0, exported.stderr
    assert "from the cli test" in zipfile.ZipFile(archive).read("request_log.jsonl").decode()
    trail = cli(sqlite_server, "audit", "list", "--tenant", t.id, "--json", key=t.admin_key)
    actions = [e["action"] for e in json.loads(trail.stdout)["data"]]
    assert {"encryption.dek_rotated", "encryption.kek_rotated", "tenant.exported"} <= set(actions)
    assert cli(sqlite_server, "audit", "list", key=t.admin_key).returncode == 2  # the platform trail is not theirs
    missing = cli(sqlite_server, "tenants", "export", "ten_nope", "-o", str(tmp_path / "x.zip"))
    assert missing.returncode == 2 and not (tmp_path / "x.zip").exists()
    deleted = cli(sqlite_server, "tenants", "delete", t.id, "--yes", "--json")
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["keys_shredded"] is True
    assert cli(sqlite_server, "tenants", "get", t.id).returncode == 2
