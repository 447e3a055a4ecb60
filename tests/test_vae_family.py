"""The VAE family of Ruiz et al.'s Table 1: each loss against a direct computation, the
total-correlation estimators against a Gaussian case with a known answer, and DIP-VAE's
covariance penalties against numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_experiment
from djax import methods
from djax.methods import latents, vae_family as vf




def _np_log_normal(z, mu, logvar):
  return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 / np.exp(logvar))


def _correlated_posteriors(n, rho=0.8, s=0.3, seed=0):
  """N posteriors N(μ_n, s² I) with μ_n ~ N(0, Σ − s² I): q(z) = N(0, Σ), Σ = [[1, ρ], [ρ, 1]]
  as N grows, so TC = −½ log(1 − ρ²), MI = ½ log(det Σ / s⁴) and the dimension-wise KL is 0
  (each marginal is N(0, 1))."""
  rng = np.random.default_rng(seed)
  cov = np.array([[1.0, rho], [rho, 1.0]])
  mu = rng.multivariate_normal([0.0, 0.0], cov - s ** 2 * np.eye(2), size=n)
  logvar = np.full((n, 2), np.log(s ** 2))
  z = mu + s * rng.normal(size=(n, 2))
  want = {"total_correlation": -0.5 * np.log(1 - rho ** 2),
          "mutual_information": 0.5 * np.log(np.linalg.det(cov) / s ** 4),
          "dimension_kl": 0.0}
  return z, mu, logvar, want


def test_minibatch_weighted_sampling_matches_its_formula():
  rng = np.random.default_rng(1)
  b, d, n = 6, 3, 50
  z, mu, logvar = rng.normal(size=(b, d)), rng.normal(size=(b, d)), 0.3 * rng.normal(size=(b, d))
  pair = _np_log_normal(z[:, None], mu[None], logvar[None])  # [i, j, d]
  lse = lambda a, axis: np.log(np.sum(np.exp(a), axis=axis))
  log_qz = lse(pair.sum(-1), 1) - np.log(b * n)
  log_prod = np.sum(lse(pair, 1) - np.log(b * n), axis=-1)
  log_qzx = _np_log_normal(z, mu, logvar).sum(-1)
  log_pz = _np_log_normal(z, 0.0, 0.0).sum(-1)
  got = vf.tc_decomposition(jnp.asarray(z), jnp.asarray(mu), jnp.asarray(logvar), n, "mws")
  np.testing.assert_allclose(got["mutual_information"], np.mean(log_qzx - log_qz), rtol=1e-5)
  np.testing.assert_allclose(got["total_correlation"], np.mean(log_qz - log_prod), rtol=1e-5)
  np.testing.assert_allclose(got["dimension_kl"], np.mean(log_prod - log_pz), rtol=1e-5)


def test_stratified_weights_are_an_importance_weighting():
  w = np.exp(np.asarray(vf.stratified_log_weights(5, 100)))
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.diag(w), 1 / 100, rtol=1e-6)
  m = 4
  assert np.isclose(w[0, 1], (100 - m) / (100 * m)) and np.isclose(w[0, 2], 1 / m)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_total_correlation_of_correlated_gaussians_has_the_known_value(estimator):
  n = 1000
  z, mu, logvar, want = _correlated_posteriors(n)
  got = {k: float(v) for k, v in vf.tc_decomposition(
      jnp.asarray(z), jnp.asarray(mu), jnp.asarray(logvar), n, estimator).items()}
  if estimator == "mws":
    # MWS divides by N·M where the batch is the whole data set: each of log q(z) and the D
    # marginals is low by log N, so TC is high by (D − 1) log N and the dimension KL low
    # by D log N; beyond that offset it is the same answer.
    got["total_correlation"] -= math.log(n)
    got["dimension_kl"] += 2 * math.log(n)
    got["mutual_information"] -= math.log(n)
  assert abs(got["total_correlation"] - want["total_correlation"]) < 0.05, got
  assert abs(got["mutual_information"] - want["mutual_information"]) < 0.1, got
  assert abs(got["dimension_kl"]) < 0.05, got
  # Independent dimensions (ρ = 0): no total correlation.
  z0, mu0, lv0, _ = _correlated_posteriors(n, rho=0.0)
  tc0 = float(vf.tc_decomposition(jnp.asarray(z0), jnp.asarray(mu0), jnp.asarray(lv0), n,
                                  "mss")["total_correlation"])
  assert abs(tc0) < 0.03


def test_dip_covariances_and_penalty_match_numpy():
  rng = np.random.default_rng(2)
  mu, logvar = rng.normal(size=(20, 4)), 0.4 * rng.normal(size=(20, 4))
  cov_i = np.cov(mu, rowvar=False, bias=True)
  cov_ii = cov_i + np.diag(np.exp(logvar).mean(0))
  np.testing.assert_allclose(vf.dip_covariance(jnp.asarray(mu), jnp.asarray(logvar), "i"),
                             cov_i, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vf.dip_covariance(jnp.asarray(mu), jnp.asarray(logvar), "ii"),
                             cov_ii, rtol=1e-5, atol=1e-6)
  want = 0.0
  for i in range(4):
    for j in range(4):
      want += 3.0 * cov_ii[i, j] ** 2 if i != j else 7.0 * (cov_ii[i, i] - 1) ** 2
  np.testing.assert_allclose(vf.dip_penalty(jnp.asarray(cov_ii), 3.0, 7.0), want, rtol=1e-5)
  assert float(vf.dip_penalty(jnp.eye(4), 3.0, 7.0)) == 0.0


def test_objectives_match_direct_computation():
  rng = np.random.default_rng(3)
  x, x_hat = rng.uniform(-1, 1, size=(4, 2, 2, 3)), rng.uniform(-1, 1, size=(4, 2, 2, 3))
  mu, logvar = rng.normal(size=(4, 3)), 0.3 * rng.normal(size=(4, 3))
  z = mu + np.exp(0.5 * logvar) * rng.normal(size=(4, 3))
  b = 0.01
  nll = np.mean(np.sum(np.abs(x - x_hat).reshape(4, -1), 1) / b + 12 * np.log(2 * b))
  kl = np.mean(np.sum(0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar), 1))
  cfg = lambda **kw: __import__("ml_collections").ConfigDict(
      dict(likelihood_scale=b, beta=5.0, dataset_size=100, dip_lambda_od=2.0, dip_lambda_d=0.0,
           **kw))
  args = [jnp.asarray(a) for a in (x, x_hat, z, mu, logvar)]
  total, terms = vf.objective_terms(cfg(objective="vae"), *args)
  np.testing.assert_allclose(terms["loss_nll"], nll, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(total, nll + kl, rtol=1e-5)
  total, _ = vf.objective_terms(cfg(objective="beta_vae"), *args)
  np.testing.assert_allclose(total, nll + 5.0 * kl, rtol=1e-5)
  total, terms = vf.objective_terms(cfg(objective="beta_tcvae"), *args)
  np.testing.assert_allclose(total, nll + terms["loss_mutual_information"]
                             + 5.0 * terms["loss_total_correlation"] + terms["loss_dimension_kl"],
                             rtol=1e-5)
  cov = np.cov(mu, rowvar=False, bias=True)
  off = cov - np.diag(np.diag(cov))
  dip = 2.0 * np.sum(off ** 2) + 20.0 * np.sum((np.diag(cov) - 1) ** 2)  # λ_d = 10 λ_od
  total, terms = vf.objective_terms(cfg(objective="dip_vae_i"), *args)
  np.testing.assert_allclose(terms["loss_dip"], dip, rtol=1e-4)
  np.testing.assert_allclose(total, nll + kl + dip, rtol=1e-5)
  # The Laplace NLL's scale: b = λ; the KL is zero at the prior.
  assert float(jnp.sum(latents.gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3))))) == 0.0


def test_the_unsupervised_rows_train_on_both_image_sets_and_learn():
  rb = load_experiment("reference_based_mnist")
  c = rb.get_config("tiny,beta_tcvae")
  c.optim.vae.learning_rate = 1e-3
  c.model.use_reference_images = True
  m = methods.create(c, axis_name=None)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, size=(4, 32, 32, 3)), jnp.float32)
  xr = jnp.asarray(rng.uniform(-1, 1, size=(4, 32, 32, 3)), jnp.float32)
  assert m.images({"image": x, "image_ref": xr}).shape[0] == 8
  state = m.init(jax.random.PRNGKey(0), {"image": x})
  step = jax.jit(m.train_step)
  first = None
  for i in range(30):
    state, metrics = step(state, {"image": x, "image_ref": xr}, jax.random.PRNGKey(1))
    first = first if first is not None else float(metrics["loss_nll"])
  assert float(metrics["loss_nll"]) < 0.8 * first
  with pytest.raises(ValueError, match="pairing='reference'"):
    m.images({"image": x})
