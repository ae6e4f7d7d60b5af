"""History assembly for a Responses request with a 50-turn conversation (goal: added latency p99 <= 5 ms, the model
excluded).

What is timed, per request: ``ConversationMemory.history(...)`` exactly as ``ResponsesService.create`` calls it for a
request naming ``conversation``: the permission check, opening the conversation (a read of its row, the end-user
scope), reading its 100 items (50 user and 50 assistant messages of about 40 words) from SQLite, opening each sealed
item with the tenant's data key, and fitting the newest of them into the context of the embedded model (2,048 tokens)
under the ``window`` policy. Nothing else of the request is timed: the model call, the search and the storing of the
answer are the same with and without a conversation.

Set-up: the real app in process (``create_app``) on a migrated SQLite database in a temporary directory, the real
keyring, a tenant with a member key and one conversation for end user ``u1``. The timed loop runs after
``gc.freeze()``; the 1-minute load average before and after is recorded (the machine is shared).

    python bench/history_assembly.py [--iterations 2000] [--turns 50] [--out bench/results/history_assembly.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tenantlm.app import create_app
from tenantlm.responses.models import parse_request
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.models import TenantContext

SENTENCE = ("the quick brown fox jumps over a lazy dog while the river runs past old mills and quiet fields of wheat "
            "under a grey sky that promises rain before evening")
WORDS = SENTENCE.split(" ")


def _text(n: int, words: int = 40) -> str:
    return " ".join(WORDS[(n + i) % len(WORDS)] for i in range(words))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _setup(svc: Services, turns: int) -> tuple[TenantContext, str]:
    tenant = await svc.tenancy.create_tenant({"name": "bench-history"}, actor="bench")
    created = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="bench")
    ctx = await svc.auth.authenticate(f"Bearer {created.secret}")
    assert isinstance(ctx, TenantContext)
    chat = await svc.conversations.create(ctx=ctx, body={}, end_user_header="u1")
    items: list[dict[str, Any]] = []
    for n in range(turns):
        items.append({"type": "message", "role": "user", "content": _text(2 * n)})
        items.append({"type": "message", "role": "assistant",
                      "content": [{"type": "output_text", "text": _text(2 * n + 1)}]})
    for start in range(0, len(items), 20):
        await svc.conversations.add_items(ctx=ctx, conversation_id=chat["id"], body={"items": items[start:start + 20]},
                                          end_user_header="u1")
    return ctx, chat["id"]


async def _run(iterations: int, turns: int, data_dir: Path) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir, warmup=False, access_log=False,
                        providers=[ProviderConfig(name="fake", type="fake", tokens=4)],
                        models=[ModelConfig(name="chat", provider="fake", context_length=2048)])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        ctx, conversation_id = await _setup(svc, turns)
        request = parse_request({"model": "chat", "input": "What did we say about the river?",
                                 "conversation": conversation_id})
        memory = svc.responses.conversation_memory
        assert memory is not None

        async def once() -> Any:
            return await memory.history(ctx=ctx, request=request, conversation_id=conversation_id, end_user="u1",
                                        end_user_header="u1", context_length=2048, tokenizer=None)

        first = await once()
        for _ in range(50):  # warm the connection pool and the data key cache
            await once()
        gc.collect()
        gc.freeze()
        load_before = os.getloadavg()[0]
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            await once()
            samples.append((time.perf_counter() - t0) * 1e3)
        load_after = os.getloadavg()[0]
        gc.unfreeze()
    return {"turns": turns, "items_in_conversation": 2 * turns, "items_sent": first.items,
            "iterations": iterations, "p50_ms": round(statistics.median(samples), 3),
            "p90_ms": round(_pct(samples, 90), 3), "p99_ms": round(_pct(samples, 99), 3),
            "max_ms": round(max(samples), 3), "load_1m_before": load_before, "load_1m_after": load_after,
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/results/history_assembly.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(_run(args.iterations, args.turns, Path(tmp)))
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
