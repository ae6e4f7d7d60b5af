from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from tenantlm.providers.base import Attempt, ChatChunk, Usage
from tenantlm.providers.fake import FakeProvider, fake_words
from tenantlm.providers.fake_server import FakeServerThread
from tenantlm.providers.local_chat import LocalChatProvider
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.providers.openai_compatible import OpenAICompatibleProvider
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.settings import ModelConfig, ProviderConfig, Settings


def test_an_attempt_relabelled_for_a_catalog_entry_keeps_every_other_field() -> None:
    """``Attempt.for_catalog`` copies fields by position; a field added to ``Attempt`` and not to it fails here."""
    fields = dataclasses.fields(Attempt)
    values: dict[str, Any] = {f.name: object() for f in fields}  # a distinct value per field
    original = Attempt(**values)
    relabelled = original.for_catalog("catalog-name")
    for f in fields:
        expected = "catalog-name" if f.name == "catalog_model" else values[f.name]
        assert getattr(relabelled, f.name) is expected, f.name
    real = Attempt("p", "m", 2, "ok", 200, Usage(3, 4), True, "x", 0.5, None)
    assert real.for_catalog("c") == dataclasses.replace(real, catalog_model="c")


def request(text: str = "route me please", **extra: Any) -> dict[str, Any]:
    return {"model": "client-name", "messages": [{"role": "user", "content": text}], **extra}


def broken(**spec: Any) -> dict[str, Any]:
    return {"fake_fail": {"key": uuid.uuid4().hex, "times": 100, "status": 500, **spec}}


def settings_for(upstream_url: str, dead_url: str) -> Settings:
    return Settings(
        providers=[
            ProviderConfig(name="remote", type="openai_compatible", base_url=upstream_url, max_retries=0),
            ProviderConfig(name="dead", type="openai_compatible", base_url=dead_url, max_retries=0),
            ProviderConfig(name="fake", type="fake", tokens=4),
        ],
        models=[
            ModelConfig(name="primary", provider="remote", upstream_model="big-model-v2", fallbacks=["backup"]),
            ModelConfig(name="down", provider="dead", fallbacks=["backup", "remote-embed"]),
            ModelConfig(name="backup", provider="fake", upstream_model="small-model"),
            ModelConfig(name="lonely", provider="dead"),
            ModelConfig(name="remote-embed", provider="remote", kind="embedding", fallbacks=["fake-embed"]),
            ModelConfig(name="dead-embed", provider="dead", kind="embedding", fallbacks=["fake-embed"]),
            ModelConfig(name="fake-embed", provider="fake", kind="embedding"),
        ],
    )


@pytest.fixture
async def registry(upstream: FakeServerThread, closed_port_url: str) -> AsyncIterator[ProviderRegistry]:
    reg = ProviderRegistry.from_settings(settings_for(upstream.base_url, closed_port_url))
    yield reg
    await reg.aclose()


def model(reg: ProviderRegistry, name: str) -> ModelConfig:
    found = reg.settings.model(name)
    assert found is not None
    return found


async def test_builds_one_adapter_per_provider_and_local_gives_both_kinds() -> None:
    reg = ProviderRegistry.from_settings(Settings(providers=[
        ProviderConfig(name="local", type="local"),
        ProviderConfig(name="fake", type="fake"),
        ProviderConfig(name="remote", type="openai_compatible", base_url="http://127.0.0.1:9/v1"),
    ]))
    try:
        assert isinstance(reg.chat_provider("local"), LocalChatProvider)
        assert isinstance(reg.embedding_provider("local"), LocalEmbeddingProvider)
        assert id(reg.chat_provider("fake")) == id(reg.embedding_provider("fake"))
        assert isinstance(reg.chat_provider("fake"), FakeProvider)
        assert isinstance(reg.chat_provider("remote"), OpenAICompatibleProvider)
    finally:
        await reg.aclose()  # closes without ever loading the local models


async def test_chat_sends_the_upstream_name_and_relabels(registry: ProviderRegistry, attempts: Any) -> None:
    result = await registry.chat(model(registry, "primary"), request(), on_attempt=attempts)
    assert result.body["model"] == "primary"
    assert attempts[0].model == "big-model-v2" and attempts[0].catalog_model == "primary"
    assert attempts[0].provider == "remote"


async def test_chat_falls_back_when_the_primary_is_down(registry: ProviderRegistry, attempts: Any) -> None:
    result = await registry.chat(model(registry, "down"), request(), on_attempt=attempts)
    assert result.body["model"] == "backup"
    assert result.body["choices"][0]["message"]["content"] == " ".join(fake_words("route me please", 0, 4))
    assert [(a.catalog_model, a.outcome) for a in attempts] == [("down", "error"), ("backup", "ok")]
    assert attempts[1].model == "small-model"


async def test_chat_falls_back_on_upstream_5xx(registry: ProviderRegistry) -> None:
    result = await registry.chat(model(registry, "primary"), request(**broken()))
    assert result.body["model"] == "backup"


async def test_no_fallback_for_the_clients_own_mistakes(registry: ProviderRegistry, attempts: Any) -> None:
    with pytest.raises(InvalidRequest):
        await registry.chat(model(registry, "primary"), {"model": "x", "messages": []}, on_attempt=attempts)
    assert [a.catalog_model for a in attempts] == ["primary"]


async def test_without_fallbacks_the_error_surfaces(registry: ProviderRegistry) -> None:
    with pytest.raises(UpstreamUnavailable):
        await registry.chat(model(registry, "lonely"), request())


async def test_stream_falls_back_before_the_first_chunk(registry: ProviderRegistry, attempts: Any) -> None:
    chunks = [c async for c in registry.stream_chat(model(registry, "down"), request(stream=True),
                                                    on_attempt=attempts)]
    assert {c.body["model"] for c in chunks} == {"backup"}
    assert chunks[-1].body["choices"][0]["finish_reason"] == "stop"
    assert [a.outcome for a in attempts] == ["error", "ok"]


async def test_stream_does_not_fall_back_after_chunks_were_sent(registry: ProviderRegistry,
                                                                attempts: Any) -> None:
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamError):
        async for chunk in registry.stream_chat(model(registry, "primary"),
                                                request(stream=True, **broken(after_chunks=2)), on_attempt=attempts):
            seen.append(chunk)
    assert len(seen) == 2 and {c.body["model"] for c in seen} == {"primary"}
    assert [a.catalog_model for a in attempts] == ["primary"]


async def test_kind_mismatch_is_invalid(registry: ProviderRegistry) -> None:
    with pytest.raises(InvalidRequest) as info:
        await registry.chat(model(registry, "fake-embed"), request())
    assert info.value.param == "model"
    with pytest.raises(InvalidRequest):
        await registry.embed(model(registry, "backup"), ["text"])
    with pytest.raises(InvalidRequest):
        [c async for c in registry.stream_chat(model(registry, "fake-embed"), request())]


async def test_fallbacks_of_another_kind_are_skipped(registry: ProviderRegistry) -> None:
    assert [m.name for m in registry.candidates(model(registry, "down"))] == ["down", "backup"]


async def test_embed_routes_and_falls_back(registry: ProviderRegistry, attempts: Any) -> None:
    remote = await registry.embed(model(registry, "remote-embed"), ["a b"], on_attempt=attempts)
    assert remote.dimensions == 8 and attempts[0].catalog_model == "remote-embed"
    result = await registry.embed(model(registry, "dead-embed"), ["a b"])
    assert result.dimensions == 8 and result.usage.prompt_tokens == 2
