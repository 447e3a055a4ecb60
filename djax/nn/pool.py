"""Max pooling whose backward pass XLA:CPU runs fast.

Why: ``flax.linen.max_pool`` is one ``reduce_window``; its gradient is a
``select_and_scatter``, which XLA:CPU expands into iota/compare/scatter loops over
the whole padded input. In the AlexNet chunk classifier of Hu et al. (three 3x3/2
pools, batch 64) that backward pass took 194 ms against 4-8 ms forward
(``python -m benchmarks.conv_transpose --pool``).

``'separable'`` computes the same function as a max over the window's columns, then
over its rows: per axis, ``k`` strided slices of the ``-inf``-padded input combined
by ``where(v > m, v, m)``. Its gradient is a chain of selects and the transposes of
slices (pads), all cheap elementwise work; ``jax.jvp`` and grad-of-jvp use JAX's
native rules (no ``custom_vjp``).

Ties: ``where(v > m, ...)`` keeps the earlier maximum, and reducing the width axis
before the height axis makes "earlier" mean row-major window order. That is the
element XLA's ``select_and_scatter`` routes the gradient to, so values *and* gradients
equal flax's, ties included (tested). The jvp follows the same element; flax's
``reduce_window`` jvp can take another tied element than its own gradient does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from djax.nn.conv import _same_pads

__all__ = ["max_pool", "resolve_impl"]

_IMPLS = ("auto", "separable", "native")


def resolve_impl(impl: str) -> str:
  """'auto' -> 'separable' on CPU (``jax.default_backend()``), 'native' elsewhere: GPU and
  TPU have fast select-and-scatter kernels and nothing was measured there."""
  if impl not in _IMPLS:
    raise ValueError(f"pool impl must be one of {_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "separable" if jax.default_backend() == "cpu" else "native"


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "SAME", impl: str = "auto") -> jax.Array:
  """``flax.linen.max_pool(x, window, strides, padding)`` for NHWC (or N + any spatial
  dims + C) inputs, padding 'SAME' or 'VALID'."""
  window = tuple(window)
  strides = tuple(strides) if strides is not None else (1,) * len(window)
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"max_pool padding must be 'SAME' or 'VALID', got {padding!r}")
  if len(window) != x.ndim - 2 or len(strides) != len(window):
    raise ValueError(f"max_pool window {window} / strides {strides} do not match input "
                     f"{x.shape} (expected {x.ndim - 2} spatial dims)")
  if resolve_impl(impl) == "native":
    return nn.max_pool(x, window, strides, padding=padding)
  neg_inf = jnp.array(-jnp.inf, x.dtype)
  # Last spatial axis first: ties then resolve in row-major window order, as in XLA.
  for d in reversed(range(len(window))):
    axis, n, k, s = 1 + d, x.shape[1 + d], window[d], strides[d]
    lo, hi = _same_pads(n, k, s) if padding == "SAME" else (0, 0)
    if lo or hi:
      cfg = [(0, 0, 0)] * x.ndim
      cfg[axis] = (lo, hi, 0)
      x = lax.pad(x, neg_inf, cfg)
    out = (x.shape[axis] - k) // s + 1
    if out <= 0:
      raise ValueError(f"max_pool window {k} is larger than the padded input {x.shape[axis]}")
    m = None
    for t in range(k):
      v = lax.slice_in_dim(x, t, t + (out - 1) * s + 1, s, axis)
      m = v if m is None else jnp.where(v > m, v, m)
    x = m
  return x
