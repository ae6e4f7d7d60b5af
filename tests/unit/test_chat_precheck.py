"""The chat request pre-check may skip the full validation only for bodies that validation accepts: compared with
``ChatCompletionRequest.model_validate`` on the common shapes and on many random, malformed and edge-case bodies."""

from __future__ import annotations

import math
import random
from typing import Any

from pydantic import ValidationError

from tenantlm.api.openai.protocol import ChatCompletionRequest, plainly_valid_chat

ODD: list[Any] = [None, True, False, 0, 1, -1, 2, 3, 129, 128, 1.0, 0.5, 2.0, 2.5, -0.1, math.nan, math.inf, "", "x",
                  "user", "tool", "robot", "1", [], ["a"], [{}], {}, {"role": "user"}, "m" * 256, "m" * 257, 10**30]
FIELDS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
          "top_p", "n", "stop", "seed", "tools", "user", "safety_identifier", "response_format", "logprobs"]


def accepted(body: dict[str, Any]) -> bool:
    try:
        ChatCompletionRequest.model_validate(body)
    except ValidationError:
        return False
    return True


def message(rng: random.Random) -> Any:
    if rng.random() < 0.1:
        return rng.choice(ODD)
    out: dict[str, Any] = {}
    if rng.random() < 0.95:
        out["role"] = rng.choice(["system", "developer", "user", "assistant", "tool", "function", "robot", 3, None])
    if rng.random() < 0.9:
        out["content"] = rng.choice(["hello", "", None, 7, ["x"], [{"type": "text", "text": "hi"}], {"a": 1}])
    if rng.random() < 0.2:
        out["name"] = rng.choice(["n", 1])
    return out


def body(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for name in rng.sample(FIELDS, rng.randrange(0, 6)):
        if name == "messages" and rng.random() < 0.7:
            out[name] = [message(rng) for _ in range(rng.randrange(0, 4))]
        elif name in out and rng.random() < 0.3:
            del out[name]
        else:
            out[name] = rng.choice(ODD)
    return out


def test_the_common_shapes_are_recognised() -> None:
    plain = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    usual = {**plain, "max_tokens": 16, "temperature": 0.2, "top_p": 1, "n": 1, "seed": 7, "stream": False,
             "user": "u-1", "max_completion_tokens": None, "metadata": {"any": "extra field"}}
    for b in (plain, usual):
        assert plainly_valid_chat(b) and accepted(b)


def test_it_says_valid_only_where_the_full_validation_agrees() -> None:
    rng = random.Random(20261129)
    said_yes = 0
    for _ in range(20_000):
        b = body(rng)
        if plainly_valid_chat(b):
            said_yes += 1
            assert accepted(b), b
    assert said_yes > 1_000  # the check is not vacuous: it recognised many bodies


def test_edges_fall_back_to_the_full_validation() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for extra in ({"stream": None}, {"stream": 1}, {"max_tokens": 0}, {"max_tokens": True}, {"max_tokens": 2.0},
                  {"temperature": math.nan}, {"temperature": 2.5}, {"top_p": 1.5}, {"n": 129}, {"stop": "x"},
                  {"model": ""}, {"model": "m" * 257}, {"messages": []}, {"messages": [{"content": "no role"}]},
                  {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]}):
        assert not plainly_valid_chat({**base, **extra}), extra
