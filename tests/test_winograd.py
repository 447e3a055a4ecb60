"""djax.nn.winograd: the Toom-Cook matrices satisfy Winograd's identity exactly, and a
Winograd convolution is the convolution, to float32 rounding, at realistic sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from djax.nn import winograd


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (4, 5), (2, 5), (4, 2), (6, 3), (1, 3), (3, 1)])
def test_transform_is_the_correlation(m, r):
  """Aᵀ[(G g) ⊙ (Bᵀ d)] = Σ_k g_k d_{i+k} for every g, d: as bilinear forms, the tensor
  T[i, k, u] = Σ_t Aᵀ[i, t] G[t, k] Bᵀ[t, u] must be [u == i + k]."""
  at, g, bt = winograd.matrices(m, r)
  alpha = m + r - 1
  assert at.shape == (m, alpha) and g.shape == (alpha, r) and bt.shape == (alpha, alpha)
  tensor = np.einsum("it,tk,tu->iku", at, g, bt)
  want = np.zeros((m, r, alpha))
  for i in range(m):
    for k in range(r):
      want[i, k, i + k] = 1.0
  np.testing.assert_allclose(tensor, want, atol=1e-12)


@pytest.mark.parametrize("k,hw,cin,cout", [(3, (8, 8), 64, 48), (5, (16, 13), 24, 40)])
def test_error_is_float32_rounding(k, hw, cin, cout):
  """Against a float64 convolution: relative error ~1e-5 at most (the direct float32 conv
  gets ~1e-6); a wrong tap or transform entry would be off by O(1)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, *hw, cin))
  w = rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)
  pads = ((k // 2, k // 2),) * 2
  want = _conv64(x, w, k)
  got = np.asarray(jax.jit(lambda x, w: winograd.conv2d(x, w, pads))(
      jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)))
  scale = np.max(np.abs(want))
  assert np.max(np.abs(got - want)) / scale < 3e-5
  assert np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2)) < 1e-5


def _conv64(x, w, k):
  p = k // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  h, wd = x.shape[1:3]
  return sum(np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd], w[i, j])
             for i in range(k) for j in range(k))


def test_bad_input_is_named():
  x, w = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match="non-negative padding"):
    winograd.conv2d(x, w, ((-1, 0), (0, 0)))
  with pytest.raises(ValueError, match="NHWC"):
    winograd.conv2d(x[0], w, ((1, 1), (1, 1)))
  with pytest.raises(ValueError, match="empty"):
    winograd.conv2d(x[:, :1], w, ((0, 0), (1, 1)))
  with pytest.raises(ValueError, match="no Winograd transform"):
    winograd.matrices(8, 7)
