"""The llama.cpp engine keeps no KV state from one request to the next: a request never reuses the prompt prefix
that another request (another tenant's, as a rule) left in the model's cache, so how long a prompt takes says
nothing about what was asked before it.

With the real model the test counts the prompt tokens the model evaluates (the tokens passed to ``Llama.eval``
before the first sample); without it, a recording stand-in for ``Llama`` checks that the cache is reset before every
generation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tenantlm.providers.llama_engine import Done, Event, Failed, LlamaEngine, Sampling, Started, Text

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
SECRET = ("Our quarterly numbers are confidential: revenue of the northern region was 4.2 million, the southern "
          "region 3.1 million, and the merger with the harbour company closes on the ninth of March. ") * 6


def run(engine: LlamaEngine, text: str, **sampling: Any) -> list[Event]:
    events: list[Event] = []
    engine.run([SYSTEM, {"role": "user", "content": text}], Sampling(**{"max_tokens": 3, "temperature": 0.0,
                                                                          **sampling}),
               events.append, threading.Event())
    assert not any(isinstance(e, Failed) for e in events), events
    return events


def prompt_tokens(events: list[Event]) -> int:
    return next(e.prompt_tokens for e in events if isinstance(e, Started))


# --- with the real model ----------------------------------------------------------------------------------------
class EvalCounter:
    """Wraps a ``Llama``'s ``eval``: the number of tokens of each call, in order."""

    def __init__(self, llm: Any) -> None:
        self.calls: list[int] = []
        self._eval = llm.eval
        llm.eval = self

    def __call__(self, tokens: Any) -> None:
        self.calls.append(len(tokens))
        self._eval(tokens)

    def take(self) -> list[int]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture(scope="module")
def model(require_module: Callable[[str], None]) -> Iterator[tuple[LlamaEngine, EvalCounter]]:
    require_module("llama_cpp")
    from llama_cpp import Llama

    from tenantlm.providers.local_chat import default_model_path

    llm = Llama(model_path=default_model_path(), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)
    counter = EvalCounter(llm)
    yield LlamaEngine(llm), counter
    llm.close()


@pytest.mark.local_models
@pytest.mark.parametrize("second", ["the same prompt", "the same prompt with another question"])
def test_a_request_evaluates_its_whole_prompt_after_another_tenants(model: tuple[LlamaEngine, EvalCounter],
                                                                    second: str) -> None:
    engine, counter = model
    tenant_a = SECRET + "What was the northern revenue?"
    tenant_b = tenant_a if second == "the same prompt" else SECRET + "When does the merger close?"
    a = run(engine, tenant_a)
    a_evals = counter.take()
    b = run(engine, tenant_b)
    b_evals = counter.take()
    assert prompt_tokens(a) > 200 and prompt_tokens(b) > 200
    # the first eval of a generation is its prompt (llama.cpp batches it inside), then one sampled token at a time
    assert a_evals[0] == prompt_tokens(a) and b_evals[0] == prompt_tokens(b), (a_evals, b_evals)
    assert set(b_evals[1:]) <= {1}


@pytest.mark.local_models
def test_seeded_requests_stay_repeatable(model: tuple[LlamaEngine, EvalCounter]) -> None:
    engine, counter = model
    texts = ["".join(e.text for e in run(engine, "Say something.", temperature=0.9, seed=1234, max_tokens=12)
                     if isinstance(e, Text)) for _ in range(3)]
    counter.take()
    assert texts[0] and texts[0] == texts[1] == texts[2]


# --- without the model ---------------------------------------------------------------------------------------------
class RecordingLlama:
    """What ``LlamaEngine`` uses of ``llama_cpp.Llama``, recording the calls that touch the KV cache."""

    metadata: dict[str, str] = {}

    def __init__(self) -> None:
        self.calls: list[str] = []

    def n_ctx(self) -> int:
        return 512

    def token_eos(self) -> int:
        return 2

    def token_bos(self) -> int:
        return 1

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return [1] + [10 + b for b in text[:50]]

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"x" * len(tokens)

    def reset(self) -> None:
        self.calls.append("reset")

    def set_seed(self, seed: int) -> None:
        self.calls.append("set_seed")

    def generate(self, tokens: list[int], **kw: Any) -> Iterator[int]:
        self.calls.append("generate")
        yield from (7, 8, 2)  # two tokens, then the end-of-generation token


@pytest.mark.parametrize("seed", [None, 42])
def test_the_cache_is_reset_before_every_generation(require_module: Callable[[str], None], seed: int | None) -> None:
    require_module("llama_cpp")  # the chat template's formatter comes from llama_cpp
    llm = RecordingLlama()
    engine = LlamaEngine(llm)
    for _ in range(3):
        events = run(engine, "hello", seed=seed, max_tokens=None)
        assert next(e for e in events if isinstance(e, Done)).completion_tokens == 2
    before_each_generation = " ".join(llm.calls).split("generate")[:-1]
    assert len(before_each_generation) == 3 and all("reset" in calls for calls in before_each_generation), llm.calls
