"""Spectral normalisation: σ against np.linalg.svd, u updated in train mode only."""

import jax
import jax.numpy as jnp
import numpy as np

from djax.nn import spectral_norm as sn


def _top_singular(m):
  return np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0]


def test_power_iteration_converges_to_the_largest_singular_value():
  w = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
  u0 = sn.l2_normalize(jnp.ones((5,)))
  _, _, sigma = sn.power_iteration(jnp.asarray(w), u0, n_steps=100)
  np.testing.assert_allclose(float(sigma), _top_singular(w), rtol=1e-4)
  # σ's gradient (u, v constant) is v uᵀ: the outer product of the top singular vectors.
  g = jax.grad(lambda m: sn.power_iteration(m, u0, 100)[2])(jnp.asarray(w))
  left, _, right = np.linalg.svd(w)
  np.testing.assert_allclose(np.abs(np.asarray(g)), np.abs(np.outer(left[:, 0], right[0])),
                             atol=1e-3)


def _train_calls(module, variables, x, n):
  for _ in range(n):
    _, new = module.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {**variables, "batch_stats": new["batch_stats"]}
  return variables


def test_dense_divides_by_sigma_after_training_calls_and_eval_leaves_u():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6)), jnp.float32)
  layer = sn.SNDense(4, use_bias=False)
  variables = layer.init(jax.random.PRNGKey(0), x)
  kernel = np.asarray(variables["params"]["kernel"])
  variables = _train_calls(layer, variables, x, 60)  # one power step per training call
  y = layer.apply(variables, x, train=False)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x) @ kernel / _top_singular(kernel),
                             rtol=1e-4, atol=1e-5)
  u = variables["batch_stats"]["sn"]["u"]
  # Eval mode: the stored u is used as is (and nothing is returned to store).
  y2, state = layer.apply(variables, x, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(np.asarray(state["batch_stats"]["sn"]["u"]), np.asarray(u))
  np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))
  # Train mode moves u (here by round-off only: it has converged) and returns it.
  fresh = layer.init(jax.random.PRNGKey(0), x)
  _, state = layer.apply(fresh, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(state["batch_stats"]["sn"]["u"], fresh["batch_stats"]["sn"]["u"])


def test_conv_normalises_the_reshaped_kernel_and_embed_the_table():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 3)), jnp.float32)
  layer = sn.SNConv(5, (3, 3), (2, 2), use_bias=False, n_power_iterations=50)
  variables = layer.init(jax.random.PRNGKey(1), x)
  kernel = np.asarray(variables["params"]["kernel"])
  _, state = layer.apply(variables, x, train=True, mutable=["batch_stats"])
  y = layer.apply({**variables, **state}, x, train=False)
  sigma = _top_singular(kernel.reshape(-1, 5))
  want = jax.lax.conv_general_dilated(x, jnp.asarray(kernel / sigma), (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-4, atol=1e-5)

  emb = sn.SNEmbed(4, 3, n_power_iterations=50)
  labels = jnp.array([0, 3, 1])
  v = emb.init(jax.random.PRNGKey(2), labels)
  _, state = emb.apply(v, labels, train=True, mutable=["batch_stats"])
  out = emb.apply({**v, **state}, labels, train=False)
  table = np.asarray(v["params"]["embedding"])
  np.testing.assert_allclose(np.asarray(out), table[[0, 3, 1]] / _top_singular(table),
                             rtol=1e-4, atol=1e-5)
