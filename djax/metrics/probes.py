"""Linear probes on a slice of the code: fit on one split, score on another.

* :func:`linear_regression_mae` — Ruiz et al. 2019, Table 1 (MNIST digit style): "a set of
  linear-regressors predicting the scale, width and color parameters", trained on one 5k
  set and scored by mean absolute error on a second, disjoint one.  One ordinary least
  squares regressor (``sklearn.linear_model.LinearRegression``) per continuous factor.
* :func:`linear_classifier_accuracy` — Hu et al. 2018, Table 3 (CelebA attributes:
  "linear classifiers" on the code), Ruiz et al. Table 1 (AffectNet, linear classifier,
  per-class accuracy) and Mathieu et al. 2016 ("s should predict the label, z should
  not"): one multinomial logistic regression per discrete factor
  (``sklearn.linear_model.LogisticRegression``, L2, C=1, lbfgs) on standardised codes
  (mean/std of the fit split), reporting accuracy and balanced (mean per-class) accuracy,
  next to the majority-class rate of the score split. A fit that uses up ``max_iter``
  has not converged: it goes on from where it stopped (warm start) with twice the
  iterations, three times at most (15x ``max_iter`` in all), and the result reports the iterations used
  and whether it converged (sklearn's ConvergenceWarning only if it never does).

The papers do not give the regulariser or the standardisation; these are ours.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from djax.metrics.retrieval import select_dims

__all__ = ["VERSIONS", "linear_regression_mae", "linear_classifier_accuracy"]

# linear_probe 2: fits that do not converge in max_iter go on (see above); 'iterations'.
VERSIONS = {"linear_regression_mae": "1", "linear_probe": "2"}


def _xy(codes, dims):
  x = np.asarray(select_dims(codes, dims), np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError("codes contain NaN or inf")
  return x


def linear_regression_mae(train_codes, train_factors: Mapping[str, np.ndarray], test_codes,
                          test_factors: Mapping[str, np.ndarray], *, dims=None) -> dict:
  """MAE on the test split of an OLS regressor per continuous factor, fitted on the train
  split.  Returns ``{"mae": {name: float}, "average", "baseline": {name: MAE of predicting
  the train mean}, "dims"}``."""
  from sklearn.linear_model import LinearRegression

  xtr, xte = _xy(train_codes, dims), _xy(test_codes, dims)
  mae, base = {}, {}
  for k in train_factors:
    ytr = np.asarray(train_factors[k], np.float64).reshape(-1)
    yte = np.asarray(test_factors[k], np.float64).reshape(-1)
    model = LinearRegression().fit(xtr, ytr)
    mae[k] = float(np.mean(np.abs(model.predict(xte) - yte)))
    base[k] = float(np.mean(np.abs(ytr.mean() - yte)))
  return {"mae": mae, "average": float(np.mean(list(mae.values()))), "baseline": base,
          "baseline_average": float(np.mean(list(base.values()))),
          "dims": "all" if dims is None else str(dims)}


def _fit_logistic(x, y, *, C: float, max_iter: int, name: str = ""):
  """lbfgs logistic regression run to convergence: when a fit uses up its iterations it
  goes on from its coefficients (warm start) with twice as many, three times at most (15x
  ``max_iter`` in all). Returns (model, iterations used, converged)."""
  import warnings

  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  from threadpoolctl import threadpool_limits

  model = LogisticRegression(C=C, warm_start=True)
  used = 0
  # one BLAS thread: small products, and threads spinning on a busy machine cost 10x
  with threadpool_limits(limits=1, user_api="blas"):
    for factor in (1, 2, 4, 8):  # 15x max_iter in all
      model.max_iter = factor * max_iter
      with warnings.catch_warnings():
        # handled here: a fit that stops at max_iter is continued, or reported below
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
      n = int(np.max(model.n_iter_))
      used += n
      if n < model.max_iter:
        return model, used, True
  warnings.warn(f"linear probe{' of ' + name if name else ''}: lbfgs did not converge in "
                f"{used} iterations (max_iter={max_iter}, continued 3 times); its accuracy is "
                f"that of the last iterate", ConvergenceWarning, stacklevel=3)
  return model, used, False


def linear_classifier_accuracy(train_codes, train_factors: Mapping[str, np.ndarray], test_codes,
                               test_factors: Mapping[str, np.ndarray], *, dims=None,
                               C: float = 1.0, max_iter: int = 1000) -> dict:
  """Test accuracy of a logistic-regression probe per discrete factor.

  Returns ``{"accuracy": {name}, "balanced_accuracy": {name}, "majority": {name},
  "iterations": {name}, "converged": {name}, "average", "dims"}``; labels absent from the
  train split count as errors.
  """
  xtr, xte = _xy(train_codes, dims), _xy(test_codes, dims)
  mu, sd = xtr.mean(0), xtr.std(0)
  sd = np.where(sd > 1e-12, sd, 1.0)
  xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
  acc, bal, major, iters, converged = {}, {}, {}, {}, {}
  for k in train_factors:
    ytr = np.asarray(train_factors[k]).reshape(-1)
    yte = np.asarray(test_factors[k]).reshape(-1)
    values, counts = np.unique(yte, return_counts=True)
    major[k] = float(counts.max() / counts.sum())
    if len(np.unique(ytr)) < 2:
      pred = np.full(yte.shape, ytr[0])
      iters[k], converged[k] = 0, True
    else:
      model, iters[k], converged[k] = _fit_logistic(xtr, ytr, C=C, max_iter=max_iter, name=k)
      pred = model.predict(xte)
    acc[k] = float(np.mean(pred == yte))
    bal[k] = float(np.mean([np.mean(pred[yte == v] == v) for v in values]))
  return {"accuracy": acc, "balanced_accuracy": bal, "majority": major,
          "iterations": iters, "converged": converged,
          "average": float(np.mean(list(acc.values()))),
          "dims": "all" if dims is None else str(dims)}
