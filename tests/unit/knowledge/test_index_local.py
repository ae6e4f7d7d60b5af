"""The embedded index adapters: exact answers against brute force, filtered search, deletions, HNSW recall."""

from __future__ import annotations

import numpy as np
import pytest

from tenantlm.knowledge.index.local import ExactIndex, HnswIndex, IndexPolicy, kind_for, new_index

KINDS = ["exact", "hnsw"]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int,
                allowed: set[int] | None = None) -> list[tuple[int, float]]:
    scores = unit(vectors) @ unit(query)
    order = [i for i in np.argsort(-scores) if allowed is None or int(ids[i]) in allowed]
    return [(int(ids[i]), float(scores[i])) for i in order[:k]]


def assert_same_hits(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def clustered(n: int, dim: int = 384, *, seed: int = 0) -> np.ndarray:
    """Vectors with the shape of text embeddings: a mixture of clusters in a 32-d latent space, projected into
    ``dim`` dimensions, plus isotropic noise (uniform random vectors are HNSW's worst case, unlike real data)."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((32, dim)).astype(np.float32)
    centres = 2.0 * rng.standard_normal((max(8, n // 100), 32)).astype(np.float32)
    latent = centres[rng.integers(len(centres), size=n)] + rng.standard_normal((n, 32)).astype(np.float32)
    noise = 4.0 * rng.standard_normal((n, dim)).astype(np.float32)
    return unit(latent @ projection + noise).astype(np.float32)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    ids = rng.choice(2**62, size=1500, replace=False).astype(np.int64)  # large, unordered ids come back exactly
    return ids, rng.standard_normal((1500, 24)).astype(np.float32), rng.standard_normal((20, 24)).astype(np.float32)


# a small graph-search window and candidate cap, so the selective-filter path is taken on small data
POLICY = IndexPolicy(ann_candidates_max=256, subset_exact_max=64, build_threads=1)


def test_exact_search_equals_brute_force(data):
    ids, vectors, queries = data
    index = new_index(ids, vectors, policy=POLICY, kind="exact")
    for q in queries:
        assert_same_hits(index.search(q, 10), brute_force(ids, vectors, q, 10))
    assert index.search(queries[0], 5000) == index.search(queries[0], len(ids))
    assert len(index.search(queries[0], 5000)) == len(ids)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [0.005, 0.02, 0.3, 1.0])
@pytest.mark.parametrize("form", ["predicate", "set"])
def test_filtered_search_returns_the_top_k_among_allowed_ids(data, kind, fraction, form):
    ids, vectors, queries = data
    index = new_index(ids, vectors, policy=POLICY, kind=kind)
    rng = np.random.default_rng(1)
    allowed = {int(i) for i in rng.choice(ids, size=max(1, int(fraction * len(ids))), replace=False)}
    matched = total = 0
    for q in queries:
        got = index.search(q, 10, allowed=allowed if form == "set" else (lambda i: i in allowed))
        want = brute_force(ids, vectors, q, 10, allowed)
        assert {i for i, _ in got} <= allowed
        assert len(got) == len(want)
        if kind == "exact" or len(allowed) <= POLICY.subset_exact_max or fraction <= 0.02:
            assert_same_hits(got, want)  # exact: the exact adapter, a small set, a selective predicate
        matched += len({i for i, _ in got} & {i for i, _ in want})
        total += len(want)
    assert matched / total >= 0.95  # a broad filter on the graph: its recall


@pytest.mark.parametrize("kind", KINDS)
def test_filter_allowing_nothing_or_unknown_ids_returns_nothing(data, kind):
    ids, vectors, queries = data
    index = new_index(ids, vectors, policy=POLICY, kind=kind)
    assert index.search(queries[0], 10, allowed=lambda _i: False) == []
    assert index.search(queries[0], 10, allowed={1, 2, 3}) == []


@pytest.mark.parametrize("kind", KINDS)
def test_removed_ids_leave_results_at_once_and_readding_replaces(data, kind):
    ids, vectors, queries = data
    index = new_index(ids, vectors, policy=POLICY, kind=kind)
    q = queries[0]
    top = [i for i, _ in index.search(q, 5)]
    assert index.remove([top[0], top[1], 12345]) == 2
    assert len(index) == len(ids) - 2
    after = [i for i, _ in index.search(q, 20)]
    assert top[0] not in after and top[1] not in after
    assert top[0] not in {i for i, _ in index.search(q, 10, allowed={top[0], top[2]})}
    index.add([top[0]], -q[None, :])  # re-added with the opposite vector: now the farthest
    assert len(index) == len(ids) - 1
    assert index.search(-q, 1)[0][0] == top[0]
    assert index.search(-q, 1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_exact_index_stays_correct_through_compaction(data):
    ids, vectors, queries = data
    index = ExactIndex(policy=POLICY)
    index.add(ids, vectors)
    gone = ids[: len(ids) - 300]
    index.remove(gone.tolist())  # more than half removed: rows are compacted
    kept = ids[len(ids) - 300:]
    for q in queries[:5]:
        assert_same_hits(index.search(q, 10), brute_force(kept, vectors[len(ids) - 300:], q, 10))
    snap_ids, snap_vectors = index.snapshot()
    assert sorted(snap_ids.tolist()) == sorted(kept.tolist())
    assert snap_vectors.shape == (300, 24)


def test_hnsw_snapshot_holds_the_live_vectors(data):
    ids, vectors, _ = data
    index = HnswIndex(policy=POLICY)
    index.add(ids, vectors)
    index.remove(ids[:10].tolist())
    snap_ids, snap_vectors = index.snapshot()
    assert sorted(snap_ids.tolist()) == sorted(ids[10:].tolist())
    position = {int(i): n for n, i in enumerate(ids)}
    expected = unit(vectors[[position[int(i)] for i in snap_ids]])
    assert np.allclose(snap_vectors, expected, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_batches_are_refused(kind):
    index = new_index([1, 2], np.ones((2, 4), dtype=np.float32), policy=POLICY, kind=kind)
    with pytest.raises(ValueError, match="4 dimensions"):
        index.add([3], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="distinct"):
        index.add([3, 3], np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        index.add([-1], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        index.add([3], np.full((1, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="4 dimensions"):
        index.search(np.ones(3, dtype=np.float32), 1)
    assert len(index) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_empty_index_answers_nothing_and_takes_its_dimension_from_the_first_vectors(kind):
    index = new_index([], np.empty((0,), dtype=np.float32), policy=POLICY, kind=kind)
    assert len(index) == 0 and index.dim is None
    assert index.search(np.ones(4, dtype=np.float32), 3) == []
    index.add([5], np.ones((1, 4), dtype=np.float32))
    assert index.dim == 4
    assert index.search(np.ones(4, dtype=np.float32), 3) == [(5, pytest.approx(1.0))]


def test_kind_is_chosen_by_size_with_hysteresis():
    policy = IndexPolicy(exact_max=1000)
    assert kind_for(1000, policy) == "exact"
    assert kind_for(1001, policy) == "hnsw"
    assert kind_for(600, policy, "hnsw") == "hnsw"  # kept until half the threshold
    assert kind_for(500, policy, "hnsw") == "exact"
    assert new_index(np.arange(1001), np.ones((1001, 4), dtype=np.float32), policy=policy).kind == "hnsw"
    assert new_index(np.arange(1000), np.ones((1000, 4), dtype=np.float32), policy=policy).kind == "exact"


@pytest.mark.slow
def test_hnsw_recall_at_10_on_clustered_20k_vectors_is_at_least_095():
    vectors = clustered(20_100, seed=3)
    corpus, queries = vectors[:20_000], vectors[20_000:]
    ids = np.arange(len(corpus), dtype=np.int64)
    index = HnswIndex(policy=IndexPolicy())
    index.add(ids, corpus)
    truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    found = [len({i for i, _ in index.search(q, 10)} & set(t.tolist())) for q, t in zip(queries, truth, strict=True)]
    assert sum(found) / (10 * len(queries)) >= 0.95
