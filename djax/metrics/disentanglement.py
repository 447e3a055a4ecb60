"""Standard disentanglement scores on datasets with ground-truth factors.

Definitions follow disentanglement_lib (Locatello et al., "Challenging common assumptions in
the unsupervised learning of disentangled representations", ICML 2019), module by module
(``evaluation/metrics/{beta_vae,factor_vae,mig,sap_score,dci}.py``) with the parameter values
of its published study configs (``config/unsupervised_study_v1/metric_configs/*.gin``), given
in each function's docstring.

**Finite datasets.**  disentanglement_lib draws factors from a generator and renders them.
Here a representation is given as precomputed ``codes [N, D]`` of a labelled dataset with
discrete ``factors`` (name -> ``[N]`` values), so every metric stays a pure function of arrays:

* "sample an observation" = pick a uniformly random example (with replacement);
* "sample observations whose factor k equals v" = pick uniformly among the examples whose
  factor k equals v.  On a full-factorial dataset (dSprites, 3D Shapes) this *is*
  disentanglement_lib's sampling.  On datasets that are not full factorial (sprites/small:
  100 test characters x 16 poses; a character fixes all appearance factors at once) the other
  factors are not independent of the fixed one, and no example may exist for a drawn
  combination: we never look for exact combinations, only for examples sharing the fixed
  value, which always exist (the fixed value is read off a real example);
* metrics that fit a predictor (SAP, DCI) on ``num_train`` points and score it on
  ``num_test`` others use disjoint random subsets of those sizes when the dataset has
  ``num_train + num_test`` examples, and otherwise split the examples at random in the
  ratio ``num_train : num_test`` (disentanglement_lib samples both sets independently with
  replacement, which on a dataset of a few thousand codes would put most test points in the
  training set).  MIG uses ``min(N, num_train)`` examples without replacement.

Every score is deterministic for a fixed ``seed`` (numpy ``default_rng(seed)``).
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np

from djax.metrics import gbt

__all__ = ["VERSIONS", "mig", "sap", "dci", "factor_vae", "beta_vae", "histogram_discretize",
           "discrete_mutual_info", "discrete_entropy", "linear_svc_predict", "train_test_split"]

# Bumped whenever a metric's definition or defaults change; written into eval.json.
VERSIONS = {"mig": "2", "sap": "1", "dci": "2", "factor_vae": "1", "beta_vae": "2"}


# ----------------------------------------------------------------------------- inputs

def _codes(codes) -> np.ndarray:
  codes = np.asarray(codes, np.float64)
  if codes.ndim == 1:
    codes = codes[:, None]
  if codes.ndim != 2:
    raise ValueError(f"codes must be [N, D], got shape {codes.shape}")
  if not np.all(np.isfinite(codes)):
    raise ValueError("codes contain NaN or inf")
  return codes


def _factors(factors: Mapping[str, np.ndarray], n: int) -> tuple[list[str], np.ndarray]:
  """Names and dense integer ids ``[K, N]`` (value order preserved)."""
  names = list(factors)
  if not names:
    raise ValueError("factors is empty")
  ids = []
  for k in names:
    v = np.asarray(factors[k]).reshape(-1)
    if v.shape[0] != n:
      raise ValueError(f"factor {k!r} has {v.shape[0]} values, codes have {n} rows")
    ids.append(np.unique(v, return_inverse=True)[1].reshape(-1))
  return names, np.stack(ids).astype(np.int64)


def train_test_split(n: int, num_train: int, num_test: int, rng) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint random index sets (see the module docstring for the small-dataset rule)."""
  perm = rng.permutation(n)
  if n >= num_train + num_test:
    return perm[:num_train], perm[num_train:num_train + num_test]
  n_train = int(round(n * num_train / (num_train + num_test)))
  n_train = min(max(n_train, 1), n - 1)
  return perm[:n_train], perm[n_train:]


# ----------------------------------------------------------------------------- MIG

def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """disentanglement_lib's ``_histogram_discretize``: per code dimension,
  ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])`` (equal-width bins over the range;
  values 1..num_bins)."""
  codes = _codes(codes)
  out = np.zeros(codes.shape, np.int64)
  for i in range(codes.shape[1]):
    out[:, i] = np.digitize(codes[:, i], np.histogram(codes[:, i], num_bins)[1][:-1])
  return out


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``I(a_i; b_j)`` in nats for discrete columns ``a [N, I]``, ``b [N, J]`` -> ``[I, J]``;
  equal to ``sklearn.metrics.mutual_info_score`` (plug-in estimate), vectorised."""
  n = a.shape[0]
  out = np.zeros((a.shape[1], b.shape[1]))
  a_ids = [np.unique(a[:, i], return_inverse=True)[1].reshape(-1) for i in range(a.shape[1])]
  b_ids = [np.unique(b[:, j], return_inverse=True)[1].reshape(-1) for j in range(b.shape[1])]
  for j, bj in enumerate(b_ids):
    kb = bj.max() + 1
    pb = np.bincount(bj, minlength=kb) / n
    for i, ai in enumerate(a_ids):
      ka = ai.max() + 1
      joint = np.bincount(ai * kb + bj, minlength=ka * kb).reshape(ka, kb) / n
      pa = joint.sum(axis=1)
      nz = joint > 0
      out[i, j] = np.sum(joint[nz] * (np.log(joint[nz]) - np.log(np.outer(pa, pb)[nz])))
  return np.maximum(out, 0.0)


def discrete_entropy(ys: np.ndarray) -> np.ndarray:
  """Entropy in nats of each column of ``ys [N, J]`` (``mutual_info_score(y, y)``)."""
  out = []
  for j in range(ys.shape[1]):
    p = np.bincount(np.unique(ys[:, j], return_inverse=True)[1].reshape(-1)) / ys.shape[0]
    out.append(-np.sum(p * np.log(p)))
  return np.asarray(out)


def mig(codes, factors: Mapping[str, np.ndarray], *, num_train: int = 10000, num_bins: int = 20,
        seed: int = 0) -> dict:
  """Mutual Information Gap (Chen et al. 2018), disentanglement_lib's ``compute_mig``.

  Parameters (``mig.gin``): ``num_train=10000`` points, ``histogram_discretizer`` with
  ``num_bins=20``.  Each code dimension is discretised into 20 equal-width bins; ``m[i, k]``
  is the plug-in mutual information between code bin and factor value; per factor the gap
  between the largest and second largest ``m[:, k]``, divided by the factor's entropy;
  the score is the mean over factors.  Range [0, 1]; 1 = each factor fully in one dimension
  and in no other.  Needs at least two code dimensions.

  A factor that is constant on the points used (entropy 0) has no defined gap (0 / 0;
  disentanglement_lib's mean then becomes NaN): its entry in ``per_factor`` is NaN, the
  score averages the other factors (``undefined`` names the left-out ones, with a
  warning), and is NaN when no factor is left.

  Returns ``{"score", "per_factor": {name: gap}, "mutual_info": [D, K], "entropy": {name},
  "undefined": [names]}``.
  """
  codes = _codes(codes)
  names, ys = _factors(factors, codes.shape[0])
  if codes.shape[1] < 2:
    raise ValueError("MIG needs at least two code dimensions")
  rng = np.random.default_rng(seed)
  idx = rng.permutation(codes.shape[0])[:min(num_train, codes.shape[0])]
  disc = histogram_discretize(codes[idx], num_bins)
  y = ys[:, idx].T
  m = discrete_mutual_info(disc, y)
  h = discrete_entropy(y)
  top = np.sort(m, axis=0)[::-1]
  defined = h > 0
  with np.errstate(divide="ignore", invalid="ignore"):
    gap = np.where(defined, (top[0] - top[1]) / h, np.nan)
  undefined = [k for k, ok in zip(names, defined) if not ok]
  if undefined:
    warnings.warn(f"MIG: factor(s) {', '.join(map(repr, undefined))} constant on the "
                  f"{len(idx)} points used (entropy 0): gap undefined, left out of the mean",
                  RuntimeWarning, stacklevel=2)
  score = float(gap[defined].mean()) if defined.any() else float("nan")
  return {"score": score, "per_factor": dict(zip(names, gap.tolist())),
          "mutual_info": m, "entropy": dict(zip(names, h.tolist())), "num_points": len(idx),
          "undefined": undefined}


# ----------------------------------------------------------------------------- SAP

def _bisect(xs, d, lo, hi, t, right: bool):
  """Vectorised bisection: for each problem, the first index i in [lo, hi) of the sorted
  segment ``xs[d, lo:hi]`` with ``xs > t`` (right) or ``xs >= t`` (left); hi if none."""
  lo, hi = lo.copy(), hi.copy()
  for _ in range(int(np.ceil(np.log2(xs.shape[1] + 1))) + 1):
    go = lo < hi
    if not go.any():
      break
    mid = (lo + hi) // 2
    v = xs[d, np.minimum(mid, xs.shape[1] - 1)]
    left = (v <= t) if right else (v < t)
    lo = np.where(go & left, mid + 1, lo)
    hi = np.where(go & ~left, mid, hi)
  return lo


def _range_sums(pre, d, i, j):
  """Sums of (1, x, x^2) over sorted positions [i, j) of dimension d: [P, 3]."""
  return pre[d, j] - pre[d, i]


def linear_svc_predict(x_train, y_train, x_test, *, C: float = 0.01,
                       balanced: bool = True, n_iter: int = 100) -> np.ndarray:
  """Predictions of ``sklearn.svm.LinearSVC(C=C, class_weight='balanced')`` fitted on one
  feature, for many features at once.

  ``x_train [N, D]``, ``y_train [N]`` (integer classes), ``x_test [M, D]`` -> ``[M, D]``: the
  prediction of the classifier fitted on column d alone.  Same optimisation problem as
  liblinear's ``L2R_L2LOSS_SVC`` with ``bias=1`` (sklearn's defaults):
  ``min 0.5 (w^2 + b^2) + sum_n C_n max(0, 1 - y_n (w x_n + b))^2``, one-vs-rest for more
  than two classes with the positive class's C scaled by its balanced weight
  ``N / (K n_k)`` and the negatives' C unscaled (liblinear's
  ``train_one(..., weighted_C[i], param->C)``); for two classes each class has its own
  weighted C.  The problem is strictly convex, so the solution (and the predictions, barring
  points on the boundary) is sklearn's up to solver tolerance.

  Solved by Newton's method with backtracking for all (dimension, class) problems at once.
  With the samples of each dimension sorted, the margin-violating samples of a problem are
  a prefix or suffix of each class's sorted values, so every sum the objective, gradient and
  Hessian need comes from prefix sums of (1, x, x^2) located by bisection: an iteration
  costs O(log N) per problem, not O(N).
  """
  x_train = np.asarray(x_train, np.float64)
  x_test = np.asarray(x_test, np.float64)
  classes, y = np.unique(np.asarray(y_train), return_inverse=True)
  y = y.reshape(-1)
  k, n, d = len(classes), x_train.shape[0], x_train.shape[1]
  if k == 1:
    return np.full((x_test.shape[0], d), classes[0])
  counts = np.bincount(y, minlength=k)
  weight = n / (k * counts) if balanced else np.ones(k)
  seg = np.concatenate([[0], np.cumsum(counts)])

  def prefix(order):
    xs = np.take_along_axis(x_train, order, axis=0).T  # [D, N]
    pre = np.zeros((d, n + 1, 3))
    pre[:, 1:] = np.cumsum(np.stack([np.ones_like(xs), xs, xs * xs], -1), axis=1)
    return xs, pre

  xs_all, pre_all = prefix(np.argsort(x_train, axis=0, kind="stable"))
  xs_cls, pre_cls = prefix(np.lexsort((x_train, np.broadcast_to(y[:, None], x_train.shape)),
                                      axis=0))
  if k == 2:
    pos_cls, c_pos, c_neg = np.array([1]), np.array([C * weight[1]]), C * weight[0]
  else:
    pos_cls, c_pos, c_neg = np.arange(k), C * weight, C
  p = len(pos_cls)
  dd = np.repeat(np.arange(d), p)  # problem = (dimension, class)
  kk = np.tile(pos_cls, d)
  cp = np.tile(c_pos, d)
  lo_k, hi_k = seg[kk], seg[kk + 1]
  zero, full = np.zeros(d * p, np.int64), np.full(d * p, n, np.int64)

  def sums(theta):
    """Weighted (S0, S1, S2) of the active positives and negatives: two [P, 3] arrays."""
    w, b = theta[:, 0], theta[:, 1]
    wpos = w >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
      tp = np.where(w != 0, (1 - b) / w, np.where(1 - b > 0, np.inf, -np.inf))
      tn = np.where(w != 0, (-1 - b) / w, np.where(b > -1, -np.inf, np.inf))
    # positives (class kk) active: x < tp if w >= 0, x > tp if w < 0
    i_lt = _bisect(xs_cls, dd, lo_k, hi_k, tp, right=False)
    i_gt = _bisect(xs_cls, dd, lo_k, hi_k, tp, right=True)
    pos = np.where(wpos[:, None], _range_sums(pre_cls, dd, lo_k, i_lt),
                   _range_sums(pre_cls, dd, i_gt, hi_k)) * cp[:, None]
    # negatives active: x > tn if w >= 0, x < tn if w < 0
    if k == 2:
      lo0, hi0 = seg[np.zeros_like(kk)], seg[np.ones_like(kk)]
      j_lt = _bisect(xs_cls, dd, lo0, hi0, tn, right=False)
      j_gt = _bisect(xs_cls, dd, lo0, hi0, tn, right=True)
      neg = np.where(wpos[:, None], _range_sums(pre_cls, dd, j_gt, hi0),
                     _range_sums(pre_cls, dd, lo0, j_lt))
    else:  # all samples minus the positive class
      a_lt = _bisect(xs_all, dd, zero, full, tn, right=False)
      a_gt = _bisect(xs_all, dd, zero, full, tn, right=True)
      c_lt = _bisect(xs_cls, dd, lo_k, hi_k, tn, right=False)
      c_gt = _bisect(xs_cls, dd, lo_k, hi_k, tn, right=True)
      neg = np.where(wpos[:, None],
                     _range_sums(pre_all, dd, a_gt, full) - _range_sums(pre_cls, dd, c_gt, hi_k),
                     _range_sums(pre_all, dd, zero, a_lt) - _range_sums(pre_cls, dd, lo_k, c_lt))
    return pos, neg * c_neg

  def evaluate(theta):
    pos, neg = sums(theta)
    w, b = theta[:, 0], theta[:, 1]
    s0, s1, s2 = (pos + neg).T
    t0, t1 = pos[:, 0] - neg[:, 0], pos[:, 1] - neg[:, 1]
    f = (0.5 * (w * w + b * b) + s0 - 2 * (w * t1 + b * t0) + w * w * s2 + 2 * w * b * s1
         + b * b * s0)
    grad = np.stack([w + 2 * (-t1 + w * s2 + b * s1), b + 2 * (-t0 + w * s1 + b * s0)], 1)
    hess = (1 + 2 * s2, 2 * s1, 1 + 2 * s0)
    return f, grad, hess

  theta = np.zeros((d * p, 2))
  f, g, (hww, hwb, hbb) = evaluate(theta)
  for _ in range(n_iter):
    det = hww * hbb - hwb * hwb
    step = -np.stack([(hbb * g[:, 0] - hwb * g[:, 1]) / det,
                      (hww * g[:, 1] - hwb * g[:, 0]) / det], axis=1)
    decrement = -np.sum(g * step, axis=1)
    todo = decrement > 1e-12 * np.maximum(1.0, np.abs(f))
    if not todo.any():
      break
    t = np.where(todo, 1.0, 0.0)
    for _ in range(40):  # Armijo backtracking, per problem
      cand = theta + t[:, None] * step
      f_new, g_new, h_new = evaluate(cand)
      bad = todo & (f_new > f - 1e-4 * t * decrement)
      if not bad.any():
        break
      t = np.where(bad, t * 0.5, t)
    theta, f, g, (hww, hwb, hbb) = cand, f_new, g_new, h_new
  w, b = theta[:, 0].reshape(d, p), theta[:, 1].reshape(d, p)
  dec = x_test[:, :, None] * w[None] + b[None]  # [M, D, P]
  if k == 2:
    return classes[(dec[..., 0] > 0).astype(np.int64)]
  return classes[np.argmax(dec, axis=-1)]


def sap(codes, factors: Mapping[str, np.ndarray], *, num_train: int = 10000,
        num_test: int = 5000, continuous_factors: bool = False, seed: int = 0) -> dict:
  """Separated Attribute Predictability (Kumar et al. 2018), disentanglement_lib's
  ``compute_sap``.

  Parameters (``sap_score.gin``): ``num_train=10000``, ``num_test=5000``,
  ``continuous_factors=False``.  Discrete factors: ``score[i, k]`` = test accuracy of
  ``LinearSVC(C=0.01, class_weight="balanced")`` fitted on code dimension i alone
  (:func:`linear_svc_predict`).  Continuous factors: the squared correlation (R^2) of code
  dimension i and factor k on the training points (0 where the code's variance is
  <= 1e-12).  The score is the mean over factors of the difference between the two
  largest entries of the factor's column.  Range [0, 1], larger is better; accuracies of
  non-informative dimensions sit near chance, so the maximum for a k-class factor is well
  below 1 (~0.5 for a balanced binary factor).  Needs at least two code dimensions.
  """
  codes = _codes(codes)
  if codes.shape[1] < 2:
    raise ValueError("SAP needs at least two code dimensions")
  names = list(factors)
  rng = np.random.default_rng(seed)
  tr, te = train_test_split(codes.shape[0], num_train, num_test, rng)
  matrix = np.zeros((codes.shape[1], len(names)))
  for j, name in enumerate(names):
    y = np.asarray(factors[name]).reshape(-1)
    if continuous_factors:
      x, yt = codes[tr], y[tr].astype(np.float64)
      xc, yc = x - x.mean(0), yt - yt.mean()
      var_x = np.sum(xc * xc, 0) / (len(tr) - 1)
      var_y = np.sum(yc * yc) / (len(tr) - 1)
      cov = xc.T @ yc / (len(tr) - 1)
      with np.errstate(divide="ignore", invalid="ignore"):
        matrix[:, j] = np.where(var_x > 1e-12, cov ** 2 / (var_x * var_y), 0.0)
    else:
      pred = linear_svc_predict(codes[tr], y[tr], codes[te])
      matrix[:, j] = np.mean(pred == y[te][:, None], axis=0)
  top = np.sort(matrix, axis=0)
  gap = top[-1] - top[-2]
  return {"score": float(gap.mean()), "per_factor": dict(zip(names, gap.tolist())),
          "score_matrix": matrix, "num_train": len(tr), "num_test": len(te)}


# ----------------------------------------------------------------------------- DCI

def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
  """``scipy.stats.entropy`` of each row (normalised first), in the given base."""
  p = p / p.sum(axis=1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
  """disentanglement_lib's ``disentanglement`` and ``completeness`` of an importance matrix
  ``[D codes, K factors]``: per code ``1 - H_K(row + 1e-11)`` weighted by the code's share of
  the total importance; per factor ``1 - H_D(column + 1e-11)`` weighted by the factor's share."""
  imp = np.asarray(importance, np.float64)
  d, k = imp.shape
  per_code = 1.0 - _entropy_rows(imp + 1e-11, k) if k > 1 else np.ones(d)
  per_factor = 1.0 - _entropy_rows(imp.T + 1e-11, d) if d > 1 else np.ones(k)
  weights = imp if imp.sum() > 0 else np.ones_like(imp)
  code_w = weights.sum(axis=1) / weights.sum()
  factor_w = weights.sum(axis=0) / weights.sum()
  return (float(np.sum(per_code * code_w)), float(np.sum(per_factor * factor_w)), per_code,
          per_factor)


def dci(codes, factors: Mapping[str, np.ndarray], *, num_train: int = 10000, num_test: int = 5000,
        seed: int = 0, exact: bool = True, max_bins: int = 64) -> dict:
  """Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018),
  disentanglement_lib's ``compute_dci``.

  Parameters (``dci.gin``): ``num_train=10000``, ``num_test=5000``; per factor a
  ``GradientBoostingClassifier()`` with sklearn's defaults (100 stages, learning rate 0.1,
  depth 3, exact split search), importance = its ``feature_importances_`` (columns of
  ``importance [D, K]``); informativeness = mean over factors of the classifier's accuracy
  (train and test).  The boosted trees are :mod:`djax.metrics.gbt`: the same model, all
  factors at once, ties between equally good code dimensions drawn at random for ``seed``
  as sklearn's random feature order does.  ``max_bins`` only sets its speed;
  ``exact=False`` searches bin edges only (faster, biased low: see that module).

  Returns ``{"disentanglement", "completeness", "informativeness_train",
  "informativeness_test", "importance" [D, K], "per_factor_test_accuracy", ...}``.
  """
  codes = _codes(codes)
  names = list(factors)
  rng = np.random.default_rng(seed)
  tr, te = train_test_split(codes.shape[0], num_train, num_test, rng)
  ys = [np.asarray(factors[k]).reshape(-1) for k in names]
  res = gbt.fit_gbt(codes[tr], [y[tr] for y in ys], codes[te], [y[te] for y in ys],
                    max_bins=max_bins, exact=exact, seed=seed)
  d_score, c_score, per_code, per_factor = dci_from_importance(res.importances)
  return {"disentanglement": d_score, "completeness": c_score,
          "informativeness_train": float(res.train_accuracy.mean()),
          "informativeness_test": float(res.test_accuracy.mean()),
          "importance": res.importances,
          "per_factor_completeness": dict(zip(names, per_factor.tolist())),
          "per_factor_test_accuracy": dict(zip(names, res.test_accuracy.tolist())),
          "num_train": len(tr), "num_test": len(te)}


# ----------------------------------------------------------------------------- sampling

class _FactorIndex:
  """Example indices grouped by the value of each factor, for sampling with one fixed."""

  def __init__(self, ys: np.ndarray):
    self.ys = ys
    self.groups = []  # per factor: (order of examples sorted by value, start of each value)
    for y in ys:
      order = np.argsort(y, kind="stable")
      counts = np.bincount(y)
      self.groups.append((order, np.concatenate([[0], np.cumsum(counts)]), counts))

  def same_value(self, factor: np.ndarray, examples: np.ndarray, size: tuple, rng) -> np.ndarray:
    """For each i, ``size[1:]`` random examples whose value of factor[i] equals that of
    examples[i] (uniform, with replacement).  factor, examples: [P]."""
    out = np.empty(size, np.int64)
    for k in np.unique(factor):
      sel = factor == k
      order, starts, counts = self.groups[k]
      v = self.ys[k, examples[sel]]
      u = rng.random((int(sel.sum()),) + tuple(size[1:]))
      offs = np.floor(u * counts[v].reshape((-1,) + (1,) * (len(size) - 1))).astype(np.int64)
      out[sel] = order[starts[v].reshape((-1,) + (1,) * (len(size) - 1)) + offs]
    return out


# ----------------------------------------------------------------------------- FactorVAE

def factor_vae(codes, factors: Mapping[str, np.ndarray], *, batch_size: int = 64,
               num_train: int = 10000, num_eval: int = 5000, num_variance_estimate: int = 10000,
               prune_threshold: float = 0.05, seed: int = 0) -> dict:
  """FactorVAE score (Kim & Mnih 2018), disentanglement_lib's ``compute_factor_vae``.

  Parameters (``factor_vae_metric.gin``): ``batch_size=64``, ``num_train=10000``,
  ``num_eval=5000``, ``num_variance_estimate=10000``, ``prune_dims.threshold=0.05``.
  Global variances (``ddof=1``) of each code dimension on ``num_variance_estimate`` random
  examples; dimensions with standard deviation < 0.05 are pruned.  A vote: pick a factor k
  uniformly, a batch of 64 examples sharing one value of k, the argmin over active
  dimensions of (batch variance / global variance) votes for k.  The majority-vote
  classifier (dimension -> its most frequent factor) is built on ``num_train`` votes and
  scored on ``num_eval`` fresh votes; the score is that eval accuracy.  Not rescaled:
  chance is 1/K.  No active dimension -> 0.  Codes are not standardised (the ratio to the
  global variance does it).
  """
  codes = _codes(codes)
  names, ys = _factors(factors, codes.shape[0])
  n, d = codes.shape
  rng = np.random.default_rng(seed)
  var_idx = rng.choice(n, size=num_variance_estimate, replace=True)
  global_var = np.var(codes[var_idx], axis=0, ddof=1)
  active = np.sqrt(global_var) >= prune_threshold
  if not active.any():
    return {"score": 0.0, "train_accuracy": 0.0, "num_active_dims": 0}
  index = _FactorIndex(ys)
  k_count = len(names)

  def votes(num):
    factor = rng.integers(0, k_count, num)
    first = rng.integers(0, n, num)
    batch = index.same_value(factor, first, (num, batch_size), rng)
    out = np.zeros((k_count, d), np.int64)
    act = np.flatnonzero(active)
    for s in range(0, num, 1000):
      b = codes[batch[s:s + 1000]]  # [B, 64, D]
      local = np.var(b[..., act], axis=1, ddof=1) / global_var[act]
      np.add.at(out, (factor[s:s + 1000], act[np.argmin(local, axis=1)]), 1)
    return out

  train_votes = votes(num_train)
  classifier = np.argmax(train_votes, axis=0)
  cols = np.arange(d)
  train_acc = train_votes[classifier, cols].sum() / train_votes.sum()
  eval_votes = votes(num_eval)
  eval_acc = eval_votes[classifier, cols].sum() / eval_votes.sum()
  return {"score": float(eval_acc), "train_accuracy": float(train_acc),
          "num_active_dims": int(active.sum()),
          "dimension_factor": {int(i): names[classifier[i]] for i in np.flatnonzero(
              train_votes.sum(axis=0) > 0)}}


# ----------------------------------------------------------------------------- BetaVAE

def beta_vae(codes, factors: Mapping[str, np.ndarray], *, batch_size: int = 64,
             num_train: int = 10000, num_eval: int = 5000, seed: int = 0) -> dict:
  """BetaVAE score (Higgins et al. 2017), disentanglement_lib's ``compute_beta_vae_sklearn``.

  Parameters (``beta_vae_sklearn.gin``): ``batch_size=64``, ``num_train=10000``,
  ``num_eval=5000``.  One training point: pick a factor k uniformly, 64 pairs of examples
  sharing the value of k (the first uniform, the second uniform among examples with the
  same value of k), feature = mean over pairs of ``|code_1 - code_2|``, label = k.  A
  ``sklearn.linear_model.LogisticRegression`` (defaults: L2, C=1, lbfgs, multinomial; here
  ``max_iter=1000`` so it converges, the reference's 100 may stop early) is fitted on
  ``num_train`` points and scored on ``num_eval`` fresh ones; the score is that accuracy
  (chance 1/K).
  """
  from sklearn import linear_model

  codes = _codes(codes)
  names, ys = _factors(factors, codes.shape[0])
  n = codes.shape[0]
  rng = np.random.default_rng(seed)
  index = _FactorIndex(ys)

  def points(num):
    factor = rng.integers(0, len(names), num)
    first = rng.integers(0, n, (num, batch_size))
    second = np.empty_like(first)
    for j in range(batch_size):
      second[:, j] = index.same_value(factor, first[:, j], (num, 1), rng)[:, 0]
    feats = np.empty((num, codes.shape[1]))
    for s in range(0, num, 500):
      feats[s:s + 500] = np.mean(np.abs(codes[first[s:s + 500]] - codes[second[s:s + 500]]), axis=1)
    return feats, factor

  x_train, y_train = points(num_train)
  # Standardised features (disentanglement_lib fits raw ones): the score no longer depends
  # on the code's scale, and lbfgs converges where raw features of a large-scale code left
  # it at max_iter with a ConvergenceWarning (sprites/small codes x10: 0.792 and 44 s raw,
  # 0.804 at any scale in 6 s standardised).
  mu, sd = x_train.mean(0), x_train.std(0)
  sd = np.where(sd > 1e-12, sd, 1.0)
  model = linear_model.LogisticRegression(max_iter=1000)
  # One BLAS thread: products of 10000 x D are too small to gain from threads, and on a
  # busy machine spinning threads made this fit 10x slower.
  from threadpoolctl import threadpool_limits
  with threadpool_limits(limits=1, user_api="blas"):
    model.fit((x_train - mu) / sd, y_train)
  x_eval, y_eval = points(num_eval)
  return {"score": float(model.score((x_eval - mu) / sd, y_eval)),
          "train_accuracy": float(model.score((x_train - mu) / sd, y_train))}
