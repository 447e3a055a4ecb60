"""djax.nn.conv.Conv must compute what flax.linen.Conv computes: outputs, gradients, jvp,
grad-of-jvp, and the same parameter tree. Each case jits one function evaluating both."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from djax.nn.conv import Conv, _winograd_gain, conv, resolve_impl

# (kernel, strides, padding, (H, W), C_in, C_out)
CASES = [
    (3, 2, "SAME", (7, 6), 3, 4),   # odd input: SAME pads the extra pixel at the end
    (3, 1, "SAME", (5, 5), 2, 3),
    (2, 2, "SAME", (4, 5), 2, 3),   # even kernel
    (8, 2, "SAME", (9, 9), 2, 2),   # kernel larger than the stride and the padding
    (5, 1, "VALID", (6, 7), 2, 2),
    (1, 1, "SAME", (3, 3), 4, 2),   # 1x1
    ((3, 2), (2, 1), "SAME", (5, 4), 2, 3),  # anisotropic
    (3, 2, ((1, 0), (2, 1)), (5, 5), 2, 2),  # explicit padding
    (2, 1, "SAME", (1, 1), 3, 2),   # input smaller than the kernel
]


def _id(c):
  k, s, p, hw, ci, co = c
  return f"k{k}-s{s}-{p}-{hw[0]}x{hw[1]}-{ci}to{co}"


def _setup(case, seed=0, impl="im2col"):
  k, s, p, (h, w), ci, co = case
  rng = np.random.default_rng(seed)
  normal = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  ks = k if isinstance(k, tuple) else (k, k)
  st = s if isinstance(s, tuple) else (s, s)
  ref = nn.Conv(co, ks, st, p)
  mine = Conv(co, ks, st, p, impl=impl)
  params = {"params": {"kernel": normal(ks + (ci, co)) / np.sqrt(ci * np.prod(ks)),
                       "bias": normal((co,))}}
  return ref, mine, params, normal((2, h, w, ci)), normal


# Stride-1 2-D cases for impl='winograd' (F(4x4, k) tiles): maps that are and are not whole
# tiles, k3 and k5, VALID and explicit padding, a rectangular kernel, an input below a tile.
WINOGRAD_CASES = [
    (3, 1, "SAME", (8, 8), 3, 4),
    (3, 1, "SAME", (7, 6), 2, 3),
    (5, 1, "SAME", (9, 10), 2, 3),
    (5, 1, "VALID", (9, 9), 2, 2),
    ((3, 5), 1, ((0, 2), (1, 1)), (6, 7), 2, 2),
    (3, 1, "SAME", (2, 3), 2, 2),
    (2, 1, "SAME", (5, 5), 3, 2),   # even kernel: SAME pads the extra pixel at the end
]


@pytest.mark.parametrize("case,impl", [(c, "im2col") for c in CASES]
                         + [(c, "winograd") for c in WINOGRAD_CASES],
                         ids=[f"im2col-{_id(c)}" for c in CASES]
                         + [f"winograd-{_id(c)}" for c in WINOGRAD_CASES])
def test_forward_grad_jvp_match_flax(case, impl):
  ref, mine, params, x, normal = _setup(case, impl=impl)
  tp = jax.tree_util.tree_map(lambda a: normal(a.shape), params)
  tx = normal(x.shape)

  def both(params, x, tp, tx):
    out = {}
    for name, m in (("ref", ref), ("mine", mine)):
      f = lambda p, x: m.apply(p, x)
      y = f(params, x)
      loss = lambda p, x: jnp.sum(jnp.sin(f(p, x)))
      g = jax.grad(loss, argnums=(0, 1))(params, x)
      _, dy = jax.jvp(f, (params, x), (tp, tx))
      # grad of a jvp: what the Jacobian-supervision losses differentiate
      gj = jax.grad(lambda p: jnp.sum(jax.jvp(lambda x: f(p, x), (x,), (tx,))[1] ** 2))(params)
      out[name] = (y, g, dy, gj)
    return out

  out = jax.jit(both)(params, x, tp, tx)
  chex.assert_trees_all_close(out["mine"], out["ref"], rtol=2e-4, atol=2e-4)


def test_param_tree_and_init_match_flax():
  x = jnp.ones((1, 6, 6, 3))
  ref = nn.Conv(5, (3, 3), (2, 2)).init(jax.random.PRNGKey(0), x)
  mine = Conv(5, (3, 3), (2, 2)).init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal(mine, ref)  # structure, shapes, dtypes and values
  no_bias = Conv(5, (3, 3), use_bias=False).init(jax.random.PRNGKey(0), x)
  assert set(no_bias["params"]) == {"kernel"}


def test_native_path_and_auto():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 2)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
  f = jax.jit(lambda x, w: (conv(x, w, (2, 2), "SAME", "native"),
                            conv(x, w, (2, 2), "SAME", "im2col")))
  a, b = f(x, w)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  assert resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "native")
  with pytest.raises(ValueError, match="impl must be one of"):
    resolve_impl("fft")
  with pytest.raises(ValueError, match="needs a 2-D stride-1"):
    conv(x, w, (2, 2), "SAME", "winograd")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU choice of 'auto'")
def test_auto_keeps_native_for_stride_one_kernels_only():
  # (strides, input H x W, kernel): the measured split of benchmarks.conv_transpose --conv
  assert resolve_impl("auto", (1, 1), (16, 16), (5, 5)) == "native"
  assert resolve_impl("auto", (1, 1), (4, 4), (2, 2)) == "native"
  assert resolve_impl("auto", (2, 2), (64, 64), (8, 8)) == "im2col"
  assert resolve_impl("auto", (2, 1), (16, 16), (3, 3)) == "im2col"
  assert resolve_impl("auto", (1, 1), (8, 8), (1, 1)) == "im2col"  # 1x1: one GEMM
  assert resolve_impl("auto", (1, 1), (1, 1), (2, 2)) == "im2col"  # input below the kernel
  for impl in ("im2col", "native", "winograd"):
    assert resolve_impl(impl, (1, 1), (16, 16), (5, 5)) == impl


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU choice of 'auto'")
def test_auto_takes_winograd_where_channels_pay_for_the_transforms():
  same = lambda k: ((k // 2, k // 2),) * 2
  # The chunk classifier of Hu et al. (paper config): conv2 (k5) and conv3-5 (k3).
  assert resolve_impl("auto", (1, 1), (16, 16), (5, 5), (96, 256), same(5)) == "winograd"
  assert resolve_impl("auto", (1, 1), (8, 8), (3, 3), (256, 384), same(3)) == "winograd"
  assert resolve_impl("auto", (1, 1), (8, 8), (3, 3), (384, 256), same(3)) == "winograd"
  # Lezama's SVHN encoder and a narrow k5 layer: measured wins too.
  assert resolve_impl("auto", (1, 1), (8, 8), (3, 3), (128, 256), same(3)) == "winograd"
  assert resolve_impl("auto", (1, 1), (16, 16), (5, 5), (32, 64), same(5)) == "winograd"
  # Measured to lose: little work per example, or 3 input channels.
  assert resolve_impl("auto", (1, 1), (8, 8), (3, 3), (48, 96), same(3)) == "native"
  assert resolve_impl("auto", (1, 1), (4, 4), (3, 3), (256, 64), same(3)) == "native"
  assert resolve_impl("auto", (1, 1), (32, 32), (3, 3), (3, 64), same(3)) == "native"
  # Not Winograd's shape: strided, 1x1, 7x7, 1-D, 3-D; no channel information.
  assert resolve_impl("auto", (2, 2), (16, 16), (3, 3), (512, 512), same(3)) == "im2col"
  assert resolve_impl("auto", (1, 1), (8, 8), (1, 1), (512, 512), ((0, 0),) * 2) == "im2col"
  assert resolve_impl("auto", (1, 1), (16, 16), (7, 7), (512, 512), same(7)) == "native"
  assert resolve_impl("auto", (1,), (16,), (3,), (512, 512), ((1, 1),)) == "native"
  assert resolve_impl("auto", (1, 1, 1), (8, 8, 8), (3, 3, 3), (512, 512),
                      ((1, 1),) * 3) == "native"
  assert resolve_impl("auto", (1, 1), (8, 8), (3, 3)) == "native"
  # Channels too few for the transforms to pay: k3 32x32x64->64 won (104 vs 122 ms).
  assert resolve_impl("auto", (1, 1), (32, 32), (3, 3), (64, 64), same(3)) == "winograd"
  assert resolve_impl("auto", (1, 1), (32, 32), (3, 3), (40, 40), same(3)) == "native"
  # A map that wastes most of its last tile row and column gains less.
  assert (_winograd_gain((5, 5), (3, 3), same(3), (256, 384))
          < 0.5 * _winograd_gain((8, 8), (3, 3), same(3), (256, 384)))


def test_auto_conv_matches_both_paths_under_jit():
  """The stride-1 layer that 'auto' sends to the native op and the strided one it sends
  to im2col both give flax's outputs and gradients."""
  rng = np.random.default_rng(2)
  for k, s in ((3, 1), (3, 2)):
    ref, mine = nn.Conv(4, (k, k), (s, s)), Conv(4, (k, k), (s, s))
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    params = ref.init(jax.random.PRNGKey(0), x)
    loss = lambda m: jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))
    a, b = jax.jit(loss(ref))(params, x), jax.jit(loss(mine))(params, x)
    chex.assert_trees_all_close(b, a, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("impl", ["im2col", "native"])
def test_channel_parts_equal_the_concatenation(impl):
  """Conv((a, b)) is Conv(concat(a, b)) with the same parameters: outputs and gradients."""
  rng = np.random.default_rng(3)
  a = jnp.asarray(rng.normal(size=(2, 9, 9, 6)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2, 9, 9, 3)), jnp.float32)
  m = Conv(4, (8, 8), (2, 2), impl=impl)
  params = m.init(jax.random.PRNGKey(0), jnp.concatenate([a, b], -1))
  assert params["params"]["kernel"].shape == (8, 8, 9, 4)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      m.init(jax.random.PRNGKey(0), (a, b)))
  loss_cat = lambda p, b: jnp.sum(jnp.sin(m.apply(p, jnp.concatenate([a, b], -1))))
  loss_parts = lambda p, b: jnp.sum(jnp.sin(m.apply(p, (a, b))))
  got = jax.jit(jax.value_and_grad(loss_parts, argnums=(0, 1)))(params, b)
  want = jax.jit(jax.value_and_grad(loss_cat, argnums=(0, 1)))(params, b)
  chex.assert_trees_all_close(got, want, rtol=2e-4, atol=2e-4)
  with pytest.raises(ValueError, match="share batch and spatial"):
    m.apply(params, (a, b[:, :8]))
