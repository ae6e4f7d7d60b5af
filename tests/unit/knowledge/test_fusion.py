"""Reciprocal rank fusion: a hand-computed example, monotonicity over random rankings, the single-retriever paths,
and the search options' 400s."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tenantlm.errors import InvalidRequest
from tenantlm.knowledge.fusion import (
    CANDIDATE_DEPTH,
    RRF_K,
    Fused,
    HybridWeights,
    RankingOptions,
    cut,
    fuse,
    parse_max_num_results,
    parse_query,
)

EQUAL = HybridWeights(1.0, 1.0)


def test_a_hand_computed_fusion() -> None:
    results = fuse(dense=[["a", "b", "c"]], lexical=[["c", "a"]], weights=EQUAL, k=60)
    best = 2 / 61  # first in both rankings
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62 only
    assert [r.id for r in results] == ["a", "c", "b"]
    assert results[0] == Fused("a", pytest.approx((1 / 61 + 1 / 62) / best), 1, 2)  # type: ignore[arg-type]
    assert results[1] == Fused("c", pytest.approx((1 / 63 + 1 / 61) / best), 3, 1)  # type: ignore[arg-type]
    assert results[2] == Fused("b", pytest.approx((1 / 62) / best), 2, None)  # type: ignore[arg-type]



def test_the_defaults() -> None:
    assert (RRF_K, HybridWeights()) == (10, HybridWeights(1.0, 0.5))
    results = fuse(dense=[["a", "b"]], lexical=[["b", "c"]], weights=HybridWeights())
    # best possible 1.5/11; a: 1/11, b: 1/12 + 0.5/11, c: 0.5/12
    assert [(r.id, r.score) for r in results] == [
        ("b", pytest.approx((1 / 12 + 0.5 / 11) * 11 / 1.5)), ("a", pytest.approx(2 / 3)),
        ("c", pytest.approx(0.5 / 12 * 11 / 1.5))]


def test_weights_scale_each_retrievers_share() -> None:
    results = fuse(dense=[["a", "b"]], lexical=[["b", "a"]], weights=HybridWeights(3.0, 1.0), k=60)
    # a: 3/61 + 1/62, b: 3/62 + 1/61, best 4/61
    assert [(r.id, r.score) for r in results] == [("a", pytest.approx((3 / 61 + 1 / 62) * 61 / 4)),
                                                  ("b", pytest.approx((3 / 62 + 1 / 61) * 61 / 4))]


def test_first_everywhere_scores_one_and_every_score_is_in_0_1() -> None:
    rng = random.Random(1)
    for _ in range(200):
        ids = list(range(30))
        dense, lexical = rng.sample(ids, rng.randint(1, 30)), rng.sample(ids, rng.randint(1, 30))
        weights = HybridWeights(rng.choice([0.0, 0.3, 1.0, 2.0]), rng.choice([0.5, 1.0, 4.0]))
        results = fuse(dense=[dense], lexical=[lexical], weights=weights)
        assert all(0 < r.score <= 1 for r in results)
        if weights.embedding_weight and dense[0] == lexical[0]:
            assert results[0].score == pytest.approx(1.0)


def rank_of(ranking: list[int], chunk_id: int) -> float:
    return ranking.index(chunk_id) + 1 if chunk_id in ranking else float("inf")


@pytest.mark.parametrize("seed", range(10))
def test_monotone_a_chunk_ranked_no_worse_everywhere_scores_no_less(seed: int) -> None:
    rng = random.Random(seed)
    ids = list(range(40))
    dense = [rng.sample(ids, rng.randint(5, 40)) for _ in range(rng.choice([1, 2]))]
    lexical = [rng.sample(ids, rng.randint(5, 40)) for _ in range(rng.choice([1, 2]))]
    weights = HybridWeights(rng.uniform(0.1, 2), rng.uniform(0.1, 2))
    results = fuse(dense=dense, lexical=lexical, weights=weights)
    score = {r.id: r.score for r in results}
    order = [r.id for r in results]
    for a in score:
        for b in score:
            if all(rank_of(r, a) <= rank_of(r, b) for r in dense + lexical):
                assert score[a] >= score[b]
                if score[a] == score[b]:
                    continue
                assert order.index(a) < order.index(b)


@pytest.mark.parametrize("seed", range(10))
def test_moving_a_chunk_up_one_ranking_raises_its_score(seed: int) -> None:
    rng = random.Random(seed)
    dense, lexical = rng.sample(range(50), 30), rng.sample(range(50), 30)
    chunk_id = dense[rng.randrange(1, 30)]
    before = {r.id: r.score for r in fuse(dense=[dense], lexical=[lexical], weights=EQUAL)}
    promoted = dense.copy()
    position = promoted.index(chunk_id)
    promoted[position - 1], promoted[position] = promoted[position], promoted[position - 1]
    after = {r.id: r.score for r in fuse(dense=[promoted], lexical=[lexical], weights=EQUAL)}
    assert after[chunk_id] > before[chunk_id]


def test_dense_only_and_lexical_only_follow_their_ranking() -> None:
    dense, lexical = ["a", "b", "c", "d"], ["x", "d", "c"]
    only_dense = fuse(dense=[dense], lexical=[lexical], weights=HybridWeights.dense_only())
    assert [r.id for r in only_dense] == dense  # chunks only the lexical ranking holds are not results
    assert [r.score for r in only_dense] == pytest.approx([(RRF_K + 1) / (RRF_K + rank) for rank in (1, 2, 3, 4)])
    only_text = fuse(dense=[dense], lexical=[lexical], weights=HybridWeights.lexical_only())
    assert [r.id for r in only_text] == lexical
    assert fuse(dense=[dense], lexical=[], weights=HybridWeights.lexical_only()) == []


def test_more_text_weight_moves_a_keyword_match_up() -> None:
    dense, lexical = [["semantic", "both"]], [["keyword", "both"]]
    positions = []
    for text_weight in (0.1, 0.5, 1.0, 2.0, 10.0):
        order = [r.id for r in fuse(dense=dense, lexical=lexical, weights=HybridWeights(1.0, text_weight))]
        positions.append(order.index("keyword"))
    assert positions == sorted(positions, reverse=True) and positions[0] > positions[-1]


def test_several_queries_share_their_kinds_weight() -> None:
    one = fuse(dense=[["a", "b"]], lexical=[["b"]], weights=EQUAL)
    twice = fuse(dense=[["a", "b"], ["a", "b"]], lexical=[["b"], ["b"]], weights=EQUAL)
    assert [(r.id, r.score) for r in twice] == [(r.id, pytest.approx(r.score)) for r in one]
    split = fuse(dense=[["a"], ["b"]], lexical=[], weights=EQUAL)
    assert [(r.id, r.score) for r in split] == [("a", pytest.approx(0.5)), ("b", pytest.approx(0.5))]


def test_a_repeated_id_counts_at_its_first_place_and_ties_keep_first_appearance() -> None:
    assert fuse(dense=[["a", "a", "b"]], lexical=[], weights=EQUAL) == fuse(dense=[["a", "b"]], lexical=[],
                                                                            weights=EQUAL)
    tied = fuse(dense=[["a", "b"]], lexical=[["b", "a"]], weights=EQUAL)
    assert [r.id for r in tied] == ["a", "b"] and tied[0].score == tied[1].score


def test_cut_applies_the_threshold_then_the_count() -> None:
    results = fuse(dense=[list("abcdef")], lexical=[list("ab")], weights=EQUAL)
    scores = [r.score for r in results]
    assert [r.id for r in cut(results, score_threshold=0.0, max_num_results=3)] == list("abc")
    assert [r.id for r in cut(results, score_threshold=scores[1], max_num_results=50)] == list("ab")  # inclusive
    assert [r.id for r in cut(results, score_threshold=0.51, max_num_results=50)] == list("ab")  # found by both
    assert cut(results, score_threshold=1.0, max_num_results=50) == results[:1]
    assert CANDIDATE_DEPTH >= 50  # deeper than the most results a search returns


def test_ranking_options_defaults_and_values() -> None:
    assert RankingOptions.parse(None) == RankingOptions("auto", 0.0, HybridWeights(1.0, 0.5))
    parsed = RankingOptions.parse({"ranker": "none", "score_threshold": 0.5,
                                   "hybrid_search": {"embedding_weight": 2, "text_weight": 0}})
    assert parsed == RankingOptions("none", 0.5, HybridWeights(2.0, 0.0))
    for ranker in ("auto", "default-2024-11-15"):
        assert RankingOptions.parse({"ranker": ranker}).ranker == ranker


R = "ranking_options"
H = "ranking_options.hybrid_search"


@pytest.mark.parametrize(("body", "param", "words"), [
    ([], R, "Invalid type for 'ranking_options': expected an object"),
    ({"ranker": "bm25"}, f"{R}.ranker", "Invalid value: 'bm25'. Supported values are: 'none', 'auto' and "
                                        "'default-2024-11-15'."),
    ({"score_threshold": 1.5}, f"{R}.score_threshold", "number above maximum value. Expected a value <= 1.0"),
    ({"score_threshold": -0.1}, f"{R}.score_threshold", "number below minimum value"),
    ({"score_threshold": "0.5"}, f"{R}.score_threshold", "expected a number, but got a string instead"),
    ({"score_threshold": True}, f"{R}.score_threshold", "expected a number, but got a boolean instead"),
    ({"rerank": True}, f"{R}.rerank", "Unknown parameter: 'ranking_options.rerank'."),
    ({"hybrid_search": {"embedding_weight": 1}}, f"{H}.text_weight", "Missing required parameter"),
    ({"hybrid_search": {"embedding_weight": -1, "text_weight": 1}}, f"{H}.embedding_weight", "below minimum"),
    ({"hybrid_search": {"embedding_weight": 0, "text_weight": 0.0}}, H, "must not both be 0"),
    ({"hybrid_search": {"embedding_weight": 1, "text_weight": float("inf")}}, f"{H}.text_weight", "finite"),
    ({"hybrid_search": {"embedding_weight": 1, "text_weight": None}}, f"{H}.text_weight", "but got null instead"),
    ({"hybrid_search": [1, 1]}, H, "expected an object, but got an array instead"),
])
def test_bad_ranking_options_are_400s(body: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        RankingOptions.parse(body)
    assert caught.value.param == param
    assert words in caught.value.message


def test_weights_are_validated_when_built_directly() -> None:
    with pytest.raises(InvalidRequest, match="must not both be 0"):
        HybridWeights(0.0, 0.0)
    with pytest.raises(InvalidRequest, match="below minimum"):
        HybridWeights(-0.5, 1.0)


def test_query_and_max_num_results() -> None:
    assert parse_query("hello") == ["hello"]
    assert parse_query(["a", "b"]) == ["a", "b"]
    assert parse_max_num_results(None) == 10
    assert parse_max_num_results(50) == 50
    bad: list[tuple[Any, str, str]] = [
        (None, "query", "expected a string or an array of strings, but got null"),
        ("  ", "query", "expected a non-empty string"),
        ([], "query", "expected at least one query"),
        (["a", 3], "query[1]", "expected a string, but got an integer"),
        (["a", ""], "query[1]", "expected a non-empty string"),
        (["q"] * 17, "query", "at most 16 queries"),
    ]
    for body, param, words in bad:
        with pytest.raises(InvalidRequest) as caught:
            parse_query(body)
        assert caught.value.param == param and words in caught.value.message, caught.value.message
    for value, words in ((0, "below minimum"), (51, "above maximum"), ("5", "expected an integer")):
        with pytest.raises(InvalidRequest, match=words) as caught:
            parse_max_num_results(value)
        assert caught.value.param == "max_num_results"
