"""Convolution that XLA:CPU differentiates quickly (the encoder-side twin of conv_transpose).

Why: XLA:CPU can compute the *kernel gradient* of ``lax.conv_general_dilated`` very slowly
on some CPUs, and every conv layer of every encoder, discriminator and classifier pays it
once per train step. :func:`resolve_impl` says which layers keep the native op (the
measurements behind the rule: README, "Speed").

``'im2col'`` computes exactly the same function as ``flax.linen.Conv`` as one GEMM over
the ``kh*kw`` shifted, strided views of the padded input (concatenated on the channel
axis in the kernel's (kh, kw, in) order). Its kernel gradient is then a GEMM too, the
input gradient a sum of padded slices; forward, ``jax.grad``, ``jax.jvp`` and grad-of-jvp
all use JAX's native rules (no ``custom_vjp``). The price is the ``kh*kw``-times larger
patch tensor, so on accelerators (cuDNN / TPU convolutions have fast backward passes)
``'auto'`` keeps the native conv, and on CPU it does for stride-1 layers.

``'winograd'`` (2-D, stride 1, kernels up to 5x5) evaluates the same convolution by
F(4x4, k) Winograd tiles (:mod:`djax.nn.winograd`): 4-6.25x fewer multiplications, equal
to float32 rounding (~1e-5 relative). On CPU ``'auto'`` takes it for the wide stride-1
layers where it was measured to win (:func:`resolve_impl`).
Figures: ``python -m benchmarks.conv_transpose --conv``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from flax.typing import Array, Dtype, Initializer, PrecisionLike
from jax import lax

from djax.nn import winograd

__all__ = ["Conv", "conv", "resolve_impl"]

_IMPLS = ("auto", "im2col", "native", "winograd")

# 'auto' takes Winograd for layers with at least this much work per example (multiplies of
# the direct convolution) whose transforms pay (_winograd_gain): measured, see resolve_impl.
WINOGRAD_MIN_MACS = 8e6
WINOGRAD_MIN_GAIN = 150.0
WINOGRAD_TILE = 4


def _winograd_gain(in_spatial, kernel_size, pads, channels) -> float:
  """Multiplications F(4×4, k) saves per output pixel, weighted by C·O/(C+O): the GEMM work
  scales with C·O and the tile transforms with C + O. Tiles that overhang the output count
  as work (an 8×8 map has no overhang, a 6×6 one 78 %). 0 for layers under
  ``WINOGRAD_MIN_MACS`` multiplies per example."""
  (hi, wi), (kh, kw), (cin, cout) = in_spatial, kernel_size, channels
  out_h, out_w = hi + sum(pads[0]) - kh + 1, wi + sum(pads[1]) - kw + 1
  if out_h * out_w * cin * cout * kh * kw < WINOGRAD_MIN_MACS:
    return 0.0  # fixed costs dominate small layers
  t = WINOGRAD_TILE
  tiles = -(-out_h // t) * -(-out_w // t)
  wino = tiles * (t + kh - 1) * (t + kw - 1) / (out_h * out_w)
  return cin * cout / (cin + cout) * (kh * kw - wino)


def resolve_impl(impl: str, strides: Sequence[int] | None = None,
                 in_spatial: Sequence[int] | None = None,
                 kernel_size: Sequence[int] | None = None,
                 channels: tuple[int, int] | None = None,
                 pads: Sequence[tuple[int, int]] | None = None) -> str:
  """Maps 'auto' to a concrete implementation (at trace time).

  Off CPU (``jax.default_backend()``): 'native'. On CPU, for stride-1 convolutions with a
  kernel larger than 1x1 and an input at least kernel-sized: 'winograd' for 2-D layers with
  3x3..5x5 kernels whose channel counts make it pay (:func:`_winograd_gain` at least
  ``WINOGRAD_MIN_GAIN``; needs ``channels`` and ``pads``), else 'native' (the rule
  ``conv_transpose.resolve_impl`` applies to its stride-1 layers); 'im2col' for every other
  layer, and without shape information. Winograd loses where the work is small or the input
  has 3 channels, and a decoder's small maps make its transformed kernel dominate, hence the
  gain threshold; strided and 1x1 layers gain most from im2col's GEMMs. The per-layer
  figures behind this rule are in README's speed section (``python -m benchmarks.
  conv_transpose --conv`` measures them). On a CPU whose native kernel gradients are slow
  everywhere, pass ``impl='im2col'`` (``SpecNet(conv_impl='im2col')``).
  """
  if impl not in _IMPLS:
    raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "native"
  if strides is not None and in_spatial is not None and kernel_size is not None:
    if (all(s == 1 for s in strides) and any(k > 1 for k in kernel_size)
        and all(n >= k for n, k in zip(in_spatial, kernel_size))):
      if (channels is not None and pads is not None and len(kernel_size) == 2
          and all(3 <= k <= 5 for k in kernel_size) and all(p >= 0 for pp in pads for p in pp)
          and _winograd_gain(in_spatial, kernel_size, pads, channels) >= WINOGRAD_MIN_GAIN):
        return "winograd"
      return "native"
  return "im2col"


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
  # lax.padtype_to_pads('SAME'): output ceil(n/s), the odd pixel of padding goes last.
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def _pads(padding, spatial: Sequence[int], ks: Sequence[int], ss: Sequence[int]):
  if padding == "SAME":
    return [_same_pads(n, k, s) for n, k, s in zip(spatial, ks, ss)]
  if padding == "VALID":
    return [(0, 0)] * len(spatial)
  if isinstance(padding, int):
    return [(padding, padding)] * len(spatial)
  pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  if len(pads) != len(spatial):
    raise ValueError(f"padding {padding!r} does not match {len(spatial)} spatial dims")
  return pads


def conv(x, kernel, strides: Sequence[int], padding="SAME", impl: str = "auto",
         precision: PrecisionLike = None):
  """``lax.conv_general_dilated`` in NHWC/HWIO layout (no dilation, no groups)."""
  nsp = x.ndim - 2
  ks = kernel.shape[:nsp]
  pads = _pads(padding, x.shape[1:1 + nsp], ks, strides)
  impl = resolve_impl(impl, strides, x.shape[1:1 + nsp], ks, kernel.shape[-2:], pads)
  if impl == "winograd":
    if nsp != 2 or any(s != 1 for s in strides):
      raise ValueError(f"impl='winograd' needs a 2-D stride-1 convolution, got {nsp}-D with "
                       f"strides {tuple(strides)}; use 'auto'")
    return winograd.conv2d(x, kernel, pads, WINOGRAD_TILE, precision)
  if impl == "native":
    spatial = "HWD"[:nsp]
    return lax.conv_general_dilated(
        x, kernel, tuple(strides), pads, precision=precision,
        dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads]
              + [(0, 0, 0)])
  padded = x.shape[1:1 + nsp]
  outs = [(n - k) // s + 1 for n, k, s in zip(padded, ks, strides)]
  if any(o <= 0 for o in outs):
    raise ValueError(f"conv output would be empty: input {x.shape}, kernel {ks}")
  views = []
  # Row-major over the taps: the order of kernel.reshape(-1, out)'s rows.
  for taps in itertools.product(*map(range, ks)):
    start = (0,) + tuple(taps) + (0,)
    limit = (x.shape[0],) + tuple(t + (o - 1) * s + 1 for t, o, s in zip(taps, outs, strides)) \
        + (x.shape[-1],)
    views.append(lax.slice(x, start, limit, (1,) + tuple(strides) + (1,)))
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  w = kernel.reshape(-1, kernel.shape[-1])
  # A 2-D matmul, so that the kernel gradient is one plain GEMM (see conv_transpose._col2im).
  y = lax.dot_general(patches.reshape(-1, w.shape[0]), w, (((1,), (0,)), ((), ())),
                      precision=precision)
  return y.reshape(patches.shape[:-1] + (w.shape[1],))


class Conv(nn.Module):
  """Drop-in for ``flax.linen.Conv`` (same fields used by djax, same parameter tree:
  ``kernel`` (kh, kw, in, out) and ``bias`` (out,)), fast to differentiate on XLA:CPU."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | int | Sequence = "SAME"
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, inputs: Array | Sequence[Array]) -> Array:
    """``inputs``: one NHWC array, or a sequence of arrays that together are its channels.

    The sequence form computes the same convolution of their concatenation, as a sum of
    convolutions with the matching slices of one kernel (same parameters). Autodiff then
    forms no input gradient for the parts that need none: the chunk classifier of Hu et al.
    reads (x1, x2, x3), and only x3 carries a gradient.
    """
    parts = [inputs] if not isinstance(inputs, (list, tuple)) else list(inputs)
    if not parts or any(p.shape[:-1] != parts[0].shape[:-1] for p in parts):
      raise ValueError(f"Conv: channel parts must share batch and spatial dims, got "
                       f"{[p.shape for p in parts]}")
    ks = tuple(self.kernel_size)
    strides = tuple(self.strides) if self.strides is not None else (1,) * len(ks)
    in_features = sum(p.shape[-1] for p in parts)
    kernel = self.param("kernel", self.kernel_init, ks + (in_features, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) \
        if self.use_bias else None
    *parts, kernel, bias = promote_dtype(*parts, kernel, bias, dtype=self.dtype)
    y, start = None, 0
    for part in parts:
      c = part.shape[-1]
      k = kernel if len(parts) == 1 else lax.slice_in_dim(kernel, start, start + c, axis=-2)
      term = conv(part, k, strides, self.padding, self.impl, self.precision)
      y = term if y is None else y + term
      start += c
    if bias is not None:
      y = y + bias
    return y
