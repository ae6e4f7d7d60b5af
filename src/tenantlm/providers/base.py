"""The provider port: every model backend (local, fake, any OpenAI-compatible upstream) sits behind it.

Requests and responses travel as OpenAI wire dictionaries so that fields the gateway does not know about
(``tools``, ``response_format``, vendor extensions) pass through untouched. The gateway owns naming: a
provider receives the *upstream* model name and returns bodies that the gateway re-labels for the tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served from a cache (the ledger's cached_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> JSON:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class ChatCompletion:
    """A finished, non-streamed chat completion in OpenAI's ``chat.completion`` shape."""

    body: JSON
    usage: Usage


@dataclass(slots=True)
class ChatChunk:
    """One streamed ``chat.completion.chunk`` body. ``usage`` is set on the final usage chunk only."""

    body: JSON
    usage: Usage | None = None


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage
    dimensions: int = 0


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    chat: bool = True
    embeddings: bool = False
    tools: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


AttemptOutcome = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try against one backend, reported through ``on_attempt`` when that try is over.

    The usage ledger records one event per attempt (invariant 4). ``usage`` is the backend's own count when it sent
    one; for a stream cut short it holds what was seen so far and ``usage_estimated`` is true. ``status`` is the
    upstream HTTP status (``None`` for local models, connection errors and timeouts). ``number`` counts from 1 within
    one provider call (retries); ``model`` is the name sent to the backend and ``catalog_model`` the catalog entry
    that the router was serving when it made the call (``None`` when a provider is called directly).
    """

    provider: str
    model: str
    number: int
    outcome: AttemptOutcome
    status: int | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    error_code: str | None = None
    duration_s: float = 0.0
    catalog_model: str | None = None

    def for_catalog(self, catalog_model: str) -> Attempt:
        """This attempt as made for the catalog entry ``catalog_model``. Every field is copied by position: what
        ``dataclasses.replace`` does, without its pass over the field list on every request."""
        return Attempt(self.provider, self.model, self.number, self.outcome, self.status, self.usage,
                       self.usage_estimated, self.error_code, self.duration_s, catalog_model)


AttemptHook = Callable[[Attempt], None]
"""Called synchronously (never awaited) once per attempt; it must not raise and must not block."""


@runtime_checkable
class ChatProvider(Protocol):
    """Chat completions. ``request`` is the client's body with ``model`` already replaced by the upstream name.

    ``stream_chat`` must yield chunks as they are produced (no buffering) and, when the request asked for
    ``stream_options.include_usage``, finish with a chunk whose ``choices`` is empty and ``usage`` is set.
    Raising :class:`tenantlm.errors.TenantLMError` subclasses is the only way to report failure. Every call reports
    each attempt it made to ``on_attempt`` when given (a stream reports when it ends, fails or is closed early).
    ``prompt_estimate`` is the gateway's count of the prompt's tokens (``tenantlm.tokens``, with the model's
    tokenizer where the catalog names one): what a provider reports when the backend gives no count of its own.
    """

    capabilities: ProviderCapabilities

    async def chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None) -> ChatCompletion: ...

    def stream_chat(self, request: JSON, *, on_attempt: AttemptHook | None = None,
                    prompt_estimate: int | None = None) -> AsyncIterator[ChatChunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    capabilities: ProviderCapabilities

    async def embed(
        self, inputs: Sequence[str], *, model: str, on_attempt: AttemptHook | None = None,
        prompt_estimate: int | None = None,
    ) -> EmbeddingResult: ...

    async def aclose(self) -> None: ...


def report_attempt(hook: AttemptHook | None, attempt: Attempt) -> None:
    if hook is not None:
        hook(attempt)


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Close an async generator early (stops its producer and runs its ``finally``); a no-op for plain iterators."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
