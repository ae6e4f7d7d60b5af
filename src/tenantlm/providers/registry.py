"""Provider registry and router: one adapter per configured provider, and the calls the API layer makes.

The router takes a catalog :class:`ModelConfig`, sends the request to its provider with ``model`` replaced by
``model.upstream``, and when that fails with :class:`UpstreamError` (which includes unavailable and timeout) walks
``model.fallbacks`` in order (a stream only while it has yielded nothing). Bodies come back labelled with the
catalog name of the model that actually served them, and every attempt is reported to ``on_attempt`` with
``catalog_model`` set, so the ledger prices each attempt at the right model.

Residency: given the request's ``Residency``, the router checks every model before trying it. A fallback outside
the tenant's regions is skipped; when the chain runs out after skipping one, the request is refused (403
``region_not_allowed``, audited) instead of answering with the last upstream error. A model that is a tenant's LoRA
adapter (``lora_source`` set) is loaded on its vLLM upstream first (``providers.lora``), or, on the embedded
``local`` provider, applied by llama.cpp to that request alone (``providers.llama_lora``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

from tenantlm.errors import InvalidRequest, ModelNotFound, UpstreamError
from tenantlm.providers.base import (
    JSON,
    AttemptHook,
    ChatChunk,
    ChatCompletion,
    ChatProvider,
    EmbeddingProvider,
    EmbeddingResult,
    close_stream,
)
from tenantlm.providers.fake import FakeProvider
from tenantlm.providers.llama_lora import LoraFile
from tenantlm.providers.local_chat import LocalChatProvider
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.providers.lora import LoraSlots
from tenantlm.providers.openai_compatible import OpenAICompatibleProvider
from tenantlm.settings import ModelConfig, ProviderConfig, Settings

if TYPE_CHECKING:
    from tenantlm.tenancy.residency import Residency

T = TypeVar("T")
FALLBACK_ERRORS = (UpstreamError,)


def build_adapters(config: ProviderConfig) -> tuple[ChatProvider | None, EmbeddingProvider | None]:
    """The adapters for one provider config: ``local`` gives two (chat model, embedding model), others one."""
    if config.type == "local":
        return LocalChatProvider(config), LocalEmbeddingProvider(config)
    if config.type == "fake":
        fake = FakeProvider(config)
        return fake, fake
    compatible = OpenAICompatibleProvider(config)
    return compatible, compatible


def _with_catalog(hook: AttemptHook | None, model: ModelConfig) -> AttemptHook | None:
    if hook is None:
        return None
    name = model.name
    return lambda attempt: hook(attempt.for_catalog(name))


def _relabel(body: JSON, model: ModelConfig) -> JSON:
    if "model" in body:
        body["model"] = model.name
    return body


async def _refuse_or_raise(exc: Exception, refused: ModelConfig | None, residency: Residency | None) -> NoReturn:
    """The chain ran out with ``exc``: when a fallback was skipped for its region, the request is refused for
    that (audited); otherwise ``exc`` goes on."""
    if refused is not None and residency is not None:
        raise await residency.refuse(refused, via="fallback") from exc
    raise exc


class ProviderRegistry:
    def __init__(self, settings: Settings, chat: dict[str, ChatProvider],
                 embeddings: dict[str, EmbeddingProvider], loras: dict[str, LoraSlots] | None = None) -> None:
        self._settings = settings
        self._chat = chat
        self._embeddings = embeddings
        self._loras = loras or {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        chat: dict[str, ChatProvider] = {}
        embeddings: dict[str, EmbeddingProvider] = {}
        for config in settings.providers:
            chat_adapter, embedding_adapter = build_adapters(config)
            if chat_adapter is not None:
                chat[config.name] = chat_adapter
            if embedding_adapter is not None:
                embeddings[config.name] = embedding_adapter
        loras = {c.name: LoraSlots(c) for c in settings.providers if c.type == "openai_compatible"}
        return cls(settings, chat, embeddings, loras)

    @property
    def settings(self) -> Settings:
        return self._settings

    def chat_provider(self, name: str) -> ChatProvider:
        return self._chat[name]

    def embedding_provider(self, name: str) -> EmbeddingProvider:
        return self._embeddings[name]

    def serves_adapters(self, provider: str) -> bool:
        """Whether ``provider`` can load LoRA adapters at run time (an OpenAI-compatible upstream such as vLLM, or
        the embedded llama.cpp model)."""
        return provider in self._loras or self._local(provider) is not None

    async def check_adapter(self, provider: str, *, source: str, model: str) -> None:
        """Refuse an adapter file the embedded model cannot load (400 naming ``source``). A vLLM upstream reads
        ``source`` on its own host, so it is not checked here."""
        local = self._local(provider)
        if local is not None:
            await local.check_adapter(source=source, model=model)

    async def forget_adapter(self, provider: str, lora_name: str) -> None:
        """Unload a deleted adapter from its upstream (or the embedded model), where this replica loaded it; one in
        use is unloaded when its request ends (embedded) or left to the upstream's LRU (vLLM)."""
        slots = self._loras.get(provider)
        if slots is not None:
            await slots.forget(lora_name)
        local = self._local(provider)
        if local is not None:
            await local.forget_adapter(lora_name)

    def candidates(self, model: ModelConfig) -> list[ModelConfig]:
        """The model, then its fallbacks of the same kind, in order, each once."""
        chain = [model]
        for name in model.fallbacks:
            fallback = self._settings.model(name)
            if fallback is not None and fallback.kind == model.kind and fallback not in chain:
                chain.append(fallback)
        return chain

    async def chat(self, model: ModelConfig, request: JSON, *, on_attempt: AttemptHook | None = None,
                   prompt_estimate: int | None = None, residency: Residency | None = None) -> ChatCompletion:
        self._require(model, "chat")

        async def call(candidate: ModelConfig) -> ChatCompletion:
            provider = self._chat_for(candidate)
            async with self._adapter_loaded(candidate):
                result = await provider.chat({**request, "model": candidate.upstream},
                                             on_attempt=_with_catalog(on_attempt, candidate),
                                             prompt_estimate=prompt_estimate)
            _relabel(result.body, candidate)
            return result

        return await self._first_success(model, call, residency)

    async def stream_chat(self, model: ModelConfig, request: JSON, *, on_attempt: AttemptHook | None = None,
                          prompt_estimate: int | None = None, residency: Residency | None = None
                          ) -> AsyncIterator[ChatChunk]:
        self._require(model, "chat")
        chain, refused = await self._chain(model, residency)
        for position, candidate in enumerate(chain):
            async with self._adapter_loaded(candidate):
                stream = self._chat_for(candidate).stream_chat({**request, "model": candidate.upstream},
                                                               on_attempt=_with_catalog(on_attempt, candidate),
                                                               prompt_estimate=prompt_estimate)
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    return
                except FALLBACK_ERRORS as exc:
                    await close_stream(stream)
                    if position == len(chain) - 1:
                        await _refuse_or_raise(exc, refused, residency)
                    continue
                try:
                    yield ChatChunk(_relabel(first.body, candidate), first.usage)
                    async for chunk in stream:
                        yield ChatChunk(_relabel(chunk.body, candidate), chunk.usage)
                finally:
                    await close_stream(stream)
                return

    async def embed(self, model: ModelConfig, inputs: Sequence[str], *, on_attempt: AttemptHook | None = None,
                    prompt_estimate: int | None = None, residency: Residency | None = None) -> EmbeddingResult:
        self._require(model, "embedding")

        async def call(candidate: ModelConfig) -> EmbeddingResult:
            provider = self._embeddings_for(candidate)
            return await provider.embed(inputs, model=candidate.upstream,
                                        on_attempt=_with_catalog(on_attempt, candidate),
                                        prompt_estimate=prompt_estimate)

        return await self._first_success(model, call, residency)

    async def warmup(self) -> None:
        """Load the embedded models now instead of on the first request."""
        for provider in self._unique():
            warmup: Callable[[], Awaitable[None]] | None = getattr(provider, "warmup", None)
            if warmup is not None:
                await warmup()

    async def aclose(self) -> None:
        for provider in self._unique():
            await provider.aclose()
        for slots in self._loras.values():
            await slots.aclose()

    async def _first_success(self, model: ModelConfig, call: Callable[[ModelConfig], Awaitable[T]],
                             residency: Residency | None) -> T:
        chain, refused = await self._chain(model, residency)
        for candidate in chain[:-1]:
            try:
                return await call(candidate)
            except FALLBACK_ERRORS:
                continue
        try:
            return await call(chain[-1])
        except FALLBACK_ERRORS as exc:
            await _refuse_or_raise(exc, refused, residency)

    async def _chain(self, model: ModelConfig, residency: Residency | None
                     ) -> tuple[list[ModelConfig], ModelConfig | None]:
        """The candidates the tenant's regions allow, and the first fallback they do not (skipped). The model
        itself outside them is refused at once."""
        chain = self.candidates(model)
        if residency is None:
            return chain, None
        await residency.check(model, via="direct")
        allowed = [c for c in chain if residency.allows(c)]
        return allowed, next((c for c in chain if c not in allowed), None)

    def _adapter_loaded(self, model: ModelConfig) -> contextlib.AbstractAsyncContextManager[None]:
        if model.lora_source is None or self._local(model.provider) is not None:
            return contextlib.nullcontext()  # the embedded model applies it per request (_chat_for)
        slots = self._loras.get(model.provider)
        if slots is None:
            raise InvalidRequest(f"'{model.name}' is a LoRA adapter, and adapters need a vLLM upstream "
                                 f"(an openai_compatible provider); '{model.provider}' is not one", param="model")
        return slots.using(model.upstream, model.lora_source)

    def _require(self, model: ModelConfig, kind: str) -> None:
        if model.kind != kind:
            api = "chat completions" if kind == "chat" else "embeddings"
            raise InvalidRequest(f"model {model.name!r} is a {model.kind} model and cannot serve {api}",
                                 param="model", code="model_not_supported")

    def _chat_for(self, model: ModelConfig) -> ChatProvider:
        if model.provider not in self._chat:
            raise ModelNotFound(f"model {model.name!r} has no chat provider", param="model")
        local = self._local(model.provider)
        if model.lora_source is not None and local is not None:
            return local.with_adapter(LoraFile(name=model.upstream, path=model.lora_source))
        return self._chat[model.provider]

    def _local(self, provider: str) -> LocalChatProvider | None:
        chat = self._chat.get(provider)
        return chat if isinstance(chat, LocalChatProvider) else None

    def _embeddings_for(self, model: ModelConfig) -> EmbeddingProvider:
        if model.provider not in self._embeddings:
            raise ModelNotFound(f"model {model.name!r} has no embeddings provider", param="model")
        return self._embeddings[model.provider]

    def _unique(self) -> list[ChatProvider | EmbeddingProvider]:
        seen: dict[int, ChatProvider | EmbeddingProvider] = {}
        providers: list[ChatProvider | EmbeddingProvider] = [*self._chat.values(), *self._embeddings.values()]
        for provider in providers:
            seen.setdefault(id(provider), provider)
        return list(seen.values())

