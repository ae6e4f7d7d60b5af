"""One llama.cpp model instance and the generation loop that runs on it, in a worker thread.

Everything that touches ``llama_cpp`` lives here (imported when a model is loaded, not at import time). The loop
reports to the event loop through ``emit`` only: ``Started`` (prompt tokens counted, context checked), ``Text``
pieces as tokens decode, then ``Done`` or ``Failed``. It checks ``cancel`` before each token.

No request reuses KV state computed for another: the model's cache is reset before every generation, so every
request evaluates its whole prompt. llama.cpp would otherwise reuse the longest prompt prefix shared with the
previous request on the instance, whoever sent it, and the time to the first token would tell the next caller how
much of another tenant's prompt it had guessed (an identical ~330-word prompt answered in 0.006 s instead of 2.9 s).
Evaluating every prompt in full also keeps seeded requests repeatable (a cached prefix changes the batch shapes,
and so slightly the logits). For the same reason a request with a LoRA adapter (``llama_lora``) never reuses KV
state computed without it, or with another.
"""

from __future__ import annotations

import codecs
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from tenantlm.errors import InvalidRequest, TenantLMError, UpstreamError
from tenantlm.providers.llama_lora import InstanceAdapters, LoraFile
from tenantlm.providers.stops import StopMatcher

TOP_K = 40
MIN_P = 0.05
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    tokens: int  # completion tokens generated so far


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: TenantLMError


Event = Started | Text | Done | Failed
Emit = Callable[[Event], None]


def completion_budget(prompt_tokens: int, n_ctx: int, requested: int | None) -> int:
    """How many tokens may be generated; a request that cannot fit is refused the way OpenAI refuses it."""
    if prompt_tokens >= n_ctx:
        raise InvalidRequest(
            f"This model's maximum context length is {n_ctx} tokens, but the messages use {prompt_tokens} "
            "tokens. Please shorten the messages.", param="messages", code="context_length_exceeded")
    room = n_ctx - prompt_tokens
    if requested is None:
        return room
    if requested > room:
        raise InvalidRequest(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the completion). "
            "Please reduce the length of the messages or the completion.",
            param="messages", code="context_length_exceeded")
    return requested


class _TextStream:
    """Bytes of tokens -> text pieces: UTF-8 decoded incrementally, stop sequences held back and cut."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._matcher = StopMatcher(stops)

    @property
    def stopped(self) -> bool:
        return self._matcher.stopped

    def push(self, data: bytes) -> str:
        return self._matcher.push(self._decoder.decode(data))

    def finish(self) -> str:
        if self.stopped:
            return ""
        out = self._matcher.push(self._decoder.decode(b"", final=True))
        return out + self._matcher.flush()


def _special_text(llm: Any, token: int) -> str:
    return "" if token < 0 else bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")


def _formatter(llm: Any) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
    return Jinja2ChatFormatter(template=template, eos_token=_special_text(llm, llm.token_eos()),
                               bos_token=_special_text(llm, llm.token_bos()))


def _eog_test(llm: Any) -> Callable[[int], bool]:
    """End-of-generation test: llama.cpp's own list (it knows ``<|im_end|>`` and friends), else the EOS token."""
    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
        return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
    eos = int(llm.token_eos())
    return lambda token: token == eos


class LlamaEngine:
    """A loaded model. Not thread safe: one :meth:`run` at a time (the provider's pool sees to that)."""

    def __init__(self, llm: Any, *, max_loras: int = 8) -> None:
        self._llm = llm
        self.n_ctx = int(llm.n_ctx())
        self._format = _formatter(llm)
        self._is_eog = _eog_test(llm)
        self.adapters = InstanceAdapters(llm, max_loras=max_loras)

    @classmethod
    def load(cls, path: str, *, context_length: int, threads: int, max_loras: int = 8) -> LlamaEngine:
        from llama_cpp import Llama

        return cls(Llama(model_path=path, n_ctx=context_length, n_threads=threads, n_threads_batch=threads,
                         verbose=False), max_loras=max_loras)

    def probe_adapter(self, path: str, architecture: str, model: str) -> None:
        """Refuse (400, ``source``) an adapter file that llama.cpp would not load on this model."""
        if architecture != self.adapters.architecture:
            raise InvalidRequest(f"source {path!r} is an adapter for {architecture!r} models, but {model!r} is a "
                                 f"{self.adapters.architecture!r} model", param="source")
        if not self.adapters.probe(path):
            raise InvalidRequest(f"source {path!r} does not fit {model!r}: its LoRA tensors name weights the model "
                                 "has not got, or have other shapes (an adapter trained on another base model?)",
                                 param="source")

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            prompt = str(self._format(messages=messages).prompt)
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"the messages do not fit this model's chat template: {exc}",
                                 param="messages") from exc
        return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    def run(self, messages: list[dict[str, str]], sampling: Sampling, emit: Emit, cancel: threading.Event,
            lora: LoraFile | None = None) -> None:
        """The worker thread's whole job; never raises (failures are emitted). ``lora`` applies to this run only:
        it is off the context again before ``Done`` or ``Failed`` hands the instance back."""
        try:
            with self.adapters.applied(lora):
                prompt = self.prompt_tokens(messages)
                budget = completion_budget(len(prompt), self.n_ctx, sampling.max_tokens)
                emit(Started(len(prompt)))
                reason, count = self._generate(prompt, sampling, budget, emit, cancel)
            emit(Done(reason, count))
        except TenantLMError as exc:
            emit(Failed(exc))
        except Exception as exc:
            emit(Failed(UpstreamError(f"the local model failed ({type(exc).__name__})")))

    def _generate(self, prompt: list[int], s: Sampling, budget: int, emit: Emit,
                  cancel: threading.Event) -> tuple[str, int]:
        llm = self._llm
        llm.reset()  # no KV state from the previous request: this one evaluates its whole prompt (module docstring)
        llm.set_seed(s.seed if s.seed is not None else random.randrange(2**31))
        text = _TextStream(s.stops)
        count, reason = 0, "length"
        tokens = llm.generate(prompt, temp=s.temperature, top_p=s.top_p, top_k=TOP_K, min_p=MIN_P,
                              presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty,
                              repeat_penalty=1.0, reset=True)
        try:
            for token in tokens:
                if cancel.is_set():
                    return "cancelled", count
                if self._is_eog(token):
                    reason = "stop"
                    break
                count += 1
                piece = text.push(llm.detokenize([token]))
                if piece:
                    emit(Text(piece, count))
                if text.stopped:
                    return "stop", count
                if count >= budget:
                    break
        finally:
            tokens.close()
        tail = text.finish()
        if tail:
            emit(Text(tail, count))
        return reason, count
