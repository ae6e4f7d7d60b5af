"""Hybrid ranking: a dense (embedding) ranking and a lexical (BM25) ranking fused by weighted reciprocal rank fusion,
and the search options that shape the result (``ranking_options``, ``max_num_results``, ``query``).

Fusion (:func:`fuse`). Each retriever ranks the chunks the filters let through, best first; a chunk's fused value is

    fused(c) = sum over rankings r that hold c of  w_r / (RRF_K + rank_r(c))        (rank 1 = best)

with ``RRF_K = 10``. The weights are OpenAI's ``hybrid_search``: ``embedding_weight`` for the dense rankings and
``text_weight`` for the lexical ones, by default 1 and 0.5; with several query strings, each string has one ranking
of each kind and they share their kind's weight equally. A chunk that only a weight-0 ranking holds is not a result.

Why these defaults. Cormack, Clarke and Büttcher's paper (and Elasticsearch and OpenSearch) use k = 60 with equal
weights, found on TREC runs 1000 deep. Here each ranking is 100 chunks deep and a search returns at most 50, and on
the labelled corpus of ``bench/retrieval_quality.py`` (docs/benchmarks.md, "Retrieval quality") k = 60 with equal
weights ranked below dense search alone, because BM25's weak matches on paraphrased questions got as much say as the
embedding's confident ones. A smaller k trusts each retriever's top ranks more, and the lower text weight lets
keywords decide mostly where the embedding is unsure (codes, identifiers, rare names). Both are ordinary settings of
weighted RRF; the benchmark shows the numbers for every k and weight it tried, cross-validated.

Scores. The result's ``score`` is ``fused(c)`` divided by the best value any chunk could have (first in every
ranking: ``sum_r w_r / (RRF_K + 1)``), so it lies in (0, 1]: 1 for a chunk every retriever ranked first. With the
default weights a chunk ranked first by the embedding alone scores 0.67, first by BM25 alone 0.33, tenth in both
0.55; with equal weights a chunk only one retriever found scores at most 0.5. So ``score_threshold`` selects by rank
and agreement. Scores depend on ranks only, never on the retrievers' raw similarity, so they compare within one
search, not across searches. With the dense-only weights (1, 0) the score is ``11 / (10 + rank)``: 1.0 for the best
chunk, 0.55 for the 10th.

Cut (:func:`cut`). Filters select every chunk that matches before ranking (the retrievers take them as a predicate);
then chunks scoring below ``score_threshold`` are dropped and the rest cut to ``max_num_results``. Each retriever
contributes its best :data:`CANDIDATE_DEPTH` chunks, a fixed depth so that a chunk's score does not change with
``max_num_results``.

Rankers. OpenAI's ``ranker`` names a re-ranking step after retrieval. This server has no re-ranking model:
``auto`` and ``default-2024-11-15`` both name the fusion above, and ``none`` (no re-ranking) returns the same
results, since the fusion is the retrieval itself, not a re-ranking step. All three are accepted and behave alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from tenantlm.errors import InvalidRequest
from tenantlm.knowledge.params import as_int, as_number, as_object, invalid, unsupported_value, wrong_type

K = TypeVar("K", bound=Hashable)
Ranker = Literal["none", "auto", "default-2024-11-15"]

RRF_K = 10
CANDIDATE_DEPTH = 100
DEFAULT_EMBEDDING_WEIGHT = 1.0
DEFAULT_TEXT_WEIGHT = 0.5
RANKERS: tuple[Ranker, ...] = ("none", "auto", "default-2024-11-15")
MAX_NUM_RESULTS = 50
DEFAULT_MAX_NUM_RESULTS = 10
MAX_QUERIES = 16


@dataclass(frozen=True, slots=True)
class HybridWeights:
    """How much the dense and the lexical rankings count in the fusion: each at least 0, not both 0."""

    embedding_weight: float = DEFAULT_EMBEDDING_WEIGHT
    text_weight: float = DEFAULT_TEXT_WEIGHT

    def __post_init__(self) -> None:
        self._check("ranking_options.hybrid_search")

    def _check(self, param: str) -> None:
        as_number(self.embedding_weight, f"{param}.embedding_weight", minimum=0.0)
        as_number(self.text_weight, f"{param}.text_weight", minimum=0.0)
        if self.embedding_weight == 0 and self.text_weight == 0:
            raise invalid(param, "embedding_weight and text_weight must not both be 0.")

    @classmethod
    def dense_only(cls) -> HybridWeights:
        return cls(1.0, 0.0)

    @classmethod
    def lexical_only(cls) -> HybridWeights:
        return cls(0.0, 1.0)

    @classmethod
    def parse(cls, value: object, *, param: str = "ranking_options.hybrid_search") -> HybridWeights:
        """OpenAI's ``hybrid_search`` object (``None``: absent, the defaults)."""
        if value is None:
            return cls()
        body = as_object(value, param, required=("embedding_weight", "text_weight"))
        embedding = as_number(body["embedding_weight"], f"{param}.embedding_weight", minimum=0.0)
        text = as_number(body["text_weight"], f"{param}.text_weight", minimum=0.0)
        if embedding == 0 and text == 0:
            raise invalid(param, "embedding_weight and text_weight must not both be 0.")
        return cls(embedding, text)


@dataclass(frozen=True, slots=True)
class RankingOptions:
    """OpenAI's ``ranking_options``: the ranker (all behave alike here), the least score a result may have, the
    fusion weights."""

    ranker: Ranker = "auto"
    score_threshold: float = 0.0
    hybrid_search: HybridWeights = field(default_factory=HybridWeights)

    @classmethod
    def parse(cls, value: object, *, param: str = "ranking_options") -> RankingOptions:
        if value is None:
            return cls()
        body = as_object(value, param, allowed=("ranker", "score_threshold", "hybrid_search"))
        ranker = body.get("ranker", "auto")
        if ranker not in RANKERS:
            raise unsupported_value(f"{param}.ranker", ranker, RANKERS)
        threshold = body.get("score_threshold", 0.0)
        threshold = as_number(threshold, f"{param}.score_threshold", minimum=0.0, maximum=1.0)
        weights = HybridWeights.parse(body.get("hybrid_search"), param=f"{param}.hybrid_search")
        return cls(ranker=ranker, score_threshold=threshold, hybrid_search=weights)


def parse_query(value: object, *, param: str = "query") -> list[str]:
    """``query``: a non-empty string or a non-empty array of up to :data:`MAX_QUERIES` non-empty strings."""
    queries = [value] if isinstance(value, str) else value
    if not isinstance(queries, list | tuple):
        raise wrong_type(param, "a string or an array of strings", value)
    if not queries:
        raise invalid(param, "expected at least one query, but got an empty array instead.")
    if len(queries) > MAX_QUERIES:
        raise invalid(param, f"expected at most {MAX_QUERIES} queries, but got {len(queries)} instead.")
    for i, query in enumerate(queries):
        where = param if isinstance(value, str) else f"{param}[{i}]"
        if not isinstance(query, str):
            raise wrong_type(where, "a string", query)
        if not query.strip():
            raise InvalidRequest(f"Invalid '{where}': expected a non-empty string.", param=where)
    return list(queries)


def parse_max_num_results(value: object, *, param: str = "max_num_results") -> int:
    """``max_num_results``: 1 to 50 (``None``: absent, 10)."""
    if value is None:
        return DEFAULT_MAX_NUM_RESULTS
    return as_int(value, param, minimum=1, maximum=MAX_NUM_RESULTS)


@dataclass(frozen=True, slots=True)
class Fused(Generic[K]):
    """One fused result: its normalised ``score`` in (0, 1] and its best 1-based rank among the dense and among the
    lexical rankings (None where it was in none of them)."""

    id: K
    score: float
    embedding_rank: int | None
    text_rank: int | None


def fuse(*, dense: Sequence[Sequence[K]], lexical: Sequence[Sequence[K]], weights: HybridWeights,
         k: int = RRF_K) -> list[Fused[K]]:
    """The fused ranking, best first (as the module docstring says). ``dense`` and ``lexical`` hold one ranking (ids,
    best first) per query string; an id repeated within a ranking counts once, at its first place (as if
    the repeats were not there). Equal scores are ordered by best rank, then by first appearance."""
    rankings = _weighted(dense, weights.embedding_weight, True) + _weighted(lexical, weights.text_weight, False)
    best_possible = sum(weight / (k + 1) for weight, _, _ in rankings)
    if best_possible <= 0:
        return []
    fused: dict[K, float] = {}
    ranks: dict[K, dict[bool, int]] = {}
    for weight, is_dense, ranking in rankings:
        for rank, chunk_id in enumerate(dict.fromkeys(ranking), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (k + rank)
            best = ranks.setdefault(chunk_id, {})
            best[is_dense] = min(best.get(is_dense, rank), rank)
    order = {chunk_id: i for i, chunk_id in enumerate(fused)}
    results = [Fused(id=c, score=min(1.0, v / best_possible), embedding_rank=ranks[c].get(True),
                     text_rank=ranks[c].get(False)) for c, v in fused.items()]
    results.sort(key=lambda r: (-r.score, min(ranks[r.id].values()), order[r.id]))
    return results


def _weighted(rankings: Sequence[Sequence[K]], weight: float, is_dense: bool
              ) -> list[tuple[float, bool, Sequence[K]]]:
    """Each ranking with its equal share of its kind's ``weight``; none when the weight is 0."""
    if weight <= 0 or not rankings:
        return []
    return [(weight / len(rankings), is_dense, ranking) for ranking in rankings]


def cut(results: Sequence[Fused[K]], *, score_threshold: float, max_num_results: int) -> list[Fused[K]]:
    """The results a search returns: those scoring at least ``score_threshold``, at most ``max_num_results``."""
    return [r for r in results if r.score >= score_threshold][:max_num_results]
