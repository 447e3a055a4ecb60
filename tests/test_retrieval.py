"""Tests for djax.metrics.retrieval (Hu et al. 2018 retrieval mAP)."""

import itertools
import time
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from djax.metrics import retrieval
from djax.metrics.retrieval import (
    average_precision_per_query,
    chance_map,
    chunk_attribute_map,
    expected_random_ap,
    format_map_table,
    retrieval_map,
)


def _brute_force_ap(codes, labels):
    """AP straight from the definition, with exact float64 distances."""
    codes = np.asarray(codes, dtype=np.float64).reshape(len(labels), -1)
    out = []
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        d = np.sqrt(((codes[others] - codes[i]) ** 2).sum(axis=1))
        rel = labels[others] == labels[i]
        if not rel.any():
            out.append(np.nan)
            continue
        prec = [np.sum(rel & (d <= d[j])) / np.sum(d <= d[j]) for j in np.flatnonzero(rel)]
        out.append(np.mean(prec))
    return np.array(out)


def _sklearn_ap(codes, labels):
    codes = np.asarray(codes, dtype=np.float64).reshape(len(labels), -1)
    out = []
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        d = np.sqrt(((codes[others] - codes[i]) ** 2).sum(axis=1))
        rel = labels[others] == labels[i]
        out.append(average_precision_score(rel, -d) if rel.any() else np.nan)
    return np.array(out)


def _ap_of_positions(positions, m):
    """AP of a ranking of m items whose relevant ones sit at 0-based positions."""
    positions = sorted(positions)
    return sum(Fraction(k + 1, p + 1) for k, p in enumerate(positions)) / len(positions)


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 70))
    codes = rng.standard_normal((n, int(rng.integers(1, 6))))
    labels = rng.integers(0, int(rng.integers(2, 6)), n)
    ap = average_precision_per_query(codes, labels, block_size=int(rng.integers(1, 20)))
    np.testing.assert_allclose(ap, _sklearn_ap(codes, labels), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ap, _brute_force_ap(codes, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ties_are_one_threshold_like_sklearn(seed):
    # Small integer codes: many exact distance ties, including duplicates.
    rng = np.random.default_rng(100 + seed)
    n = 60
    codes = rng.integers(-1, 2, (n, 2)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    ap = average_precision_per_query(codes, labels, block_size=16)
    np.testing.assert_allclose(ap, _sklearn_ap(codes, labels), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ap, _brute_force_ap(codes, labels), rtol=0, atol=1e-12)


def test_duplicate_float_codes_tie():
    # Exact duplicates must tie even though |q|^2 + |x|^2 - 2 q.x is not
    # exactly 0 for generic floats; sklearn sees exact distances.
    rng = np.random.default_rng(11)
    base = 3 * rng.standard_normal((40, 6)) + 1.7
    codes = np.repeat(base, 3, axis=0)[rng.permutation(120)]
    labels = rng.integers(0, 3, 120)
    ap = average_precision_per_query(codes, labels, block_size=50)
    np.testing.assert_allclose(ap, _sklearn_ap(codes, labels), rtol=0, atol=1e-12)


def test_collapsed_codes_score_relevant_fraction():
    # Everything tied: one threshold, precision R/M for every relevant item.
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    ap = average_precision_per_query(np.zeros((9, 3)), labels)
    n_rel = np.bincount(labels)[labels] - 1
    np.testing.assert_allclose(ap, n_rel / 8)


def test_perfect_codes_give_map_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 500)
    assert retrieval_map(np.eye(5)[labels], labels) == 1.0
    noisy = labels[:, None] * 1.0 + 1e-3 * rng.standard_normal((500, 1))
    assert retrieval_map(noisy, labels) == 1.0
    assert retrieval_map(labels.astype(float), labels, block_size=33) == 1.0


def test_random_codes_close_to_chance():
    # Over 30 seeds at this size, retrieval_map - chance_map had mean -7e-5 and
    # std 6e-4 (the per-query APs share one random geometry, so they are not
    # independent); 5e-3 is ~8 sigma.
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((1000, 8))
    labels = rng.integers(0, 4, 1000)
    assert abs(retrieval_map(codes, labels) - chance_map(labels)) < 5e-3


@pytest.mark.parametrize("k", [2, 4, 10])
def test_chance_map_uniform_labels(k):
    n = 1000
    labels = np.repeat(np.arange(k), n // k)
    exact = chance_map(labels)
    approx = chance_map(labels, exact=False)
    assert approx == pytest.approx((n // k - 1) / (n - 1))
    # The exact value exceeds the relevant fraction by < ln(M)/M.
    assert 0 < exact - approx < np.log(n - 1) / (n - 1)
    assert exact == pytest.approx(1 / k, abs=0.01)


@pytest.mark.parametrize("m", range(1, 9))
def test_exact_chance_formula_by_enumeration(m):
    for r in range(1, m + 1):
        aps = [_ap_of_positions(pos, m) for pos in itertools.combinations(range(m), r)]
        expected = sum(aps) / len(aps)
        assert float(expected_random_ap(r, m)) == pytest.approx(float(expected), rel=0, abs=1e-12)


def test_exact_chance_formula_monte_carlo():
    rng = np.random.default_rng(0)
    m, r, trials = 200, 13, 20000
    relevant = np.zeros(m, dtype=bool)
    relevant[:r] = True
    aps = np.empty(trials)
    for t in range(trials):
        perm = relevant[rng.permutation(m)]
        pos = np.flatnonzero(perm)
        aps[t] = np.mean(np.arange(1, r + 1) / (pos + 1))
    sem = aps.std() / np.sqrt(trials)
    assert abs(aps.mean() - float(expected_random_ap(r, m))) < 4 * sem
    # The plain relevant fraction is measurably too low at this size.
    assert aps.mean() - r / m > 10 * sem


def test_chance_map_matches_empirical_random_rankings():
    # chance_map is the expectation of retrieval_map under random codes with
    # no ties; average many 1-D random codings to check the bookkeeping
    # (excluding self, per-query R, singleton classes skipped).
    rng = np.random.default_rng(3)
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3])
    maps = [retrieval_map(rng.random(len(labels)), labels) for _ in range(3000)]
    sem = np.std(maps) / np.sqrt(len(maps))
    assert abs(np.mean(maps) - chance_map(labels)) < 4 * sem


def test_singleton_classes_are_skipped():
    labels = np.array([0, 0, 1, 2, 2, 2])
    codes = np.arange(6.0)
    ap = average_precision_per_query(codes, labels)
    assert np.isnan(ap[2]) and not np.isnan(ap[[0, 1, 3, 4, 5]]).any()
    assert retrieval_map(codes, labels) == pytest.approx(np.nanmean(ap))
    n_rel = np.array([1, 1, 2, 2, 2])
    assert chance_map(labels) == pytest.approx(np.mean(expected_random_ap(n_rel, 5)))
    assert np.isnan(chance_map(np.arange(4)))


def test_invariant_to_database_order():
    rng = np.random.default_rng(5)
    n = 300
    for codes in (rng.standard_normal((n, 3)), rng.integers(0, 3, (n, 2)).astype(float)):
        labels = rng.integers(0, 4, n)
        ap = average_precision_per_query(codes, labels)
        perm = rng.permutation(n)
        ap_perm = average_precision_per_query(codes[perm], labels[perm])
        np.testing.assert_allclose(ap_perm, ap[perm], rtol=0, atol=1e-12)


def test_block_size_does_not_change_results():
    rng = np.random.default_rng(6)
    codes = rng.standard_normal((257, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 257)
    ref = average_precision_per_query(codes, labels, block_size=257)
    for bs in (1, 7, 64, 1000, None):
        np.testing.assert_allclose(
            average_precision_per_query(codes, labels, block_size=bs), ref, rtol=0, atol=1e-12
        )


def test_label_types_and_validation():
    codes = np.arange(6.0)[:, None]
    ints = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        average_precision_per_query(codes, np.array(list("aaabbb"))),
        average_precision_per_query(codes, ints),
    )
    with pytest.raises(ValueError):
        average_precision_per_query(np.array([[0.0], [np.nan]]), np.array([0, 0]))
    with pytest.raises(ValueError):
        average_precision_per_query(codes, ints[:5])
    with pytest.raises(ValueError):
        chunk_attribute_map(np.zeros((6, 5)), {"a": ints}, n_chunks=2)


def test_chunk_attribute_map_picks_encoding_chunk():
    rng = np.random.default_rng(7)
    n, d = 600, 4
    a = rng.integers(0, 3, n)
    b = rng.integers(0, 5, n)
    noise = 0.3 * rng.standard_normal((n, 3, d))
    features = noise.copy()
    features[:, 1, :3] += 2 * np.eye(3)[a]  # chunk 1 encodes a
    features[:, 2, :] += 2 * np.eye(5)[b][:, :4]  # chunk 2 encodes b (class 4 = origin)
    features = features.reshape(n, 3 * d)

    res = chunk_attribute_map(features, {"a": a, "b": b}, n_chunks=3)
    assert res["attributes"] == ["a", "b"]
    assert res["map"].shape == (3, 2)
    assert res["best_chunk"] == {"a": 1, "b": 2}
    assert res["best_map"]["a"] > 0.95 and res["best_map"]["b"] > 0.95
    # Chunk 0 is pure noise: near chance for both attributes.
    for j, k in enumerate(["a", "b"]):
        assert abs(res["map"][0, j] - res["chance"][k]) < 0.02
        assert res["chance"][k] == pytest.approx(chance_map({"a": a, "b": b}[k]))
    np.testing.assert_allclose(res["map"][1, 0], retrieval_map(features[:, d:2 * d], a))
    np.testing.assert_allclose(res["chunk_average"], res["map"].mean(axis=1))
    assert res["best_average"] == pytest.approx(np.mean(list(res["best_map"].values())))

    table = format_map_table(res)
    lines = table.splitlines()
    assert lines[0].split() == ["a", "b", "average"]
    body = [ln.split()[0] for ln in lines if not ln.startswith("-")][1:]
    assert body == ["chunk", "chunk", "chunk", "best", "random"]
    assert "[1]" in table and "[2]" in table


def _slow_numpy_ap(codes, labels):
    """Direct per-query numpy reference: float32-rounded squared distances (the documented
    tie rule), the query left out, ties ranked together, AP = mean precision at the
    relevant items' distances."""
    codes = np.asarray(codes, dtype=np.float64)
    sq = np.einsum("ij,ij->i", codes, codes)
    out = np.full(len(labels), np.nan)
    for i in range(len(labels)):
        d = np.maximum(sq[i] + sq - 2.0 * codes @ codes[i], 0.0).astype(np.float32)
        others = np.arange(len(labels)) != i
        d, rel = d[others], labels[others] == labels[i]
        if rel.any():
            out[i] = np.mean([np.sum(rel & (d <= t)) / np.sum(d <= t) for t in d[rel]])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_fast_multi_labeling_path_matches_slow_reference(seed, monkeypatch):
    # Many labelings share one sort (relevance bits in the key): more than 8 (several bytes)
    # and more than 33 (several sorts), with few-class and many-class labels and singleton
    # classes; small integer codes (mostly ties: summed per tie group) or generic codes with
    # a few duplicates (sparse tie corrections).  Forced onto the threaded path with small
    # blocks, relevance from class masks (few classes) or comparisons (many), once with
    # 16-bit and once with 32-bit count lanes.
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(40, 90))
    codes = rng.integers(-2, 3, (n, int(rng.integers(1, 4)))).astype(float)
    if seed == 2:  # generic distances, with a few exact duplicates: sparse ties
        codes = codes + 0.5 * rng.standard_normal(codes.shape)
        codes[rng.choice(n, n // 10, replace=False)] = codes[rng.choice(n, n // 10, replace=False)]
    factors = {f"f{j}": rng.integers(0, int(rng.integers(2, n // 2)), n) for j in range(41)}
    ref = np.stack([_slow_numpy_ap(codes, v) for v in factors.values()], 1)
    monkeypatch.setattr(retrieval, "_MIN_THREADED_ELEMENTS", 0)
    monkeypatch.setattr(retrieval, "_n_threads", lambda: 3)
    monkeypatch.setattr(retrieval, "_SUB_BLOCK_ELEMENTS", 7 * n)
    monkeypatch.setattr(retrieval, "_MAX_MASK_BYTES", 10 * n)  # many-class labels: compare
    for lane16_max in (1 << 16, 0):
        monkeypatch.setattr(retrieval, "_LANE16_MAX_ITEMS", lane16_max)
        ids = [retrieval._as_label_ids(v) for v in factors.values()]
        ap = retrieval._ap_multi(codes, ids, block_size=int(rng.integers(10, 40)))
        np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)
        res = retrieval.factor_map(codes, factors)
        np.testing.assert_allclose(list(res["map"].values()), np.nanmean(ref, 0), rtol=0, atol=1e-12)
    for j in (0, 9, 40):  # one labeling alone = the same column of the joint run
        np.testing.assert_allclose(average_precision_per_query(codes, factors[f"f{j}"]), ref[:, j],
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims", [64, 3])
def test_narrow_and_wide_distance_ranges_match_slow_reference(dims):
    # 64-d Gaussian codes: a block's distances span < 2^25 float32 bit patterns, so the keys
    # are uint32; 3-d codes: wider, uint64 keys.
    rng = np.random.default_rng(dims)
    n = 150
    codes = rng.standard_normal((n, dims))
    factors = {f"f{j}": rng.integers(0, k, n) for j, k in enumerate([2, 3, 5, 16, 2, 40, 4])}
    res = average_precision_per_query(codes, factors["f3"], block_size=40)
    np.testing.assert_allclose(res, _slow_numpy_ap(codes, factors["f3"]), rtol=0, atol=1e-12)
    maps = list(retrieval.factor_map(codes, factors, block_size=40)["map"].values())
    ref = [np.nanmean(_slow_numpy_ap(codes, v)) for v in factors.values()]
    np.testing.assert_allclose(maps, ref, rtol=0, atol=1e-12)


def test_fast_path_large_n_matches_slow_reference(monkeypatch):
    # Default blocking (several blocks of 2^18 // N queries), two threads (used by default
    # only where the machine has idle cores), ties everywhere (many equal distances).
    monkeypatch.setattr(retrieval, "_n_threads", lambda: 2)
    rng = np.random.default_rng(9)
    n = 2100
    codes = rng.integers(0, 4, (n, 2)) + 0.01 * rng.integers(0, 3, (n, 2))
    labels = {"a": rng.integers(0, 2, n), "b": rng.integers(0, 7, n)}
    idx = rng.choice(n, 60, replace=False)
    ap = retrieval._ap_multi(codes, [retrieval._as_label_ids(v) for v in labels.values()], None)
    for j, v in enumerate(labels.values()):
        sq = np.einsum("ij,ij->i", codes, codes)
        for i in idx:
            d = np.maximum(sq[i] + sq - 2.0 * codes @ codes[i], 0.0).astype(np.float32)
            others = np.arange(n) != i
            d, rel = d[others], v[others] == v[i]
            # precision at t = (relevant at distance <= t) / (all at distance <= t)
            t = d[rel]
            prec = (np.searchsorted(np.sort(t), t, "right")
                    / np.searchsorted(np.sort(d), t, "right"))
            assert ap[i, j] == pytest.approx(prec.mean(), abs=1e-12)


def _time_map(n, d=64, n_classes=10):
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    wall, cpu = time.perf_counter(), time.process_time()
    value = retrieval_map(codes, labels)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    chance = chance_map(labels)
    print(f"\nretrieval_map N={n} D={d}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"mAP={value:.4f}, chance={chance:.4f}")
    return value, chance


def test_timing_small():
    # Work grows as N^2 log N; N=4000 is ~1/30 of N=20,000.
    value, chance = _time_map(4000)
    assert abs(value - chance) < 0.01  # random codes rank at random


def test_timing_10k():
    # N=10,000 (~1/5 of N=20,000's work, a few seconds): blocks of 2**18 // N = 26 queries;
    # `python tests/test_retrieval.py` times N=20,000.
    value, chance = _time_map(10000)
    assert abs(value - chance) < 0.005


if __name__ == "__main__":
    _time_map(20000)


def test_a_large_shared_offset_changes_nothing():
    """Codes sharing an offset 1e8 times their spread: the expansion |q|^2 + |x|^2 - 2 q.x
    of raw codes cancels to rounding noise; centred first, the ranking is that of exact
    float64 distances (the brute force subtracts the codes directly)."""
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 3, n)
    z = rng.standard_normal((n, 4)) + 0.7 * labels[:, None]  # overlapping clusters
    codes = 1e8 + z
    ap = average_precision_per_query(codes, labels)
    ref = _brute_force_ap(codes, labels)
    # (float32-rounded distances: pairs agreeing to ~6e-8 tie, see the module docstring)
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-4)
    assert np.mean(ap) == pytest.approx(np.mean(ref), abs=1e-6)
    assert 0.45 < np.mean(ap) < 0.9  # neither chance (~1/3) nor perfect
    assert retrieval_map(codes, labels) == pytest.approx(retrieval_map(codes - 1e8, labels),
                                                         abs=1e-12)
