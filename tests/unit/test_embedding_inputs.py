"""Embedding ``input``: its wire shapes, and which models take token ids (those whose tokenizer the server runs)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tenantlm.api.openai.protocol import EmbeddingRequest
from tenantlm.errors import UnsupportedFeature
from tenantlm.inference.embedding_inputs import TokenIds, parse_input, tokenizer_for
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.settings import ModelConfig, ProviderConfig, Settings


@pytest.mark.parametrize("raw, parsed", [
    ("hello", ["hello"]),
    (["a", "b"], ["a", "b"]),
    ([101, 7592], TokenIds([[101, 7592]])),
    ([[7592], [2088, 0]], TokenIds([[7592], [2088, 0]])),
])
def test_parse_input(raw: Any, parsed: list[str] | TokenIds) -> None:
    result = parse_input(raw)
    assert result == parsed and type(result) is type(parsed)
    EmbeddingRequest.model_validate({"model": "m", "input": raw})


@pytest.mark.parametrize("raw, words", [
    ("", "must not be empty"),
    ([], "not empty"),
    (["a", ""], "empty strings"),
    ([1.0], "input[0]"),
    ([True, 2], "input[0]"),
    ([-1], "input[0]"),
    ([[1], []], "input[1]"),
    ([[1], ["a"]], "input[1]"),
    (["a", 1], "input[0]"),
    ([[1, 2], 3], "input[1]"),
    ({"text": "a"}, "must be a string"),
    (["a"] * 2049, "at most 2048"),
])
def test_bad_input_shapes_are_refused_on_input(raw: Any, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        EmbeddingRequest.model_validate({"model": "m", "input": raw})
    first = info.value.errors()[0]
    assert first["loc"] == ("input",) and words in first["msg"]


@pytest.mark.parametrize("value", [1, "true", None])
def test_truncate_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        EmbeddingRequest.model_validate({"model": "m", "input": "x", "truncate": value})
    assert info.value.errors()[0]["loc"] == ("truncate",)
    assert EmbeddingRequest.model_validate({"model": "m", "input": "x", "truncate": True}).truncate is True


def _registry() -> tuple[ProviderRegistry, ModelConfig, ModelConfig]:
    local = ModelConfig(name="all-minilm-l6-v2", provider="local", kind="embedding", dimensions=384)
    fake = ModelConfig(name="fake-embed", provider="fake", kind="embedding", dimensions=8)
    providers = [ProviderConfig(name="local", type="local"), ProviderConfig(name="fake", type="fake")]
    settings = Settings(providers=providers, models=[local, fake])
    return ProviderRegistry.from_settings(settings), local, fake


def test_token_ids_go_only_to_a_model_whose_tokenizer_runs_here() -> None:
    registry, local, fake = _registry()
    assert isinstance(tokenizer_for(registry, local, TokenIds([[7592]])), LocalEmbeddingProvider)
    assert isinstance(tokenizer_for(registry, local, ["text"]), LocalEmbeddingProvider)
    assert tokenizer_for(registry, fake, ["text"]) is None
    with pytest.raises(UnsupportedFeature) as info:
        tokenizer_for(registry, fake, TokenIds([[7592]]))
    assert info.value.param == "input" and "send the text" in info.value.message
