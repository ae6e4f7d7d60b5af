"""Per-tenant LoRA adapters on the embedded chat model (SmolLM2 on llama.cpp), with adapter files written by the
``gguf`` package (``tests/lora_files.py``): an adapter changes the greedy answer of its own request only (before,
after, and while other requests run on the same base model), each file gives its own answers, loaded adapters are
bounded by ``max_loras`` (least recently used freed first) and freed when deleted, and a file llama.cpp would not
load is refused with a 400 naming ``source``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from lora_files import bad_files, write_lora
from tenantlm.errors import InvalidRequest, UpstreamError
from tenantlm.providers.base import ChatProvider
from tenantlm.providers.llama_lora import LoraFile
from tenantlm.providers.local_chat import LocalChatProvider
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.settings import ModelConfig, ProviderConfig, Settings

pytestmark = [pytest.mark.local_models, pytest.mark.asyncio(loop_scope="module")]

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
QUESTION = "What is the capital of France?"


def request(text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [SYSTEM, {"role": "user", "content": text}], "temperature": 0,
            "max_tokens": 16, **extra}


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, require_module: Callable[[str], None]) -> dict[str, LoraFile]:
    require_module("llama_cpp")
    folder = tmp_path_factory.mktemp("loras")
    return {name: LoraFile(name=f"ten_{name}__support-v1__{seed}",
                           path=str(write_lora(folder / f"{name}.gguf", seed=seed)))
            for name, seed in (("a", 1), ("b", 2), ("c", 3), ("d", 4))}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bad_files(tmp_path_factory.mktemp("broken"))


async def _provider(**config: Any) -> LocalChatProvider:
    provider = LocalChatProvider(ProviderConfig(name="local", type="local", threads=1, **config))
    await provider.warmup()
    return provider


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair() -> AsyncIterator[LocalChatProvider]:
    """Two instances: requests run concurrently, each on its own model instance and context."""
    provider = await _provider(instances=2, max_loras=4)
    yield provider
    await provider.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def single() -> AsyncIterator[LocalChatProvider]:
    """One instance that keeps at most two adapters loaded."""
    provider = await _provider(instances=1, max_loras=2)
    yield provider
    await provider.aclose()


async def answer(provider: ChatProvider, **extra: Any) -> str:
    result = await provider.chat(request(**extra))
    return str(result.body["choices"][0]["message"]["content"])


async def streamed(provider: ChatProvider) -> str:
    parts = [c.body["choices"][0]["delta"].get("content") or ""
             async for c in provider.stream_chat(request()) if c.body["choices"]]
    return "".join(parts)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(pair: LocalChatProvider, loras: dict[str, LoraFile]) -> dict[str, str]:
    """Each adapter's greedy answer (and the base model's, under ``base``), each asked on its own."""
    answers = {"base": await answer(pair)}
    for name, lora in loras.items():
        answers[name] = await answer(pair.with_adapter(lora))
    return answers


async def test_an_adapter_changes_its_request_and_nothing_after_it(pair: LocalChatProvider,
                                                                   loras: dict[str, LoraFile],
                                                                   reference: dict[str, str]) -> None:
    assert "Paris" in reference["base"]
    assert all(reference[name] != reference["base"] for name in loras), reference
    assert reference["a"] != reference["b"]
    assert await answer(pair) == reference["base"]  # every instance served an adapter before this
    assert await answer(pair) == reference["base"]
    assert await answer(pair.with_adapter(loras["a"])) == reference["a"]  # repeatable
    assert await streamed(pair.with_adapter(loras["a"])) == reference["a"]
    assert await streamed(pair) == reference["base"]


async def test_concurrent_requests_each_get_only_their_own_adapter(pair: LocalChatProvider,
                                                                   loras: dict[str, LoraFile],
                                                                   reference: dict[str, str]) -> None:
    names = ["base", "a", "base", "b", "a", "base", "c", "base"]
    answers = await asyncio.gather(*(answer(pair if n == "base" else pair.with_adapter(loras[n])) for n in names))
    assert answers == [reference[n] for n in names]


async def test_a_base_request_during_an_adapter_stream_sees_no_adapter(pair: LocalChatProvider,
                                                                       loras: dict[str, LoraFile],
                                                                       reference: dict[str, str]) -> None:
    stream = pair.with_adapter(loras["b"]).stream_chat(request())
    first = await anext(stream)  # the adapter's request holds one instance, mid-generation
    assert first.body["choices"][0]["delta"]["role"] == "assistant"
    assert await answer(pair) == reference["base"]  # on the other instance, meanwhile
    rest = [c.body["choices"][0]["delta"].get("content") or "" async for c in stream if c.body["choices"]]
    assert "".join(rest) == reference["b"]


async def test_at_most_max_loras_stay_loaded_least_recently_used_freed_first(single: LocalChatProvider,
                                                                            loras: dict[str, LoraFile],
                                                                            reference: dict[str, str]) -> None:
    for name in ("a", "b"):
        assert await answer(single.with_adapter(loras[name])) == reference[name]
    assert single.loaded_adapters == sorted([loras["a"].name, loras["b"].name])
    await answer(single.with_adapter(loras["a"]))  # a is now the most recently used
    assert await answer(single.with_adapter(loras["c"])) == reference["c"]
    assert single.loaded_adapters == sorted([loras["a"].name, loras["c"].name])  # b was freed
    assert await answer(single.with_adapter(loras["b"])) == reference["b"]  # loaded again from its file
    assert single.loaded_adapters == sorted([loras["b"].name, loras["c"].name])
    assert await answer(single) == reference["base"]


async def test_forgetting_frees_now_or_when_the_running_request_ends(single: LocalChatProvider,
                                                                   loras: dict[str, LoraFile],
                                                                   reference: dict[str, str]) -> None:
    await answer(single.with_adapter(loras["a"]))
    await answer(single.with_adapter(loras["b"]))
    await single.forget_adapter(loras["a"].name)
    assert single.loaded_adapters == [loras["b"].name]
    stream = single.with_adapter(loras["b"]).stream_chat(request())
    await anext(stream)
    await single.forget_adapter(loras["b"].name)  # its request is running: freed when it ends
    assert single.loaded_adapters == [loras["b"].name]
    rest = [c.body["choices"][0]["delta"].get("content") or "" async for c in stream if c.body["choices"]]
    assert "".join(rest) == reference["b"]
    assert single.loaded_adapters == []
    assert await answer(single) == reference["base"]


async def test_an_adapter_file_gone_since_creation_fails_its_request_only(pair: LocalChatProvider,
                                                                         tmp_path: Path,
                                                                         reference: dict[str, str]) -> None:
    path = write_lora(tmp_path / "gone.gguf", seed=9)
    gone = LoraFile(name="ten_x__gone__1", path=str(path))
    await pair.check_adapter(source=str(path), model="smollm2")
    path.unlink()
    with pytest.raises(UpstreamError, match="adapter's file"):
        await answer(pair.with_adapter(gone))
    assert await answer(pair) == reference["base"]
    assert pair.idle_instances == 2


async def test_a_good_adapter_file_passes_the_check(pair: LocalChatProvider, loras: dict[str, LoraFile]) -> None:
    await pair.check_adapter(source=loras["a"].path, model="smollm2")
    assert pair.idle_instances == 2


@pytest.mark.parametrize("problem, message", [
    ("missing", "not a file this server can read"),
    ("not gguf", "not a GGUF file"),
    ("damaged header", "header is damaged"),
    ("a full model", "'model' file, not a LoRA adapter"),
    ("not an adapter type", "'imatrix' file, not a LoRA adapter"),
    ("another architecture", "adapter for 'qwen2' models, but 'smollm2' is a 'llama' model"),
    ("wrong shapes", "does not fit 'smollm2'"),
])
async def test_files_llama_cpp_would_not_load_are_refused(pair: LocalChatProvider, broken: dict[str, Path],
                                                          problem: str, message: str) -> None:
    path = broken[problem]
    with pytest.raises(InvalidRequest, match=message) as refused:
        await pair.check_adapter(source=str(path), model="smollm2")
    assert refused.value.param == "source" and refused.value.status == 400
    assert pair.idle_instances == 2


async def test_the_router_applies_a_local_adapter_and_frees_it_when_deleted(loras: dict[str, LoraFile],
                                                                           reference: dict[str, str]) -> None:
    s = Settings(providers=[ProviderConfig(name="local", type="local", threads=1, max_loras=2),
                            ProviderConfig(name="fake", type="fake")],
                 models=[ModelConfig(name="smollm2", provider="local")])
    registry = ProviderRegistry.from_settings(s)
    base = s.model("smollm2")
    assert base is not None
    adapter = base.model_copy(update={"name": "support-v1", "upstream_model": loras["a"].name,
                                      "lora_source": loras["a"].path, "fallbacks": []})
    try:
        assert registry.serves_adapters("local") and not registry.serves_adapters("fake")
        await registry.check_adapter("local", source=loras["a"].path, model="smollm2")
        await registry.check_adapter("fake", source="/not/checked/here", model="x")
        result = await registry.chat(adapter, request())
        assert result.body["model"] == "support-v1"
        assert result.body["choices"][0]["message"]["content"] == reference["a"]
        chunks = [c async for c in registry.stream_chat(adapter, request(stream=True))]
        assert {c.body["model"] for c in chunks} == {"support-v1"}
        assert (await registry.chat(base, request())).body["choices"][0]["message"]["content"] == reference["base"]
        local = registry.chat_provider("local")
        assert isinstance(local, LocalChatProvider) and local.loaded_adapters == [loras["a"].name]
        await registry.forget_adapter("local", loras["a"].name)
        assert local.loaded_adapters == []
    finally:
        await registry.aclose()
