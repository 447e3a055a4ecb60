"""Winograd minimal filtering: stride-1 2-D convolutions with fewer multiplications.

Why: on XLA:CPU a convolution's forward pass, input gradient and kernel gradient are each
one GEMM-sized amount of work, and those GEMMs already run near the CPU's peak (measured:
XLA's and PyTorch's matmuls are equally fast). The only way left to make them faster is to
do fewer multiplications. Winograd's F(m×m, r×r) (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks") computes an m×m output tile of an r×r correlation with
(m + r − 1)² multiplications per channel pair instead of m²r²: 4x fewer for F(4×4, 3×3),
6.25x fewer for F(4×4, 5×5). The tile transforms are small, memory-bound matmuls.

The result is the same linear function of (x, kernel) as ``lax.conv_general_dilated``,
evaluated in another order, so it agrees to float32 rounding (relative error ~1e-5, ten
times a direct float32 convolution's; tested), and it is built from pads, reshapes,
contiguous slices and matmuls: ``jax.grad``, ``jax.jvp`` and grad-of-jvp use JAX's own
rules (no ``custom_vjp``). Its transposes are Winograd-shaped too: the input and kernel
gradients are batched matmuls of the same reduced size.

The tile transforms are matmuls with Kronecker products of the small constant matrices,
over tiles cut from whole blocks (:func:`_tiles`). Cutting them with one strided slice per
window offset and transforming with scalar multiply-adds computed the same thing, but the
slices' transposes (interior-padded, input-sized pads, one per offset) cost 1.25 s per mixing
step: 0.8 s slower than no Winograd at all.

Transforms (per spatial axis; 2-D applies them on both axes). With α = m + r − 1 and
evaluation points p_0..p_{α−2} plus ∞ (Toom–Cook), let E_n be the α×n matrix whose row t
is (1, p_t, .., p_t^{n−1}) (the ∞ row: (0, .., 0, 1)), and V = E_α. Polynomial product
s = g·h is V⁻¹((E_r g) ⊙ (E_m h)); correlation is its transpose in h, so

    y = E_mᵀ [(E_r g) ⊙ (V⁻ᵀ d)],    i.e.  Aᵀ = E_mᵀ,  G = E_r,  Bᵀ = V⁻ᵀ,

and in 2-D  Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A over each α×α input tile d. The matrices are
derived in exact rational arithmetic and rounded once to float32. Points 0, ±1, ±2, ±1/2
are the usual choice (small entries, small rounding error).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["matrices", "conv2d"]

# Finite evaluation points, in the order they are taken: the first α − 1 are used (α ≤ 8,
# which F(4×4, 5×5) reaches; larger points would cost float32 accuracy).
_POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2),
           Fraction(1, 2), Fraction(-1, 2))


def _evaluation(points, n: int) -> list[list[Fraction]]:
  return [[p ** j for j in range(n)] for p in points] + [[Fraction(0)] * (n - 1) + [Fraction(1)]]


def _inverse(rows: list[list[Fraction]]) -> list[list[Fraction]]:
  n = len(rows)
  a = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
  for c in range(n):
    p = next(r for r in range(c, n) if a[r][c] != 0)
    a[c], a[p] = a[p], a[c]
    a[c] = [v / a[c][c] for v in a[c]]
    for r in range(n):
      if r != c and a[r][c] != 0:
        f = a[r][c]
        a[r] = [u - f * v for u, v in zip(a[r], a[c])]
  return [row[n:] for row in a]


@functools.lru_cache(maxsize=None)
def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(Aᵀ [m, α], G [α, r], Bᵀ [α, α]) of F(m, r), float64: y = Aᵀ[(G g) ⊙ (Bᵀ d)]."""
  alpha = m + r - 1
  if m < 1 or r < 1 or alpha - 1 > len(_POINTS):
    raise ValueError(f"no Winograd transform F({m}, {r}) with {len(_POINTS)} points")
  points = _POINTS[:alpha - 1]
  at = np.array(_evaluation(points, m), dtype=np.float64).T
  g = np.array(_evaluation(points, r), dtype=np.float64)
  bt = np.array(_inverse(_evaluation(points, alpha)), dtype=np.float64).T
  return at, g, bt


def _kron(a: np.ndarray, b: np.ndarray, dtype):
  """a ⊗ b as [a rows, b rows, a cols, b cols]: one transform for both spatial axes."""
  return jnp.asarray(np.einsum("ab,cd->acbd", a, b), dtype)


def _tiles(x, axis: int, tile: int, tiles: int, alpha: int):
  """The ``tiles`` overlapping windows x[t·tile : t·tile + alpha] along ``axis``, as a new
  axis after it: [.., tiles, alpha, ..]. Cut as whole blocks of ``tile`` (a reshape) and
  two contiguous slices, so the transpose is two pads and an add rather than one
  interior-padded, input-sized pad per window offset."""
  cfg = [(0, 0, 0)] * x.ndim
  cfg[axis] = (0, (tiles + 1) * tile - x.shape[axis], 0)  # alpha <= 2·tile: two blocks hold it
  x = lax.pad(x, jnp.zeros((), x.dtype), cfg)
  blocks = x.reshape(x.shape[:axis] + (tiles + 1, tile) + x.shape[axis + 1:])
  pair = jnp.concatenate([lax.slice_in_dim(blocks, 0, tiles, axis=axis),
                          lax.slice_in_dim(blocks, 1, tiles + 1, axis=axis)], axis=axis + 1)
  return lax.slice_in_dim(pair, 0, alpha, axis=axis + 1)


def conv2d(x, kernel, pads: Sequence[tuple[int, int]], tile: int = 4, precision=None):
  """Stride-1 correlation of NHWC ``x`` with an HWIO ``kernel`` and explicit non-negative
  ``pads`` ((top, bottom), (left, right)): the function ``lax.conv_general_dilated`` computes,
  by F(tile×tile, kh×kw) Winograd tiles."""
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"winograd.conv2d takes NHWC x and HWIO kernel, got {x.shape}, "
                     f"{kernel.shape}")
  if any(p < 0 for pair in pads for p in pair):
    raise ValueError(f"winograd.conv2d takes non-negative padding, got {pads}")
  n, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  out_h, out_w = h + sum(pads[0]) - kh + 1, w + sum(pads[1]) - kw + 1
  if out_h <= 0 or out_w <= 0:
    raise ValueError(f"conv output would be empty: input {x.shape}, kernel {kernel.shape}")
  if max(kh, kw) > tile + 1:
    raise ValueError(f"winograd.conv2d: kernel {kh}x{kw} is larger than tile + 1 = {tile + 1}")
  at_h, g_h, bt_h = matrices(tile, kh)
  at_w, g_w, bt_w = matrices(tile, kw)
  a_h, a_w = tile + kh - 1, tile + kw - 1
  th, tw = -(-out_h // tile), -(-out_w // tile)
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (pads[0][0], pads[0][1], 0),
                                         (pads[1][0], pads[1][1], 0), (0, 0, 0)])
  d = _tiles(_tiles(x, 1, tile, th, a_h), 3, tile, tw, a_w)  # [N, th, α_h, tw, α_w, C]
  # Both axes' transforms as one contraction with Bᵀ ⊗ Bᵀ (and Aᵀ ⊗ Aᵀ below): one pass
  # over the tiles instead of two, 10-25 % faster forward+backward than two.
  v = lax.dot_general(_kron(bt_h, bt_w, x.dtype), d, (((2, 3), (2, 4)), ((), ())),
                      precision=precision)  # Bᵀ d B: [ξ, ν, N, th, tw, C]
  v = v.reshape(a_h * a_w, n * th * tw, cin)
  u = lax.dot_general(_kron(g_h, g_w, kernel.dtype), kernel, (((2, 3), (0, 1)), ((), ())),
                      precision=precision).reshape(a_h * a_w, cin, cout)  # G g Gᵀ
  # The elementwise product of the two, summed over C: α_h·α_w independent GEMMs.
  mm = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), precision=precision)
  mm = mm.reshape(a_h, a_w, n, th, tw, cout)
  y = lax.dot_general(_kron(at_h, at_w, x.dtype), mm, (((2, 3), (0, 1)), ((), ())),
                      precision=precision)  # [i, j, N, th, tw, O]
  y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(n, th * tile, tw * tile, cout)
  if (th * tile, tw * tile) != (out_h, out_w):
    y = y[:, :out_h, :out_w]
  return y
