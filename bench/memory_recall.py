"""Long-term memory vs plain window truncation on a long multi-session conversation (issue 16's figure).

Usage::

    python bench/memory_recall.py [--sessions 12] [--turns 10] [--seed 7] [--out bench/results/memory_recall.json]

The data set (made here, seeded): one end user talks over ``--sessions`` sessions of ``--turns`` user turns each.
Twenty facts about the user ("My sister is called Ines.", "I work as a pharmacist.") are planted at random turns;
every other turn is filler: questions about the world (never remembered) and small talk that the extractor does
remember ("I'm tired today.", "I like this weather." are distractor memories). After the last session, one question per
fact, worded differently from the statement ("Where do I live?"), with that fact's turn as its evidence. The
assistant's replies in the history are a fixed short sentence.

Compared, in the same run, on the same conversation:

- memory (hybrid): every user turn goes through ``LongTermMemory.after_turn`` (the rule extractor, dedupe, sealed
  rows in SQLite, the per-end-user vector and BM25 indexes; embeddings from the embedded all-MiniLM-L6-v2 through the
  gate), then each question through ``recall(k=5)``: hit when a returned memory's source is the evidence turn;
- memory (keywords only): the same with no embedding model (BM25 alone);
- window: plain truncation, the last 5 user turns (and their replies): hit when the evidence turn is among them;
- window (same tokens): the most recent turns that fit in the tokens the memory sent for that question.

recall@5 = hits / questions. Tokens sent per question: the prompt the model would get (the memories as instructions,
or the window's turns, or the full history; plus the question), counted with the server's own prompt estimate
(``tenantlm.tokens.estimate_prompt_tokens``, about 4 bytes a token, as admission counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenantlm.app import TenantLMApp, create_app
from tenantlm.memories.service import LongTermMemory
from tenantlm.services import Services
from tenantlm.settings import ModelConfig, ProviderConfig, Settings
from tenantlm.tenancy.models import TenantContext
from tenantlm.tokens import estimate_prompt_tokens

REPLY = "Thanks, I understand. Is there anything else I can help you with?"
K = 5
# (statement planted in the conversation, a question asked at the end that needs it)
FACTS = [
    ("My name is Tomasz Wierzbicki.", "What is my name?"),
    ("I live in Lisbon, near the river.", "Which city do I live in?"),
    ("I work as a pharmacist at a hospital.", "What is my job?"),
    ("My sister is called Ines.", "What is my sister's name?"),
    ("I'm allergic to shellfish.", "Is there any food that makes me ill?"),
    ("My favourite colour is ochre.", "Which colour do I like best?"),
    ("I have a grey parrot named Pixel.", "What kind of pet do I keep?"),
    ("I play the cello in an amateur orchestra.", "Which instrument do I play?"),
    ("My birthday is on the 14th of March.", "When is my birthday?"),
    ("I drive an old green Volvo.", "What car do I drive?"),
    ("I really like climbing in the mountains.", "What do I do for sport?"),
    ("I don't like coriander at all.", "Which herb should you leave out of my recipes?"),
    ("My daughter studies marine biology.", "What does my daughter study?"),
    ("I'm learning Japanese on weekends.", "Which language am I learning?"),
    ("My flat is on the fourth floor.", "Which floor is my flat on?"),
    ("I prefer tea over coffee in the morning.", "What do I drink in the morning?"),
    ("Remember that my gym locker code is 5521.", "What is my locker code?"),
    ("My husband is a carpenter.", "What does my husband do for work?"),
    ("I was born in Krakow.", "Where was I born?"),
    ("I'm vegetarian since 2015.", "Do I eat meat?"),
]
WORLD = ["What is the capital of Australia?", "How do vaccines work?", "Explain photosynthesis briefly.",
         "Why is the sky blue?", "How far is the moon?", "Give me a haiku about autumn.",
         "What is a prime number?", "How do I boil an egg?", "Who wrote Don Quixote?",
         "What causes tides?", "Suggest a name for a bakery.", "How does a bicycle stay upright?",
         "What is the boiling point of water at altitude?", "Summarise the plot of Hamlet.",
         "What is inflation?", "How do bees make honey?", "Translate good morning into French.",
         "What is the tallest tree species?", "How many bones are in the human body?",
         "Recommend a board game for four players."]
SMALL_TALK = ["I'm tired today.", "I like this weather.", "I'm back from lunch.", "I have a question.",
              "I'm in a hurry.", "I love a good story.", "I'm curious about space.", "I have ten minutes."]


@dataclass
class Turn:
    id: str
    session: int
    text: str


def conversation(sessions: int, turns: int, seed: int) -> tuple[list[Turn], list[tuple[str, str]]]:
    """The user's turns, in order, and the questions with their evidence turn ids."""
    rng = random.Random(seed)
    total = sessions * turns
    at = sorted(rng.sample(range(total), len(FACTS)))
    planted = dict(zip(at, range(len(FACTS)), strict=True))
    out: list[Turn] = []
    questions: list[tuple[str, str]] = []
    for n in range(total):
        turn_id = f"turn-{n:03d}"
        if n in planted:
            statement, question = FACTS[planted[n]]
            questions.append((question, turn_id))
        else:
            statement = rng.choice(SMALL_TALK) if rng.random() < 0.3 else rng.choice(WORLD)
        out.append(Turn(turn_id, n // turns, statement))
    rng.shuffle(questions)
    return out, questions


def history(turns: list[Turn]) -> list[dict[str, str]]:
    return [m for t in turns for m in ({"role": "user", "content": t.text}, {"role": "assistant", "content": REPLY})]


def tokens(messages: list[dict[str, str]]) -> int:
    return estimate_prompt_tokens(messages)


def make_app(data_dir: Path, *, embedder: bool) -> TenantLMApp:
    models = [ModelConfig(name="chat", provider="fake")]
    if embedder:
        models.append(ModelConfig(name="all-minilm-l6-v2", provider="local", kind="embedding", dimensions=384))
    settings = Settings(data_dir=data_dir, warmup=False, access_log=False,
                        knowledge_embedding_model="all-minilm-l6-v2" if embedder else "none",
                        providers=[ProviderConfig(name="fake", type="fake"),
                                   ProviderConfig(name="local", type="local")],
                        models=models)
    return create_app(settings)


async def run_memory(turns: list[Turn], questions: list[tuple[str, str]], data_dir: Path, *, embedder: bool
                     ) -> tuple[list[bool], list[int], list[list[str]]]:
    app = make_app(data_dir, embedder=embedder)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        tenant = await svc.tenancy.create_tenant({"name": "bench", "settings": {"memory": {"long_term": True}}},
                                                 actor="bench")
        key = await svc.tenancy.create_key(tenant_id=tenant.id, body={"role": "member"}, actor="bench")
        ctx = await svc.auth.authenticate(f"Bearer {key.secret}")
        assert isinstance(ctx, TenantContext)
        memory: LongTermMemory = svc.memories
        for t in turns:
            await memory.after_turn(ctx=ctx, end_user="u1", texts=[t.text], source=t.id)
        hits, sent, shown = [], [], []
        for question, evidence in questions:
            found = await memory.recall(tenant_id=ctx.tenant_id, end_user="u1", query=question, k=K, ctx=ctx)
            hits.append(any(m.source == evidence for m in found))
            notes = "What you know about the user from earlier conversations:\n" + "\n".join(f"- {m.text}"
                                                                                           for m in found)
            sent.append(tokens([{"role": "system", "content": notes}, {"role": "user", "content": question}]))
            shown.append([m.text for m in found])
        stored = len(await memory.list_memories(tenant_id=ctx.tenant_id, end_user="u1"))
        shown.append([f"{stored} memories stored"])
    return hits, sent, shown


def run_window(turns: list[Turn], questions: list[tuple[str, str]], budgets: list[int] | None
               ) -> tuple[list[bool], list[int]]:
    hits, sent = [], []
    for i, (question, evidence) in enumerate(questions):
        ask = {"role": "user", "content": question}
        if budgets is None:
            window = turns[-K:]
        else:
            window = []
            for t in reversed(turns):
                if tokens([*history([t, *window]), ask]) > budgets[i]:
                    break
                window.insert(0, t)
        hits.append(any(t.id == evidence for t in window))
        sent.append(tokens([*history(window), ask]))
    return hits, sent


def summary(hits: list[bool], sent: list[int]) -> dict[str, Any]:
    return {"recall_at_5": round(sum(hits) / len(hits), 3), "hits": sum(hits), "questions": len(hits),
            "tokens_per_question_mean": round(statistics.mean(sent), 1), "tokens_per_question_max": max(sent)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory_recall.json"))
    args = parser.parse_args()
    turns, questions = conversation(args.sessions, args.turns, args.seed)
    full = [tokens([*history(turns), {"role": "user", "content": q}]) for q, _ in questions]
    with tempfile.TemporaryDirectory() as tmp:
        hybrid_hits, hybrid_sent, shown = await run_memory(turns, questions, Path(tmp) / "hybrid", embedder=True)
        lexical_hits, lexical_sent, _ = await run_memory(turns, questions, Path(tmp) / "lexical", embedder=False)
    window_hits, window_sent = run_window(turns, questions, None)
    same_hits, same_sent = run_window(turns, questions, hybrid_sent)
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": " ".join(sys.argv),
        "data_set": {"sessions": args.sessions, "user_turns": len(turns), "facts": len(FACTS),
                     "questions": len(questions), "seed": args.seed},
        "memory_hybrid": summary(hybrid_hits, hybrid_sent),
        "memory_keywords_only": summary(lexical_hits, lexical_sent),
        "window_last_5_turns": summary(window_hits, window_sent),
        "window_same_tokens_as_memory": summary(same_hits, same_sent),
        "full_history": {"tokens_per_question_mean": round(statistics.mean(full), 1),
                         "tokens_per_question_max": max(full)},
        "memories_stored": shown[-1][0],
        "missed_by_memory": [q for (q, _), hit in zip(questions, hybrid_hits, strict=True) if not hit],
        "example": {"question": questions[0][0], "recalled": shown[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
