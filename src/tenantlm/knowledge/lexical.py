"""Keyword search over chunk texts: an in-memory Okapi BM25 index with posting lists.

Text analysis (:func:`terms`), the same for chunks and queries: Unicode NFKD with the diacritical marks dropped
and recomposed (NFKC), so ``café`` and ``cafe`` meet; case folded; split into words of Unicode letters, digits,
underscores and combining marks (the vowel signs of Devanagari belong to their words): ``ERR_CONNECTION_RESET`` stays
whole, ``gpt-4o`` is ``gpt`` and ``4o``. Chinese and Japanese characters, written without spaces, are one term each;
Thai or Khmer written without spaces stays in whole runs (there is no dictionary segmentation). Words in
``stop_words`` (by default a short English list, :data:`ENGLISH_STOP_WORDS`) are left out of the index and of
queries. There is no stemming.

Scoring, for a query's distinct terms ``t`` present in a chunk ``d``::

    score(d) = sum_t idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * len(d) / avglen))
    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with ``N`` the chunks in the index, ``df(t)`` those that hold ``t``, ``len(d)`` the terms of ``d`` after analysis,
``k1 = 1.2`` and ``b = 0.75`` (Lucene's defaults; this ``idf`` is Lucene's, never negative). A chunk matches when it
holds at least one query term; only matching chunks are returned.

Layout: each term has a posting list (the chunk slots that hold it and its count there) in compact ``array('i')``
buffers that numpy reads without copying, so one query costs a few vectorised operations per query term. Removing a
chunk marks its slot dead and corrects the document frequencies at once; dead postings are dropped when dead slots
outnumber live ones (a rebuild of the posting lists in numpy). Scores of equal value are ordered by when the chunk was
added (earlier first), so results are deterministic.

The index holds one store's chunks; the caller chooses whose (see the ``allowed`` predicate of :meth:`search`).
It is not safe for concurrent use: the caller serialises changes with searches (one lock per index, say).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)

K1 = 1.2
B = 0.75
COMPACT_MIN_DEAD = 1024  # dead slots before a compaction is worth it (and more dead than live ones)

ENGLISH_STOP_WORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does", "for", "from", "had", "has",
    "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "such",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "was", "we",
    "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
))

_ASCII_WORD = re.compile(r"\w+")
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and CJK ideographs
_CJK = re.compile(f"[{_CJK_RANGES}]")
_CJK_PIECE = re.compile(f"[{_CJK_RANGES}]|[^{_CJK_RANGES}]+")
# the combining diacritical marks (accents of Latin, Greek and Cyrillic letters once decomposed); the vowel signs and
# viramas of Indic scripts, which are combining characters too, are part of their words and stay
_DIACRITICS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_INT = np.intc  # the C int of array('i')


def terms(text: str, stop_words: frozenset[str] = ENGLISH_STOP_WORDS) -> list[str]:
    """The terms of ``text`` as the index sees them, in order (repeats kept)."""
    if text.isascii():
        words = _ASCII_WORD.findall(text.lower())
    else:
        folded = unicodedata.normalize("NFKC", _DIACRITICS.sub("", unicodedata.normalize("NFKD", text))).casefold()
        words = [piece for word in _word_pattern().findall(folded)
                 for piece in (_CJK_PIECE.findall(word) if _CJK.search(word) else (word,))]
    return [word for word in words if word not in stop_words]


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    """Runs of word characters (letters, digits, underscore) and combining marks: the vowel signs and viramas of
    Indic scripts are marks, not word characters, yet part of their words. Built from the Unicode database on first
    use (about 50 ms; the Basic Multilingual Plane holds the marks of every script in current use)."""
    marks: list[list[int]] = []
    for code, category in enumerate(map(unicodedata.category, map(chr, range(0x10000)))):
        if category.startswith("M"):
            if marks and marks[-1][1] == code - 1:
                marks[-1][1] = code
            else:
                marks.append([code, code])
    ranges = "".join(f"\\u{low:04x}-\\u{high:04x}" for low, high in marks)
    return re.compile(f"[\\w{ranges}]+")


def _int_array(values: npt.NDArray[np.integer] | Iterable[int]) -> array[int]:
    out = array("i")
    out.frombytes(np.asarray(values, dtype=_INT).tobytes())
    return out


def _view(buffer: array[int]) -> npt.NDArray[np.intc]:
    return np.frombuffer(buffer, dtype=_INT) if len(buffer) else np.zeros(0, dtype=_INT)


class BM25Index(Generic[K]):
    """Okapi BM25 over ``(chunk id, text)`` pairs; ids are any hashable values."""

    def __init__(self, items: Iterable[tuple[K, str]] = (), *, k1: float = K1, b: float = B,
                 stop_words: frozenset[str] = ENGLISH_STOP_WORDS) -> None:
        self.k1, self.b, self.stop_words = k1, b, stop_words
        self._term_ids: dict[str, int] = {}
        self._post_slots: list[array[int]] = []  # per term: the slots that hold it (dead ones until compaction)
        self._post_counts: list[array[int]] = []  # per term: its count in each of those slots
        self._df: list[int] = []  # per term: live chunks that hold it
        self._ids: list[K | None] = []  # per slot: the chunk id, None once removed
        self._slot_of: dict[K, int] = {}
        self._doc_terms: list[array[int] | None] = []  # per slot: its distinct term ids (to correct df on remove)
        self._lengths = array("i")  # per slot: its number of terms (0 once removed)
        self._total_length = 0
        self._norm: npt.NDArray[np.float64] | None = None  # per slot: k1 * (1 - b + b * len / avglen), cached
        self.add_many(items)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._slot_of

    def add(self, chunk_id: K, text: str) -> None:
        """Index a chunk; an id already present is replaced."""
        if chunk_id in self._slot_of:
            self.remove(chunk_id)
        words = terms(text, self.stop_words)
        slot = len(self._ids)
        doc_terms = array("i")
        for word, count in Counter(words).items():
            term_id = self._term_id(word)
            self._post_slots[term_id].append(slot)
            self._post_counts[term_id].append(count)
            self._df[term_id] += 1
            doc_terms.append(term_id)
        length = len(words)
        self._ids.append(chunk_id)
        self._slot_of[chunk_id] = slot
        self._doc_terms.append(doc_terms)
        self._lengths.append(length)
        self._total_length += length
        self._norm = None

    def add_many(self, items: Iterable[tuple[K, str]]) -> None:
        for chunk_id, text in items:
            self.add(chunk_id, text)

    def remove(self, chunk_id: K) -> bool:
        """Drop a chunk; False when the id is not in the index."""
        slot = self._slot_of.pop(chunk_id, None)
        if slot is None:
            return False
        doc_terms = self._doc_terms[slot]
        assert doc_terms is not None
        for term_id in doc_terms:
            self._df[term_id] -= 1
        self._total_length -= self._lengths[slot]
        self._lengths[slot] = 0
        self._ids[slot] = None
        self._doc_terms[slot] = None
        self._norm = None
        dead = len(self._ids) - len(self._slot_of)
        if dead >= COMPACT_MIN_DEAD and dead > len(self._slot_of):
            self._compact()
        return True

    def search(self, query: str, k: int, allowed: Callable[[K], bool] | None = None) -> list[tuple[K, float]]:
        """The ``k`` best chunks for ``query`` among those ``allowed`` accepts (all when None), best first, with
        their BM25 scores. ``allowed`` is applied before the cut to ``k``: a chunk it refuses never takes a place."""
        if k <= 0 or not self._slot_of:
            return []
        scores = self._scores(query)
        if scores is None:
            return []
        candidates = np.flatnonzero(scores > 0)
        return self._best(candidates, scores, k, allowed)

    def _term_id(self, term: str) -> int:
        term_id = self._term_ids.get(term)
        if term_id is None:
            term_id = self._term_ids[term] = len(self._df)
            self._post_slots.append(array("i"))
            self._post_counts.append(array("i"))
            self._df.append(0)
        return term_id

    def _scores(self, query: str) -> npt.NDArray[np.float64] | None:
        """BM25 of every slot (0 for slots without a query term and for dead slots), or None if nothing matches."""
        query_terms = {self._term_ids.get(t) for t in terms(query, self.stop_words)}
        present = [t for t in query_terms if t is not None and self._df[t] > 0]
        if not present:
            return None
        live = len(self._slot_of)
        norm = self._slot_norms()
        scores = np.zeros(len(self._ids), dtype=np.float64)
        for term_id in present:
            slots = _view(self._post_slots[term_id])
            counts = _view(self._post_counts[term_id]).astype(np.float64)
            df = self._df[term_id]
            idf = math.log(1.0 + (live - df + 0.5) / (df + 0.5))
            scores[slots] += idf * counts * (self.k1 + 1.0) / (counts + norm[slots])
        scores[_view(self._lengths) == 0] = 0.0  # dead slots (and chunks without terms, which match nothing)
        return scores

    def _slot_norms(self) -> npt.NDArray[np.float64]:
        if self._norm is None:
            lengths = _view(self._lengths).astype(np.float64)
            average = self._total_length / len(self._slot_of)
            self._norm = self.k1 * (1.0 - self.b + self.b * lengths / max(average, 1e-9))
        return self._norm

    def _best(self, candidates: npt.NDArray[np.intp], scores: npt.NDArray[np.float64], k: int,
              allowed: Callable[[K], bool] | None) -> list[tuple[K, float]]:
        """The ``k`` best candidates that ``allowed`` accepts: ranks the top few first and widens only when the
        predicate refused too many of them."""
        want = k
        while True:
            ranked = _top(candidates, scores, want)
            out: list[tuple[K, float]] = []
            for slot in ranked:
                chunk_id = self._ids[slot]
                assert chunk_id is not None
                if allowed is None or allowed(chunk_id):
                    out.append((chunk_id, float(scores[slot])))
                    if len(out) == k:
                        return out
            if len(ranked) >= len(candidates):
                return out
            want *= 4

    def _compact(self) -> None:
        """Rebuild the posting lists without dead slots, and the vocabulary without terms no live chunk holds."""
        live_slots = np.flatnonzero(np.array([i is not None for i in self._ids], dtype=bool))
        new_slot = np.full(len(self._ids), -1, dtype=np.int64)
        new_slot[live_slots] = np.arange(len(live_slots))
        kept_terms = [t for t, df in enumerate(self._df) if df > 0]
        new_term = np.full(len(self._df), -1, dtype=np.int64)
        new_term[kept_terms] = np.arange(len(kept_terms))
        post_slots, post_counts = [], []
        for term_id in kept_terms:
            slots = new_slot[_view(self._post_slots[term_id])]
            keep = slots >= 0
            post_slots.append(_int_array(slots[keep]))
            post_counts.append(_int_array(_view(self._post_counts[term_id])[keep]))
        self._post_slots, self._post_counts = post_slots, post_counts
        self._df = [self._df[t] for t in kept_terms]
        self._term_ids = {term: int(new_term[t]) for term, t in self._term_ids.items() if new_term[t] >= 0}
        self._ids = [self._ids[s] for s in live_slots]
        self._slot_of = {chunk_id: slot for slot, chunk_id in enumerate(self._ids) if chunk_id is not None}
        self._doc_terms = [_int_array(new_term[_view(d)]) if (d := self._doc_terms[s]) is not None else None
                           for s in live_slots]
        self._lengths = _int_array(_view(self._lengths)[live_slots])
        self._norm = None


def _top(candidates: npt.NDArray[np.intp], scores: npt.NDArray[np.float64], want: int) -> npt.NDArray[np.intp]:
    """At least ``want`` (or all) of ``candidates`` with the highest scores, best first, ties by slot."""
    if len(candidates) > want:
        candidate_scores = scores[candidates]
        kth = np.partition(candidate_scores, len(candidates) - want)[len(candidates) - want]
        candidates = candidates[candidate_scores >= kth]
    order = np.lexsort((candidates, -scores[candidates]))
    ranked: npt.NDArray[np.intp] = candidates[order]
    return ranked
