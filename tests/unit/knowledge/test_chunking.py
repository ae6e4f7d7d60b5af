"""Chunking: OpenAI's strategy shapes and their 400s, and the chunker's guarantees checked over random texts with
both tokenizers (the embedding model's and the approximate one)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.knowledge.chunking import (
    ApproximateTokenizer,
    Chunk,
    ChunkingStrategy,
    HuggingFaceTokenizer,
    SpanTokenizer,
    chunk_text,
)

# --- the strategy ------------------------------------------------------------------------------------------------


def static(size: Any, overlap: Any) -> dict[str, Any]:
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def test_absent_and_auto_mean_800_tokens_with_400_overlap() -> None:
    for body in (None, {"type": "auto"}):
        strategy = ChunkingStrategy.parse(body)
        assert (strategy.type, strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens) == ("auto", 800, 400)


def test_static_is_read_and_reported_as_openai_reports_it() -> None:
    strategy = ChunkingStrategy.parse(static(300, 150))
    assert strategy == ChunkingStrategy.static(300, 150)
    assert strategy.to_json() == static(300, 150)
    assert ChunkingStrategy.parse(None).to_json() == static(800, 400)  # auto files report their numbers as static


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (100, 50), (4096, 2048), (101, 50), (800.0, 400)])
def test_static_bounds_that_are_accepted(size: Any, overlap: Any) -> None:
    strategy = ChunkingStrategy.parse(static(size, overlap))
    assert (strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens) == (int(size), overlap)


P = "chunking_strategy"
S = "chunking_strategy.static"


@pytest.mark.parametrize(("body", "param", "words"), [
    ("auto", P, "Invalid type for 'chunking_strategy': expected an object, but got a string instead."),
    ({}, f"{P}.type", "Missing required parameter: 'chunking_strategy.type'."),
    ({"type": "fixed"}, f"{P}.type", "Invalid value: 'fixed'. Supported values are: 'auto' and 'static'."),
    ({"type": "static"}, S, "Missing required parameter: 'chunking_strategy.static'."),
    ({"type": "auto", "static": {}}, S, "Unknown parameter: 'chunking_strategy.static'."),
    ({"type": "static", "static": [], "extra": 1}, f"{P}.extra", "Unknown parameter: 'chunking_strategy.extra'."),
    ({"type": "static", "static": 5}, S, "expected an object, but got an integer instead"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 200}}, f"{S}.chunk_overlap_tokens", "Missing required"),
    (static(99, 0), f"{S}.max_chunk_size_tokens", "integer below minimum value. Expected a value >= 100, but got 99"),
    (static(4097, 0), f"{S}.max_chunk_size_tokens", "integer above maximum value. Expected a value <= 4096"),
    (static("800", 400), f"{S}.max_chunk_size_tokens", "expected an integer, but got a string instead"),
    (static(True, 0), f"{S}.max_chunk_size_tokens", "expected an integer, but got a boolean instead"),
    (static(800.5, 0), f"{S}.max_chunk_size_tokens", "expected an integer, but got a number instead"),
    (static(800, -1), f"{S}.chunk_overlap_tokens", "integer below minimum value. Expected a value >= 0"),
    (static(800, 401), f"{S}.chunk_overlap_tokens", "must not exceed half of max_chunk_size_tokens (400 for 800), "
                                                    "but got 401 instead"),
    (static(101, 51), f"{S}.chunk_overlap_tokens", "(50 for 101)"),
    ({"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0, "x": 1}},
     f"{S}.x", "Unknown parameter: 'chunking_strategy.static.x'."),
])
def test_bad_strategies_are_400s_naming_the_parameter(body: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ChunkingStrategy.parse(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert words in caught.value.message
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


def test_the_value_type_refuses_what_parse_refuses() -> None:
    with pytest.raises(InvalidRequest):
        ChunkingStrategy.static(50, 0)
    with pytest.raises(InvalidRequest):
        ChunkingStrategy.static(200, 101)


# --- the chunker: guarantees over random texts --------------------------------------------------------------------

VOCABULARY = [
    "the", "a", "of", "retrieval", "embedding", "tokenization", "vector", "store", "Straße", "naïve", "café", "東京",
    "データベース", "3.14159", "2024-11-15", "x", "supercalifragilisticexpialidocious", "ERR_CONNECTION_RESET",
    "(note)", "e.g.", "hello,", "well—", "quoted\"word\"", "semi;colon", "antidisestablishmentarianism", "ok!",
]
SEPARATORS = [(" ", 0.80), (". ", 0.08), ("\n", 0.04), ("\n\n", 0.03), (" \t ", 0.03), ("? ", 0.02)]


def random_text(rng: random.Random, words: int) -> str:
    parts = [rng.choice(["", " ", "\n"])]
    for _ in range(words):
        parts.append(rng.choice(VOCABULARY))
        parts.append(rng.choices([s for s, _ in SEPARATORS], weights=[w for _, w in SEPARATORS])[0])
    return "".join(parts)


def token_range(spans: list[tuple[int, int]], chunk: Chunk) -> tuple[int, int]:
    inside = [i for i, (start, end) in enumerate(spans) if start >= chunk.start and end <= chunk.end]
    assert inside == list(range(inside[0], inside[-1] + 1))
    return inside[0], inside[-1] + 1


def check_chunks(text: str, chunks: list[Chunk], strategy: ChunkingStrategy, tokenizer: SpanTokenizer) -> None:
    spans = list(tokenizer.token_spans(text))
    size, overlap = strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens
    assert [c.index for c in chunks] == list(range(len(chunks)))
    ranges = []
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]
        assert chunk.text == chunk.text.strip()
        first, end = token_range(spans, chunk)
        assert chunk.tokens == end - first <= size
        ranges.append((first, end))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(spans)  # from the first token to the last
    for (first_a, end_a), (first_b, end_b) in itertools.pairwise(ranges):
        assert first_a < first_b <= end_a < end_b  # in order, no token skipped
        shared = end_a - first_b
        assert shared == 0 if overlap == 0 else overlap <= shared <= overlap + size // 8
        assert end_a - first_a >= size - size // 4  # a chunk that is not the last is at least 3/4 full
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(text[i].isspace() for i in range(len(text)) if i not in covered)


@pytest.fixture(params=["approximate", "minilm"])
def tokenizer(request: pytest.FixtureRequest) -> SpanTokenizer:
    if request.param == "minilm":
        minilm: HuggingFaceTokenizer = request.getfixturevalue("minilm")
        return minilm
    return ApproximateTokenizer()


@pytest.mark.parametrize("seed", range(30))
def test_chunks_cover_the_text_in_order_within_the_limit_with_the_overlap(seed: int, tokenizer: SpanTokenizer
                                                                            ) -> None:
    rng = random.Random(seed)
    size = rng.choice([100, 101, 128, 200, 333])
    strategy = ChunkingStrategy.static(size, rng.choice([0, 1, size // 4, size // 2]))
    text = random_text(rng, rng.randint(1, 1500))
    chunks = chunk_text(text, strategy, tokenizer)
    check_chunks(text, chunks, strategy, tokenizer)


def test_auto_on_a_long_text(tokenizer: SpanTokenizer) -> None:
    text = random_text(random.Random(7), 6000)
    chunks = chunk_text(text, ChunkingStrategy(), tokenizer)
    assert len(chunks) > 5
    check_chunks(text, chunks, ChunkingStrategy(), tokenizer)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_text_without_tokens_has_no_chunks(text: str, tokenizer: SpanTokenizer) -> None:
    assert chunk_text(text, ChunkingStrategy(), tokenizer) == []


def test_a_short_text_is_one_chunk_without_its_surrounding_whitespace(tokenizer: SpanTokenizer) -> None:
    text = "\n  Vector stores hold chunks of files.  \n"
    assert chunk_text(text, ChunkingStrategy(), tokenizer) == [
        Chunk(index=0, text=text.strip(), start=3, end=text.index("files.") + 6,
              tokens=len(tokenizer.token_spans(text)))]


# --- the chunker: where it cuts ------------------------------------------------------------------------------------


def sentence(i: int) -> str:
    return f"Sentence number {i} talks about vector stores and chunks."


def test_a_cut_lands_on_a_paragraph_break_in_the_last_quarter(minilm: HuggingFaceTokenizer) -> None:
    first = " ".join(sentence(i) for i in range(8))  # 8 sentences of 10 tokens, then a blank line
    text = first + "\n\n" + " ".join(sentence(i) for i in range(8, 40))
    assert len(minilm.token_spans(first)) == 80
    chunks = chunk_text(text, ChunkingStrategy.static(100, 20), minilm)
    assert chunks[0].text == first  # not the later sentence ends at 90 or 100 tokens


def test_without_paragraphs_a_cut_lands_on_a_sentence_end(minilm: HuggingFaceTokenizer) -> None:
    text = " ".join(sentence(i) for i in range(40))
    chunks = chunk_text(text, ChunkingStrategy.static(105, 30), minilm)
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("chunks.")
        assert chunk.tokens == 100  # 10 tokens a sentence: the last sentence end within 105 tokens


def test_without_sentences_a_cut_lands_between_words(minilm: HuggingFaceTokenizer) -> None:
    text = " ".join(["retrieval augmented generation"] * 200)
    chunks = chunk_text(text, ChunkingStrategy.static(100, 40), minilm)
    for chunk in chunks:
        assert chunk.text.startswith("retrieval") or chunk.text.startswith(("augmented", "generation"))
        # the tokens of each chunk are exactly what the model sees (between [CLS] and [SEP])
        assert len(minilm.token_spans(chunk.text)) == chunk.tokens


def test_without_any_boundary_the_cut_is_at_the_limit(tokenizer: SpanTokenizer) -> None:
    text = "abcd" * 1000  # one word: the approximate tokenizer makes 4-letter pieces, MiniLM word pieces
    strategy = ChunkingStrategy.static(100, 10)
    chunks = chunk_text(text, strategy, tokenizer)
    assert all(c.tokens == 100 for c in chunks[:-1])
    check_chunks(text, chunks, strategy, tokenizer)


def test_the_next_chunk_starts_at_the_start_of_a_word(minilm: HuggingFaceTokenizer) -> None:
    # long words of several word pieces: an overlap counted in tokens mostly lands inside one
    text = " ".join(["antidisestablishmentarianism supercalifragilisticexpialidocious"] * 150)
    chunks = chunk_text(text, ChunkingStrategy.static(100, 33), minilm)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.start == 0 or text[chunk.start - 1] == " "


def test_cjk_sentences_end_at_their_full_stop(minilm: HuggingFaceTokenizer) -> None:
    text = "".join("東京は日本の首都です。" for _ in range(60))  # no spaces at all; 11 tokens a sentence
    for chunk in chunk_text(text, ChunkingStrategy.static(100, 0), minilm)[:-1]:
        assert chunk.text.endswith("。")


def test_the_adapter_sees_every_token_and_leaves_the_callers_tokenizer_alone(minilm: HuggingFaceTokenizer) -> None:
    from tokenizers import Tokenizer

    from tenantlm.providers.local_embeddings import default_model_dir

    shipped = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))  # pads and cuts to 128 as shipped
    shipped.no_padding()
    shipped.enable_truncation(max_length=16)
    adapter = HuggingFaceTokenizer(shipped)
    text = " ".join(["word"] * 300)
    assert len(adapter.token_spans(text)) == 300
    assert len(shipped.encode(text).ids) == 16
