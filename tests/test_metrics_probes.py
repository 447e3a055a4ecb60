"""Known answers for retrieval on a code slice and the linear probes (djax.metrics.probes)."""

import numpy as np
import pytest

from djax.metrics import probes, retrieval


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  n = 600
  label = rng.integers(0, 4, n)
  other = rng.integers(0, 3, n)
  s = np.eye(4)[label] * 3 + rng.normal(0, 0.1, (n, 4))  # "specified" part: the label
  z = rng.normal(size=(n, 6))  # "unspecified" part: noise
  return np.concatenate([s, z], 1), {"label": label, "other": other}


def test_select_dims_forms():
  x = np.arange(20).reshape(2, 10)
  assert retrieval.select_dims(x, "0:4").shape == (2, 4)
  assert retrieval.select_dims(x, "6:")[0].tolist() == [6, 7, 8, 9]
  assert retrieval.select_dims(x, slice(2, 3)).shape == (2, 1)
  assert retrieval.select_dims(x, [1, 3])[0].tolist() == [1, 3]
  assert retrieval.select_dims(x, 5)[0].tolist() == [5]
  assert retrieval.select_dims(x, None).shape == (2, 10)


def test_retrieval_on_a_slice(data):
  codes, f = data
  s = retrieval.factor_map(codes, f, dims="0:4")
  z = retrieval.factor_map(codes, f, dims="4:")
  assert s["map"]["label"] == pytest.approx(1.0)
  assert abs(z["map"]["label"] - z["chance"]["label"]) < 0.03
  assert abs(s["map"]["other"] - s["chance"]["other"]) < 0.03
  # The whole-code, one-chunk value agrees with the chunk table's.
  table = retrieval.chunk_attribute_map(codes[:, :4], f, 1)
  assert table["map"][0, 0] == pytest.approx(s["map"]["label"])


def test_linear_classifier_s_predicts_label_z_does_not(data):
  codes, f = data
  tr, te = slice(0, 400), slice(400, None)
  fit = {k: v[tr] for k, v in f.items()}
  score = {k: v[te] for k, v in f.items()}
  s = probes.linear_classifier_accuracy(codes[tr], fit, codes[te], score, dims="0:4")
  z = probes.linear_classifier_accuracy(codes[tr], fit, codes[te], score, dims="4:")
  assert s["accuracy"]["label"] == 1.0 and s["balanced_accuracy"]["label"] == 1.0
  assert z["accuracy"]["label"] < s["majority"]["label"] + 0.1
  assert z["balanced_accuracy"]["label"] < 0.35  # chance 0.25


def test_linear_regression_mae_known_answers():
  rng = np.random.default_rng(1)
  n = 1000
  f = {"scale": rng.uniform(0.5, 1.0, n), "width": rng.uniform(0, 1, n)}
  linear = np.stack([2 * f["scale"] - 1, -3 * f["width"] + 0.5, rng.normal(size=n)], 1)
  noise = rng.normal(size=(n, 3))
  tr, te = slice(0, 500), slice(500, None)
  split = lambda d, s: {k: v[s] for k, v in d.items()}  # noqa: E731
  exact = probes.linear_regression_mae(linear[tr], split(f, tr), linear[te], split(f, te))
  assert exact["average"] < 1e-9
  bad = probes.linear_regression_mae(noise[tr], split(f, tr), noise[te], split(f, te))
  for k in f:
    assert bad["mae"][k] == pytest.approx(bad["baseline"][k], rel=0.1)
  # the width lives in column 1 only
  sl = probes.linear_regression_mae(linear[tr], split(f, tr), linear[te], split(f, te), dims="1:2")
  assert sl["mae"]["width"] < 1e-9 and sl["mae"]["scale"] > 0.1


def test_linear_probe_runs_to_convergence_quietly(data):
  """A fit that uses up max_iter goes on (warm start, doubled iterations) instead of
  stopping with sklearn's ConvergenceWarning; it warns only if 15x max_iter is not enough."""
  import warnings

  from sklearn.exceptions import ConvergenceWarning
  codes, f = data
  tr, te = slice(0, 400), slice(400, None)
  fit = {k: v[tr] for k, v in f.items()}
  score = {k: v[te] for k, v in f.items()}
  full = probes.linear_classifier_accuracy(codes[tr], fit, codes[te], score)
  assert all(full["converged"].values()) and 0 < max(full["iterations"].values()) < 1000
  few_iter = max(2, max(full["iterations"].values()) // 6)
  with warnings.catch_warnings():
    warnings.simplefilter("error", ConvergenceWarning)
    few = probes.linear_classifier_accuracy(codes[tr], fit, codes[te], score, max_iter=few_iter)
  assert all(few["converged"].values())
  assert max(few["iterations"].values()) > few_iter  # it went on
  assert few["accuracy"] == pytest.approx(full["accuracy"], abs=0.01)
  with pytest.warns(ConvergenceWarning, match="did not converge in"):
    stuck = probes.linear_classifier_accuracy(codes[tr], fit, codes[te], score, max_iter=1)
  assert not all(stuck["converged"].values()) and max(stuck["iterations"].values()) <= 15


def test_part_probe_on_posterior_samples_credits_only_what_survives_the_noise(tmp_path):
  """A code whose z mean names the colour at 1 % of its posterior's spread: a probe on the
  mean reads the colour from z, one on posterior samples cannot; s (deterministic) reads it
  both ways."""
  import jax
  import jax.numpy as jnp
  from conftest import tiny_mixing_config
  from djax import evaluation
  from djax.data import pipeline
  from djax.methods import base

  class TinySignal(base.Method):
    def __init__(self):
      pass

    def code_parts(self):
      return {"s": slice(0, 3), "z": slice(3, 6)}

    def _colour(self, x):
      fg = jnp.any(x < 0.9, axis=-1)
      mean = (x * fg[..., None]).sum((1, 2)) / fg.sum((1, 2))[:, None]
      return jax.nn.one_hot(jnp.argmax(mean, -1), 3)  # red, green or blue channel

    def encode(self, params, stats, x):
      c = self._colour(x)
      return jnp.concatenate([c, 0.01 * c], -1)

    def encode_sample(self, params, stats, rng, x):
      code = self.encode(params, stats, x)
      return code.at[:, 3:].add(jax.random.normal(rng, (x.shape[0], 3)))

  c = tiny_mixing_config()
  c.eval.factors = ("colour",)
  c.eval.probe_split = "train"
  source, _ = pipeline.load_split(c.data, "test")
  res = evaluation.evaluate_representation(TinySignal(), {}, {}, c, source,
                                           metrics=["part_probe", "part_probe_sampled"])
  mean, sampled = res["part_probe"]["parts"], res["part_probe_sampled"]["parts"]
  assert mean["s"]["accuracy"]["colour"] > 0.95 and sampled["s"]["accuracy"]["colour"] > 0.95
  assert mean["z"]["accuracy"]["colour"] > 0.95
  assert sampled["z"]["accuracy"]["colour"] < mean["z"]["majority"]["colour"] + 0.15
  assert sampled["z"]["codes"] == "posterior samples"
  with pytest.raises(ValueError, match="encode_sample"):
    evaluation.check_metrics(type("NoSample", (base.Method,), {
        "code_parts": lambda self: {}})(c), ["part_probe_sampled"])
