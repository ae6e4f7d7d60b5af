"""A tenant verifies its own chain from its export alone: every hash recomputed, every link checked, the first bad
entry named; and ``tenantlm audit verify --export FILE`` runs it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tenantlm.audit.chain import GENESIS, recompute_tenant
from tenantlm.audit.models import TenantAuditEntry
from tenantlm.audit.verify import verify_tenant_export
from tenantlm.cli import app


def chain(n: int, tenant_id: str = "ten_a") -> list[TenantAuditEntry]:
    out: list[TenantAuditEntry] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        draft = TenantAuditEntry(tenant_id=tenant_id, seq=seq, ts_us=1_700_000_000_000_000 + seq, actor="system:t",
                                 action="key.created", request_id=f"req_{seq}", details={"n": seq}, prev_hash=prev,
                                 hash=b"")
        entry = replace(draft, hash=recompute_tenant(draft))
        out.append(entry)
        prev = entry.hash
    return out


def lines(entries: list[TenantAuditEntry]) -> list[str]:
    return [json.dumps(e.public(), sort_keys=True) for e in entries]


def edit(line: str, **changes: Any) -> str:
    return json.dumps({**json.loads(line), **changes})


async def test_an_intact_export_verifies() -> None:
    report = await verify_tenant_export([*lines(chain(6)), "", "  "])  # blank lines are ignored
    assert (report.ok, report.entries, report.head_seq, report.tenant_id) == (True, 6, 6, "ten_a"), report
    assert report.line() == "audit chain of tenant ten_a intact: 6 entries, linked from genesis to seq 6"
    empty = await verify_tenant_export([])
    assert empty.ok and empty.entries == 0 and empty.message == "the file holds no entries"


def _edited(ls: list[str]) -> list[str]:
    return [*ls[:2], edit(ls[2], details={"n": 999}), *ls[3:]]


def _deleted(ls: list[str]) -> list[str]:
    return [*ls[:2], *ls[3:]]


def _first_deleted(ls: list[str]) -> list[str]:
    return ls[1:]


def _lines_swapped(ls: list[str]) -> list[str]:
    return [*ls[:2], ls[3], ls[2], *ls[4:]]


def _renumbered(ls: list[str]) -> list[str]:  # entries 3 and 4 trade places and numbers
    return [*ls[:2], edit(ls[3], seq=3), edit(ls[2], seq=4), *ls[4:]]


def _rewritten(ls: list[str]) -> list[str]:  # entry 3 changed and given a correctly recomputed hash
    e = chain(6)[2]
    forged = replace(e, details={"n": 999})
    forged = replace(forged, hash=recompute_tenant(forged))
    return [*ls[:2], json.dumps(forged.public()), *ls[3:]]


@pytest.mark.parametrize("tamper,problem,seq", [
    (_edited, "edited", 3), (_deleted, "deleted", 3), (_first_deleted, "deleted", 1),
    (_lines_swapped, "reordered", 3), (_renumbered, "reordered", 3), (_rewritten, "edited", 3),
])
async def test_tampering_is_named(tamper: Any, problem: str, seq: int) -> None:
    report = await verify_tenant_export(tamper(lines(chain(6))))
    assert (report.ok, report.problem, report.first_bad_seq) == (False, problem, seq), report
    assert report.line().startswith(f"audit chain of tenant ten_a TAMPERED ({problem} at seq {seq})")


@pytest.mark.parametrize("bad,why", [
    ("not json", "not an audit entry"),
    (json.dumps({"chain": "platform", "seq": 1}), "not a tenant chain entry"),
    (edit(lines(chain(1))[0], prev_hash="zz"), "not an audit entry"),
    (edit(lines(chain(1))[0], details=[1]), "details is not an object"),
    (edit(lines(chain(1))[0], seq="2"), "seq is not an integer"),
    (edit(lines(chain(1))[0], seq=2.0), "seq is not an integer"),
    (edit(lines(chain(1))[0], actor=7), "actor is not a string"),
    (edit(lines(chain(1))[0], request_id=True), "request_id is not a string or null"),
    (json.dumps({"chain": "tenant"}), "not an audit entry (KeyError"),
])
async def test_a_line_that_is_not_a_tenant_entry_is_malformed(bad: str, why: str) -> None:
    report = await verify_tenant_export([lines(chain(1))[0], bad])
    assert (report.ok, report.problem) == (False, "malformed") and report.message.startswith(f"line 2: {why}")


async def test_one_file_one_tenant() -> None:
    report = await verify_tenant_export([*lines(chain(2)), *lines(chain(2, "ten_b"))])
    assert report.problem == "malformed" and "2 tenants" in report.message


def test_cli_verifies_an_export_file(tmp_path: Path) -> None:
    path = tmp_path / "audit-ten_a.jsonl"
    path.write_text("\n".join(lines(chain(4))) + "\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--export", str(path)])
    assert ok.exit_code == 0 and "audit chain of tenant ten_a intact: 4 entries" in ok.output
    path.write_text("\n".join(_deleted(lines(chain(4)))) + "\n")
    bad = runner.invoke(app, ["audit", "verify", "--export", str(path), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.output)["first_bad_seq"] == 3
    mixed = runner.invoke(app, ["audit", "verify", "--export", str(path), "--tenant", "ten_a"])
    assert mixed.exit_code == 2 and "--export reads only the file" in mixed.output
