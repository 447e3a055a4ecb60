"""Known answers for MIG, SAP, DCI, FactorVAE and BetaVAE (djax.metrics.disentanglement)."""

import os

import numpy as np
import pytest

from djax.metrics import disentanglement as dm
from djax.metrics import gbt

N = 2000


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  f = {"a": rng.integers(0, 3, N), "b": rng.integers(0, 3, N), "c": rng.integers(0, 4, N),
       "d": rng.integers(0, 2, N)}
  a, b, c, d = (f[k].astype(float) for k in "abcd")
  codes = {
      "truth": np.stack([a, b, c, d], 1),
      # a monotone transform per factor, and the dimensions in another order
      "monotone": np.stack([np.exp(c), a ** 3 - 5, 2 * d + 7, -np.sqrt(b)], 1),
      "noise": rng.normal(size=(N, 4)),
      # a and b both in dimensions 0 and 1
      "mixed": np.stack([a + b, a - b, c, d], 1),
  }
  return f, codes


SMALL = dict(num_train=2000, num_eval=1000)  # FactorVAE / BetaVAE points: keeps tests fast


@pytest.fixture(scope="module")
def scores(data):
  f, codes = data
  out = {}
  for rep in ("truth", "monotone", "noise", "mixed"):
    dci = dm.dci(codes[rep], f)
    out[rep] = {
        "mig": dm.mig(codes[rep], f)["score"],
        "sap": dm.sap(codes[rep], f)["score"],
        "sap_continuous": dm.sap(codes[rep], f, continuous_factors=True)["score"],
        "dci_d": dci["disentanglement"], "dci_c": dci["completeness"],
        "dci_i": dci["informativeness_test"],
        "factor_vae": dm.factor_vae(codes[rep], f, **SMALL)["score"],
        "beta_vae": dm.beta_vae(codes[rep], f, **SMALL)["score"],
    }
  print("known-answer scores:", {r: {k: round(v, 4) for k, v in s.items()} for r, s in out.items()})
  return out


def test_ground_truth_and_monotone_transforms_score_near_maximum(scores):
  for rep in ("truth", "monotone"):
    s = scores[rep]
    assert s["mig"] > 0.97, (rep, s)
    assert s["dci_d"] > 0.97 and s["dci_c"] > 0.97 and s["dci_i"] == 1.0, (rep, s)
    assert s["factor_vae"] == 1.0 and s["beta_vae"] > 0.99, (rep, s)
  # Discrete SAP's maximum is the own dimension's accuracy minus chance-level accuracy of the
  # others (~0.5 for a binary factor; a 1-D one-vs-rest SVM cannot separate middle classes).
  assert scores["truth"]["sap"] > 0.35
  assert scores["truth"]["sap_continuous"] > 0.97  # R^2 own = 1, others ~0


def test_noise_scores_near_minimum(scores):
  s = scores["noise"]
  assert s["mig"] < 0.02 and s["sap"] < 0.03 and s["sap_continuous"] < 0.01, s
  assert s["dci_d"] < 0.1 and s["dci_c"] < 0.1, s
  assert s["dci_i"] < 0.45, s  # chance: mean of 1/3, 1/3, 1/4, 1/2 = 0.35
  assert s["factor_vae"] < 0.45 and s["beta_vae"] < 0.4, s  # chance 0.25


def test_mixing_two_factors_scores_clearly_lower(scores):
  t, m = scores["truth"], scores["mixed"]
  for k, margin in (("mig", 0.3), ("sap", 0.1), ("sap_continuous", 0.2), ("dci_d", 0.2),
                    ("dci_c", 0.2), ("factor_vae", 0.15), ("beta_vae", 0.1)):
    assert m[k] < t[k] - margin, (k, t[k], m[k])
  assert m["dci_i"] > 0.99  # still fully informative


@pytest.mark.parametrize("rep", ["noise", "mixed"])
def test_permuting_dimensions_changes_nothing(data, rep):
  f, codes = data
  perm = np.array([2, 0, 3, 1])
  x, xp = codes[rep], codes[rep][:, perm]
  assert dm.mig(xp, f)["score"] == pytest.approx(dm.mig(x, f)["score"], abs=1e-12)
  assert dm.sap(xp, f)["score"] == pytest.approx(dm.sap(x, f)["score"], abs=1e-12)
  # DCI: the same trees (the float32 histograms are summed sample by sample, in an order
  # that does not depend on the order of the features; only exactly equal gains of two
  # features would be broken differently).
  a, b = dm.dci(x, f), dm.dci(xp, f)
  for k in ("disentanglement", "completeness", "informativeness_test"):
    assert b[k] == pytest.approx(a[k], abs=1e-9), k
  np.testing.assert_allclose(b["importance"], a["importance"][perm], atol=1e-9)
  fv = dict(num_train=1000, num_eval=500)
  assert dm.factor_vae(xp, f, **fv)["score"] == dm.factor_vae(x, f, **fv)["score"]
  assert dm.beta_vae(xp, f, **fv)["score"] == pytest.approx(dm.beta_vae(x, f, **fv)["score"],
                                                            abs=0.01)


def test_deterministic_for_a_seed(data):
  f, codes = data
  x = codes["mixed"]
  for fn in (lambda s: dm.mig(x, f, seed=s, num_train=1500)["score"],
             lambda s: dm.sap(x, f, seed=s)["score"],
             lambda s: dm.factor_vae(x, f, seed=s, num_train=500, num_eval=500)["score"],
             lambda s: dm.beta_vae(x, f, seed=s, num_train=500, num_eval=500)["score"]):
    assert fn(3) == fn(3)


def test_mutual_info_and_entropy_match_sklearn():
  from sklearn.metrics import mutual_info_score
  rng = np.random.default_rng(1)
  a = rng.integers(0, 5, (500, 3))
  b = np.stack([a[:, 0] // 2, rng.integers(0, 3, 500)], 1)
  m = dm.discrete_mutual_info(a, b)
  for i in range(3):
    for j in range(2):
      assert m[i, j] == pytest.approx(mutual_info_score(a[:, i], b[:, j]), abs=1e-12)
  assert dm.discrete_entropy(b)[1] == pytest.approx(mutual_info_score(b[:, 1], b[:, 1]))


def _direct_mig(codes, factors):
  """disentanglement_lib's compute_mig written out: 20 equal-width bins per dimension,
  plug-in mutual information and entropy from counts, gap of the two largest / entropy."""
  n, d = codes.shape
  disc = [np.digitize(codes[:, i], np.histogram(codes[:, i], 20)[1][:-1]) for i in range(d)]
  out = {}
  for name, y in factors.items():
    def joint_entropy(a, b):
      _, counts = np.unique(np.stack([a, b]), axis=1, return_counts=True)
      p = counts / n
      return -np.sum(p * np.log(p))
    h = joint_entropy(y, y)
    mi = sorted(joint_entropy(a, a) + h - joint_entropy(a, y) for a in disc)[::-1]
    out[name] = (mi[0] - mi[1]) / h if h > 0 else np.nan
  return out


def test_mig_matches_direct_computation_and_leaves_out_a_constant_factor():
  rng = np.random.default_rng(4)
  n = 1500
  f = {"a": rng.integers(0, 4, n), "const": np.full(n, 7), "b": rng.integers(0, 3, n)}
  codes = np.stack([f["a"] + 0.3 * rng.normal(size=n), f["b"] + f["a"] * 0.2 +
                    0.5 * rng.normal(size=n), rng.normal(size=n)], 1)
  ref = _direct_mig(codes, f)
  with pytest.warns(RuntimeWarning, match="'const'"):
    res = dm.mig(codes, f)
  assert np.isnan(res["per_factor"]["const"]) and res["undefined"] == ["const"]
  for k in ("a", "b"):
    assert res["per_factor"][k] == pytest.approx(ref[k], abs=1e-12)
  assert 0.1 < ref["b"] < ref["a"] < 0.9  # neither trivial
  # the mean of the defined factors, not a 0 for the constant one averaged in
  assert res["score"] == pytest.approx((ref["a"] + ref["b"]) / 2, abs=1e-12)
  with pytest.warns(RuntimeWarning):
    assert np.isnan(dm.mig(codes, {"const": f["const"]})["score"])


def test_histogram_discretize_matches_reference_formula():
  x = np.random.default_rng(2).normal(size=(300, 2))
  ref = np.digitize(x[:, 1], np.histogram(x[:, 1], 20)[1][:-1])
  np.testing.assert_array_equal(dm.histogram_discretize(x)[:, 1], ref)


@pytest.mark.parametrize("k", [2, 4])
def test_sap_svm_matches_sklearn_linear_svc(k):
  from sklearn.svm import LinearSVC
  rng = np.random.default_rng(k)
  y = rng.integers(0, k, 400)
  y[:3] = 0  # unbalanced a little
  x = np.stack([y + rng.normal(0, 0.8, 400), rng.normal(size=400) * 3, 0.1 * y ** 2 +
                rng.normal(0, 0.3, 400)], 1)
  xt = rng.normal(size=(200, 3)) * 2 + 1
  ours = dm.linear_svc_predict(x, y, xt)
  for d in range(3):
    ref = LinearSVC(C=0.01, class_weight="balanced").fit(x[:, [d]], y).predict(xt[:, [d]])
    assert np.mean(ours[:, d] == ref) >= 0.99, d


def test_gbt_matches_sklearn_gradient_boosting():
  from sklearn.ensemble import GradientBoostingClassifier
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 4))
  ys = [(x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int),
        np.digitize(x[:, 1] + 0.5 * x[:, 2], [-1, 0, 1])]
  res = gbt.fit_gbt(x, ys, x, ys)
  for j, y in enumerate(ys):
    ref = GradientBoostingClassifier(random_state=0).fit(x, y)
    np.testing.assert_allclose(res.importances[:, j], ref.feature_importances_, atol=0.02)
    assert res.train_accuracy[j] == pytest.approx(ref.score(x, y), abs=0.01)


def _dci_scores(importance, train_accuracy, test_accuracy):
  d, c, _, _ = dm.dci_from_importance(importance)
  return np.array([d, c, np.mean(train_accuracy), np.mean(test_accuracy)])


def test_dci_matches_sklearn_on_noisy_entangled_codes():
  """disentanglement_lib's DCI is sklearn's GradientBoostingClassifier() per factor: on
  noisy, partly entangled codes with 3-8 classes D, C and I agree to 0.01 (the 16-bin
  search of djax's version 1 was several times that low here)."""
  from sklearn.ensemble import GradientBoostingClassifier
  rng = np.random.default_rng(0)
  n, ks = 900, (3, 5, 8)
  ys = [rng.integers(0, k, n) for k in ks]
  x = rng.normal(size=(n, 8))
  for j, (y, k) in enumerate(zip(ys, ks)):
    x[:, j] = y / k + 0.12 * rng.normal(size=n)
  x[:, 3] += 0.5 * x[:, 0]
  tr, te = slice(0, 600), slice(600, None)
  imp, acc_tr, acc_te = [], [], []
  for y in ys:
    ref = GradientBoostingClassifier(random_state=0).fit(x[tr], y[tr])
    imp.append(ref.feature_importances_)
    acc_tr.append(ref.score(x[tr], y[tr]))
    acc_te.append(ref.score(x[te], y[te]))
  want = _dci_scores(np.stack(imp, 1), acc_tr, acc_te)
  res = gbt.fit_gbt(x[tr], [y[tr] for y in ys], x[te], [y[te] for y in ys])
  got = _dci_scores(res.importances, res.train_accuracy, res.test_accuracy)
  assert 0.5 < want[0] < 0.8 and 0.55 < want[3] < 0.8, want  # neither trivial
  np.testing.assert_allclose(got, want, atol=0.01, err_msg="D, C, I_train, I_test")


def test_gbt_exact_search_prunes_without_changing_the_trees():
  """Bins only speed the search up: with 8 bins (most thresholds inside bins, found only
  where a bin's bound says they could win) the trees are those of a search over every
  threshold (as many bins as values), up to float32 rounding."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 6))
  ys = [np.digitize(x[:, 0] + 0.5 * rng.normal(size=400), [-1, 0, 1]),
        (x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=400) > 0).astype(int),
        rng.integers(0, 4, 400)]
  args = (x[:300], [y[:300] for y in ys], x[300:], [y[300:] for y in ys])
  pruned = gbt.fit_gbt(*args, max_bins=8, n_estimators=30)
  full = gbt.fit_gbt(*args, max_bins=1000, n_estimators=30)
  np.testing.assert_allclose(pruned.importances, full.importances, atol=1e-5)
  np.testing.assert_array_equal(pruned.train_accuracy, full.train_accuracy)
  np.testing.assert_array_equal(pruned.test_accuracy, full.test_accuracy)
  edges_only = gbt.fit_gbt(*args, max_bins=8, n_estimators=30, exact=False)
  assert np.abs(edges_only.importances - full.importances).max() > 0.01


def test_gbt_draws_among_tied_dimensions():
  """Two identical code dimensions make every split twice with the same gain; sklearn's
  random feature order shares the importance between them, where always taking the lower
  index (djax version 1) gave it all to the first."""
  rng = np.random.default_rng(2)
  z = rng.normal(size=600)
  x = np.stack([z, z, rng.normal(size=600)], 1)
  y = np.digitize(z + 0.3 * rng.normal(size=600), [-0.5, 0.5])
  imp = gbt.fit_gbt(x, [y], x, [y], n_estimators=30).importances[:, 0]
  assert imp[:2].sum() > 0.9
  assert 0.3 < imp[0] / imp[:2].sum() < 0.7, imp


def test_gbt_sparse_histograms_and_threads(monkeypatch):
  """The sparse one-hot product is the per-(feature, bin) histogram, and splitting its
  columns over threads changes no result."""
  rng = np.random.default_rng(3)
  b = rng.integers(0, 5, (200, 3)).astype(np.uint8)
  w = rng.normal(size=(200, 4)).astype(np.float32)
  ref = np.zeros((3, 5, 4))
  for dim in range(3):
    np.add.at(ref[dim], b[:, dim], w)
  got = np.asarray(gbt._onehot_bins(b, 5) @ w).reshape(3, 5, 4)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)

  x = rng.normal(size=(400, 6))
  ys = [(x[:, 0] > 0).astype(int), np.digitize(x[:, 1] + x[:, 2], [-1, 0, 1]), rng.integers(0, 5, 400)]
  args = (x[:300], [y[:300] for y in ys], x[300:], [y[300:] for y in ys])
  monkeypatch.setattr(gbt, "_MIN_THREADED_WORK", 0)
  monkeypatch.setattr(gbt, "_n_threads", lambda: 1)
  one = gbt.fit_gbt(*args, n_estimators=20)
  monkeypatch.setattr(gbt, "_n_threads", lambda: 3)
  three = gbt.fit_gbt(*args, n_estimators=20)
  np.testing.assert_array_equal(one.importances, three.importances)
  np.testing.assert_array_equal(one.test_accuracy, three.test_accuracy)
  from djax.metrics import _threads
  assert _threads.n_threads(1) == 1 and 1 <= _threads.n_threads(64) <= (os.cpu_count() or 1)


def test_dci_from_importance_extremes():
  d, c, _, _ = dm.dci_from_importance(np.eye(3))
  assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
  d, c, _, _ = dm.dci_from_importance(np.ones((3, 3)))
  assert d == pytest.approx(0.0, abs=1e-6) and c == pytest.approx(0.0, abs=1e-6)


def test_sampling_with_a_fixed_factor_on_a_non_factorial_dataset():
  """Every sampled example shares the fixed factor's value, even where the dataset has no
  example for the other factors' combination (sprites-like: appearance fixed per character)."""
  rng = np.random.default_rng(0)
  char = np.repeat(np.arange(10), 4)
  ys = np.stack([char % 3, char % 2, np.tile(np.arange(4), 10)])
  idx = dm._FactorIndex(ys)
  factor = rng.integers(0, 3, 200)
  first = rng.integers(0, 40, 200)
  batch = idx.same_value(factor, first, (200, 16), rng)
  assert np.all(ys[factor[:, None], batch] == ys[factor, first][:, None])


def test_beta_vae_does_not_depend_on_the_codes_scale():
  """Standardised features: a code and the same code x100 (or + an offset) score the same
  (raw features leave lbfgs unconverged at large scales and change the score)."""
  rng = np.random.default_rng(3)
  f = {"a": rng.integers(0, 4, 3000), "b": rng.integers(0, 3, 3000)}
  codes = np.stack([f["a"] + 0.3 * rng.normal(size=3000), f["b"] + 0.3 * rng.normal(size=3000),
                    rng.normal(size=3000)], axis=1)
  kw = dict(num_train=600, num_eval=300, batch_size=16, seed=0)
  base = dm.beta_vae(codes, f, **kw)["score"]
  assert base > 0.9
  assert dm.beta_vae(100.0 * codes + 5.0, f, **kw)["score"] == pytest.approx(base, abs=1e-9)
