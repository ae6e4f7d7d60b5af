"""The kill -9 property at the ledger level: a child process records events from many producers (flushing to SQLite
in the background) and prints each acknowledged id; it is killed with SIGKILL mid-burst; after recover + flush every
acknowledged id is in SQL exactly once, and the rollups still equal a GROUP BY over the events. Three rounds in the
same journal and database, killed at different points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tenantlm.metering.ledger import Ledger
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.migrate import migrate

CHILD = Path(__file__).with_name("ledger_crash_child.py")


def run_and_kill(url: str, directory: Path, run: str, acks: int, sync: str) -> set[str]:
    """Start the child, read acknowledged ids until ``acks`` of them, SIGKILL it, return every id it acknowledged."""
    proc = subprocess.Popen([sys.executable, str(CHILD), url, str(directory), run, sync], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(seen) < acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child died: {proc.stderr.read().decode()[-2000:]}")
        seen.append(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read()  # ids written to the pipe before the kill were acknowledged too
    proc.stdout.close()
    proc.stderr.close()
    lines = b"".join(seen) + rest
    return {x.decode() for x in lines.split(b"\n")[:-1]}  # only complete lines


async def counts(db: Database) -> dict[str, int]:
    async with db.platform_tx() as conn:
        rows = await conn.execute(sa.text("SELECT id, count(*) AS n FROM usage_events GROUP BY id"))
        return {r.id: int(r.n) for r in rows}


async def rollups_match_events(db: Database) -> bool:
    by_events = ("SELECT tenant_id, day, model, count(*), sum(prompt_tokens), sum(completion_tokens), "
                 "sum(cached_tokens), sum(cost_nanousd) FROM usage_events GROUP BY tenant_id, day, model")
    by_rollups = ("SELECT tenant_id, day, model, requests, prompt_tokens, completion_tokens, cached_tokens, "
                  "cost_nanousd FROM usage_rollups")
    async with db.platform_tx() as conn:
        a = sorted(tuple(r) for r in await conn.execute(sa.text(by_events)))
        b = sorted(tuple(r) for r in await conn.execute(sa.text(by_rollups)))
    return a == b and len(a) > 0


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["always", "interval"])
async def test_every_acknowledged_event_survives_kill_9_exactly_once(tmp_path: Path, sync: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await migrate(url=url, migrate_url=None)
    directory = tmp_path / "ledger"
    acknowledged: set[str] = set()
    for run, acks in (("a", 300), ("b", 3000), ("c", 1200)):
        acknowledged |= run_and_kill(url, directory, run, acks, sync)
        db = Database.from_url(url)
        ledger = Ledger(db=db, directory=directory)
        await ledger.start()
        await ledger.recover()
        await ledger.close()
        found = await counts(db)
        missing = acknowledged - found.keys()
        assert not missing, f"run {run}: {len(missing)} acknowledged events lost"
        assert all(n == 1 for n in found.values())
        assert await rollups_match_events(db), run
        assert not list(directory.glob("*.seg"))  # every segment flushed and deleted
        await db.dispose()
    assert len(acknowledged) >= 4500
