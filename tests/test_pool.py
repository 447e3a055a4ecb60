"""djax.nn.pool.max_pool must compute what flax.linen.max_pool computes: values, gradients
(ties included: the gradient goes to the same element of the window), jvp, grad-of-jvp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from djax.nn.pool import max_pool, resolve_impl

# (window, strides, padding, (H, W))
CASES = [
    ((3, 3), (2, 2), "SAME", (8, 8)),   # the chunk classifier's pool
    ((3, 3), (2, 2), "SAME", (7, 9)),   # odd sizes: SAME pads at both ends
    ((2, 2), (2, 2), "VALID", (6, 6)),
    ((3, 2), (1, 2), "SAME", (5, 6)),   # anisotropic
    ((3, 3), (2, 2), "SAME", (1, 1)),   # window larger than the input
]


def _inputs(hw, quantised: bool, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, *hw, 3))
  if quantised:  # many equal values in every window: the tie rule decides the gradient
    x = np.round(x)
  return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("quantised", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_separable_matches_flax_values_grads_jvp(case, quantised):
  window, strides, padding, hw = case
  x = _inputs(hw, quantised)
  tx = _inputs(hw, False, seed=1)
  ref = lambda x: nn.max_pool(x, window, strides, padding=padding)
  mine = lambda x: max_pool(x, window, strides, padding, impl="separable")

  def both(x, tx):
    out = {}
    for name, f in (("ref", ref), ("mine", mine)):
      y = f(x)
      # position-dependent weights: a gradient routed to the wrong tie would show
      w = jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)
      g = jax.grad(lambda x: jnp.sum(w * f(x)))(x)
      _, dy = jax.jvp(f, (x,), (tx,))
      gj = jax.grad(lambda t: jnp.sum(w * jax.jvp(f, (x,), (t,))[1] ** 2))(tx)
      out[name] = {"y": y, "grad": g, "jvp": dy, "grad_of_jvp": gj,
                   "adjoint": (jnp.sum(w * dy), jnp.sum(g * tx))}
    return out

  out = jax.jit(both)(x, tx)
  ref_out, mine_out = out["ref"], out["mine"]
  np.testing.assert_array_equal(np.asarray(mine_out["y"]), np.asarray(ref_out["y"]))
  np.testing.assert_array_equal(np.asarray(mine_out["grad"]), np.asarray(ref_out["grad"]))
  # The jvp picks the element the gradient goes to: <w, J t> == <J^T w, t>.
  np.testing.assert_allclose(*map(float, mine_out["adjoint"]), rtol=1e-5)
  if not quantised:
    np.testing.assert_array_equal(np.asarray(mine_out["jvp"]), np.asarray(ref_out["jvp"]))
    np.testing.assert_allclose(np.asarray(mine_out["grad_of_jvp"]),
                               np.asarray(ref_out["grad_of_jvp"]), rtol=1e-6)
  # With ties, flax's reduce_window jvp may take another tied element than its own
  # gradient does (its adjoint identity fails), so only ours is checked there.


def test_auto_and_errors():
  assert resolve_impl("auto") == ("separable" if jax.default_backend() == "cpu" else "native")
  assert resolve_impl("native") == "native"
  with pytest.raises(ValueError, match="pool impl must be one of"):
    resolve_impl("avg")
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="padding"):
    max_pool(x, (3, 3), (2, 2), "CIRCULAR")
  with pytest.raises(ValueError, match="spatial dims"):
    max_pool(x, (3,), (2,))


def test_specnet_pools_through_it():
  """SpecNet's 'p' layer gives flax's max_pool result under either impl."""
  from djax.nn.spec import SpecNet
  x = _inputs((8, 8), quantised=True)
  outs = []
  for impl in ("native", "separable"):
    net = SpecNet("c4k3-p-f", out_features=2, norm="none", pool_impl=impl)
    params = net.init(jax.random.PRNGKey(0), x)
    outs.append(jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, x) ** 2)))(params))
  chex.assert_trees_all_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
