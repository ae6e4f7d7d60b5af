"""The ``input`` of an embeddings request, checked against the model before the request is admitted.

Text (a string or an array of strings) goes to any embedding model. Token ids (an array of ids, or an array of such
arrays) only mean something to the tokenizer that made them, so they are accepted only by a model whose tokenizer
this server runs (the embedded all-MiniLM-L6-v2: ids of its vocabulary, without [CLS]/[SEP]); any other model
answers 400 asking for the text.

Where the server runs the tokenizer it also knows the model's limit (256 tokens for all-MiniLM-L6-v2, special
tokens included): a longer input is a 400 naming the limit and the input's index, unless the request sets the
extension field ``"truncate": true``, which embeds the first tokens that fit (sentence-transformers' behaviour).
Other models apply their own limits upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from tenantlm.errors import InvalidRequest, UnsupportedFeature
from tenantlm.providers.base import AttemptHook, EmbeddingResult
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.settings import ModelConfig
from tenantlm.tenancy.residency import Residency


class TokenIds(list[list[int]]):
    """Token-id input: one array of ids per input (a list, told apart from texts by its type)."""


@runtime_checkable
class KnownTokenizer(Protocol):
    """An embedding adapter whose tokenizer runs in this server, so inputs can be measured and token ids taken."""

    max_input_tokens: int

    async def measure_texts(self, texts: Sequence[str]) -> list[int]: ...

    async def measure_token_ids(self, rows: Sequence[Sequence[int]]) -> list[int]: ...

    async def embed_token_ids(self, inputs: Sequence[Sequence[int]], *, model: str,
                              on_attempt: AttemptHook | None = None) -> EmbeddingResult: ...


def parse_input(raw: Any) -> list[str] | TokenIds:
    """The texts, or the token-id rows, of a request's ``input`` (its shape already validated)."""
    if isinstance(raw, str):
        return [raw]
    if all(isinstance(item, str) for item in raw):
        return list(raw)
    if all(isinstance(item, int) for item in raw):
        return TokenIds([list(raw)])
    return TokenIds([list(row) for row in raw])


def tokenizer_for(providers: ProviderRegistry, model: ModelConfig, inputs: list[str] | TokenIds,
                  ) -> KnownTokenizer | None:
    """The model's tokenizer where this server runs it; token ids for any other model are a 400."""
    try:
        adapter = providers.embedding_provider(model.provider)
    except KeyError:
        adapter = None
    if isinstance(adapter, KnownTokenizer):
        return adapter
    if isinstance(inputs, TokenIds):
        raise UnsupportedFeature(f"token-id input needs the model's tokenizer, which this server does not run for "
                                 f"'{model.name}'; send the text instead", param="input")
    return None


async def embed(providers: ProviderRegistry, tokenizer: KnownTokenizer | None, model: ModelConfig,
                inputs: list[str] | TokenIds, *, on_attempt: AttemptHook, prompt_estimate: int | None = None,
                residency: Residency | None = None) -> EmbeddingResult:
    """Text through the router (retries, fallbacks); token ids to the model's own tokenizer, never to a fallback
    model, whose vocabulary differs."""
    if isinstance(inputs, TokenIds):
        if tokenizer is None:  # tokenizer_for refused these already
            raise UnsupportedFeature("token-id input needs the model's tokenizer; send the text", param="input")
        return await tokenizer.embed_token_ids(inputs, model=model.upstream, on_attempt=on_attempt)
    return await providers.embed(model, inputs, on_attempt=on_attempt, prompt_estimate=prompt_estimate,
                                 residency=residency)


async def check_lengths(tokenizer: KnownTokenizer, inputs: list[str] | TokenIds, *, model_name: str,
                        truncate: bool) -> None:
    """400 for the first input over the model's limit, unless the request asked for truncation. Token ids are
    checked against the vocabulary either way."""
    if isinstance(inputs, TokenIds):
        lengths = await tokenizer.measure_token_ids(inputs)
    elif truncate:
        return
    else:
        lengths = await tokenizer.measure_texts(inputs)
    if truncate:
        return
    limit = tokenizer.max_input_tokens
    for index, length in enumerate(lengths):
        if length > limit:
            raise InvalidRequest(
                f"input[{index}] is {length} tokens long, over the {limit}-token limit of '{model_name}' (special "
                f"tokens included); shorten or split it, or send \"truncate\": true to embed its first {limit} "
                "tokens", param="input", code="context_length_exceeded")
