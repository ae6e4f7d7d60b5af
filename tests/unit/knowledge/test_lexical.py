"""The BM25 index: scores against a hand-computed example, text analysis, and add/remove/compaction checked against
a freshly built index over the same live chunks."""

from __future__ import annotations

import math
import random

import pytest

from tenantlm.knowledge.lexical import COMPACT_MIN_DEAD, BM25Index, terms


def test_scores_match_a_hand_computed_example() -> None:
    index = BM25Index([("d1", "cat cat dog"), ("d2", "dog bird"), ("d3", "fish")])
    # N = 3, lengths 3, 2, 1, average 2; k1 = 1.2, b = 0.75
    # cat: df 1, idf = ln(1 + 2.5 / 1.5) = ln(8/3) = 0.980829
    #      d1: tf 2, norm = 1.2 * (0.25 + 0.75 * 3/2) = 1.65 -> 0.980829 * 2 * 2.2 / 3.65 = 1.182369
    assert index.search("cat", 10) == [("d1", pytest.approx(1.182369, abs=1e-6))]
    # dog: df 2, idf = ln(1 + 1.5 / 2.5) = ln(1.6) = 0.470004
    #      d2: tf 1, norm = 1.2 * (0.25 + 0.75 * 2/2) = 1.2 -> 0.470004 * 2.2 / 2.2 = 0.470004
    #      d1: tf 1, norm 1.65 -> 0.470004 * 2.2 / 2.65 = 0.390192
    ranked = index.search("dog", 10)
    assert [i for i, _ in ranked] == ["d2", "d1"]
    assert ranked[0][1] == pytest.approx(0.470004, abs=1e-6)
    assert ranked[1][1] == pytest.approx(0.390192, abs=1e-6)
    # two terms add up: d1 for "cat dog" = 1.182369 + 0.390192
    assert index.search("Cat DOG", 1) == [("d1", pytest.approx(1.572561, abs=1e-6))]


def test_idf_is_never_negative() -> None:
    index = BM25Index([(i, "common word") for i in range(5)] + [(9, "rare")])
    ranked = index.search("common", 10)
    assert len(ranked) == 5 and all(score > 0 for _, score in ranked)
    # N = 6, df 5: idf = ln(1 + 1.5 / 5.5) > 0 (the classic ln((N - df + 0.5) / (df + 0.5)) would be negative)
    assert ranked[0][1] == pytest.approx(math.log(1 + 1.5 / 5.5) * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / (11 / 6))))


@pytest.mark.parametrize(("text", "expected"), [
    ("The quick brown fox", ["quick", "brown", "fox"]),  # stop words out, lower case
    ("Café FAÇADE naïve", ["cafe", "facade", "naive"]),  # diacritics folded
    ("ERR_CONNECTION_RESET on gpt-4o", ["err_connection_reset", "gpt", "4o"]),
    ("東京タワー", ["東", "京", "タ", "ワ", "ー"]),  # one term per character
    ("iPhone東京", ["iphone", "東", "京"]),
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # vowel signs and virama stay in their words
    ("Straße ﬁle", ["strasse", "file"]),  # case folding and compatibility forms
    ("the a of", []),
])
def test_text_analysis(text: str, expected: list[str]) -> None:
    assert terms(text) == expected


def test_stop_words_can_be_turned_off() -> None:
    index = BM25Index([(1, "the who"), (2, "a band")], stop_words=frozenset())
    assert [i for i, _ in index.search("the who", 5)] == [1]
    assert BM25Index([(1, "the who")]).search("the who", 5) == []


def test_nothing_matches_gives_nothing() -> None:
    index = BM25Index([(1, "alpha beta")])
    assert index.search("gamma", 5) == []
    assert index.search("", 5) == []
    assert index.search("alpha", 0) == []
    assert BM25Index[int]().search("alpha", 5) == []


def test_equal_scores_keep_the_order_chunks_were_added_in() -> None:
    index = BM25Index([(f"c{i}", "same text here") for i in range(20)])
    assert [i for i, _ in index.search("text", 7)] == [f"c{i}" for i in range(7)]


def test_adding_an_id_again_replaces_it() -> None:
    index = BM25Index([("a", "old words"), ("b", "other words")])
    index.add("a", "new words")
    assert len(index) == 2
    assert index.search("old", 5) == []
    assert [i for i, _ in index.search("new", 5)] == ["a"]
    assert index.search("words", 5) == BM25Index([("b", "other words"), ("a", "new words")]).search("words", 5)


def test_any_hashable_id() -> None:
    index = BM25Index([(("file-1", 0), "alpha"), (("file-1", 1), "beta")])
    assert index.search("beta", 5) == [(("file-1", 1), pytest.approx(index.search("beta", 5)[0][1]))]
    assert ("file-1", 0) in index and index.remove(("file-1", 0)) and ("file-1", 0) not in index
    assert not index.remove(("file-1", 0))


WORDS = [f"w{i}" for i in range(60)]


def random_doc(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[: rng.randint(3, 60)]) for _ in range(rng.randint(0, 25)))


def same_results(a: list[tuple[object, float]], b: list[tuple[object, float]]) -> bool:
    return [i for i, _ in a] == [i for i, _ in b] and all(
        math.isclose(x, y, rel_tol=1e-9) for (_, x), (_, y) in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_after_adds_and_removes_it_answers_like_a_fresh_index(seed: int) -> None:
    rng = random.Random(seed)
    index: BM25Index[int] = BM25Index()
    live: dict[int, str] = {}
    for step in range(3 * COMPACT_MIN_DEAD):  # enough removals to compact at least once
        if live and rng.random() < 0.45:
            victim = rng.choice(list(live))
            assert index.remove(victim)
            del live[victim]
        else:
            chunk_id = rng.randrange(4 * COMPACT_MIN_DEAD)
            live[chunk_id] = random_doc(rng)
            index.add(chunk_id, live[chunk_id])
        if step % 500 == 0 or step == 3 * COMPACT_MIN_DEAD - 1:
            fresh = BM25Index(sorted(live.items(), key=lambda item: index_order(index, item[0])))
            assert len(index) == len(live)
            for query in ("w1", "w2 w7", "w40 w41 w59", "w0 w3 w3"):
                assert same_results(index.search(query, 15), fresh.search(query, 15))


def index_order(index: BM25Index[int], chunk_id: int) -> int:
    """Where a chunk sits in the index (ties are ordered by it), so a fresh index can be built in the same order."""
    return index._slot_of[chunk_id]


def test_removing_most_chunks_compacts_the_posting_lists() -> None:
    total = 4 * COMPACT_MIN_DEAD
    index = BM25Index([(i, f"shared word{i}") for i in range(total)])
    for i in range(total - 10):
        index.remove(i)
        dead = len(index._ids) - len(index)
        assert dead < max(COMPACT_MIN_DEAD, len(index) + 1)  # dead slots never pile up past the live ones
    assert len(index._ids) < 10 + COMPACT_MIN_DEAD
    assert len(index._df) <= 1 + len(index._ids)  # the vocabulary lost the terms only removed chunks held
    assert [i for i, _ in index.search("shared", 20)] == list(range(total - 10, total))
    assert index.search("word0", 5) == []
    index.add(-1, "shared word0")
    assert [i for i, _ in index.search("word0", 5)] == [-1]


def test_allowed_filters_before_the_cut() -> None:
    rng = random.Random(3)
    docs = [(i, random_doc(rng)) for i in range(400)]
    index = BM25Index(docs)
    everything = index.search("w1 w2 w3", 400)
    for allowed in (lambda i: i % 2 == 0, lambda i: i % 97 == 5, lambda i: i > 390, lambda i: False):
        expected = [(i, s) for i, s in everything if allowed(i)][:10]
        assert index.search("w1 w2 w3", 10, allowed) == expected
