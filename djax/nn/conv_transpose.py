"""Transposed convolution that XLA:CPU differentiates quickly.

Why: ``flax.linen.ConvTranspose`` lowers to ``lax.conv_general_dilated`` with
``lhs_dilation=strides``.  Its forward pass is fine on XLA:CPU, but the
backward pass needs the *kernel gradient* of a convolution, which XLA:CPU
computes very slowly: forward+backward measured 14-40x the forward time at
the 64x64 decoder shapes.  This holds for kernel gradients of plain
stride-1 convolutions too (a 1x1 conv at 64x16x16x256->128: forward 97 ms,
d/dkernel 2.5 s, d/dinput 0.18 s), so decoder training on CPU is dominated
by it.

:class:`ConvTranspose` computes exactly the same function from primitives
that XLA:CPU differentiates fast.  Nothing here uses ``custom_vjp`` /
``custom_jvp``: ``jax.grad``, ``jax.jvp``, ``jax.linearize`` and grad-of-jvp
all go through JAX's native rules.

Formula (per spatial axis; the axes are independent).  With stride ``s``,
kernel size ``k`` and the dilated-input padding ``(pad_a, pad_b)`` that
``lax.conv_transpose`` uses, the transposed convolution is the correlation

    y[o] = sum_j xd[o + j - pad_a] W[j],     xd[s*i] = x[i], 0 elsewhere,

of length ``L = (n - 1) s + pad_a + pad_b - k + 2``.  Split the output by
phase ``r = o mod s`` (``o = s*q + r``) and write
``pad_a - r = s*a_r + b_r`` with ``0 <= b_r < s``.  Only the taps
``j = s*t + b_r`` meet non-zero ``xd`` entries, so each phase is a stride-1
correlation with the sub-kernel ``W[b_r::s]``:

    y[s*q + r] = sum_{t < ceil((k - b_r)/s)} x[q + t - a_r] W[s*t + b_r].

``impl='col2im'`` (the CPU default for strided layers) evaluates it as one GEMM
``z[n, i, j, o] = sum_c x[n, i, c] W[j, c, o]`` (every product the transposed conv needs,
nothing wasted), then per phase the overlap-add ``y[s*q + r] = sum_t z[q + t - a_r,
s*t + b_r]`` (shifted slices + adds), interleaved.  No convolution at all, so forward,
backward and jvp are GEMMs plus cheap elementwise work.  (Sub-pixel and per-phase
convolution forms, each still with a conv kernel gradient, were measured slower on CPU;
they live in ``benchmarks/conv_transpose_forms.py``.)

It crops to the exact output length, so any padding / kernel size
(including kernel < stride, where some phases are identically zero) works.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding
from flax.typing import Array, Dtype, Initializer, PaddingLike, PrecisionLike
from jax import lax

__all__ = ["ConvTranspose", "conv_transpose", "resolve_impl"]

Impl = str  # 'auto', 'native' or a name in FORMS


def resolve_impl(
    impl: str,
    strides: Sequence[int] | None = None,
    in_spatial: Sequence[int] | None = None,
    kernel_size: Sequence[int] | None = None,
) -> str:
    """Maps ``'auto'`` to a concrete implementation (at trace time).

    CPU (``jax.default_backend()``) -> ``'col2im'``, except for stride-1
    layers whose input is at least kernel-sized in every spatial dim, which
    get ``'native'`` (then just a plain stride-1 conv).  Measured on 2 shared
    CPU cores, batch 64 (``benchmarks/conv_transpose.py``):

    * stride > 1: col2im forward+backward is 1.7-21x faster than native
      (12-16x on the wide 64x64-decoder layers, 15.6x for the 4-layer
      stack; grad-of-jvp 3.5-8x), forward and jvp on par (0.9-1.4x);
    * stride 1, large input (k3, 16x16x128): col2im materialises a
      ``k**2 x output`` intermediate: 0.65-0.7x native on forward / jvp for
      only 1.14x on forward+backward, hence native;
    * stride 1, input smaller than the kernel (1x1 -> 4x4 projection): the
      native conv mostly multiplies padding; col2im ~7x faster in every mode.

    Without shape information CPU -> ``'col2im'``.

    Other backends -> ``'native'``: cuDNN / TPU convolutions have efficient
    backward passes and col2im's intermediate costs memory bandwidth, so no
    win is expected there (not measured: no accelerator was available).
    """
    if impl not in ("auto", "native", *FORMS):
        raise ValueError(f"impl must be one of {('auto', 'native', *FORMS)}, got {impl!r}")
    if impl != "auto":
        return impl
    if jax.default_backend() != "cpu":
        return "native"
    if strides is not None and in_spatial is not None and kernel_size is not None:
        if all(s == 1 for s in strides) and all(
            n >= k for n, k in zip(in_spatial, kernel_size)
        ):
            return "native"
    return "col2im"


def _transpose_padding(k: int, s: int, padding) -> tuple[int, int]:
    # Mirrors jax._src.lax.convolution._conv_transpose_padding (private), which
    # lax.conv_transpose applies for 'SAME'/'VALID'; kept in sync by tests.
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
    elif padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    else:
        raise ValueError(f"Invalid padding {padding!r}")
    return pad_a, pad_len - pad_a


def _out_len(n: int, k: int, s: int, pad_a: int, pad_b: int) -> int:
    out_len = (n - 1) * s + pad_a + pad_b - k + 2
    if out_len <= 0:
        raise ValueError(
            f"ConvTranspose output would be empty (input {n}, kernel {k}, "
            f"stride {s}, padding {(pad_a, pad_b)})"
        )
    return out_len


def _phases(k: int, s: int, pad_a: int):
    """Per output phase r: ``(a_r, b_r, len_r)`` with
    ``y[s*q + r] = sum_{t < len_r} x[q + t - a_r] W[s*t + b_r]``."""
    out = []
    for r in range(s):
        a, b = divmod(pad_a - r, s)
        out.append((a, b, max(0, -(-(k - b) // s))))
    return out


def _pad_or_crop(x, axis: int, lo: int, hi: int):
    # lax.pad takes negative widths (= crop) and has native jvp/transpose rules.
    if lo == 0 and hi == 0:
        return x
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _col2im(x, kernel, strides, pads, precision, preferred_element_type):
    """One GEMM x @ W -> per-tap outputs, then phase-wise overlap-add.

    z[n, i.., j.., o] = sum_c x[n, i.., c] W[j.., c, o] holds every product
    the transposed conv needs (minimal FLOPs, as one large matmul); output
    pixel s*q + r sums z[q + t - a_r, s*t + b_r] over t, i.e. shifted slices.
    """
    nsp = x.ndim - 2
    ns = x.shape[1 : 1 + nsp]
    ks = kernel.shape[:nsp]
    out_dtype = preferred_element_type or jnp.result_type(x.dtype, kernel.dtype)
    acc_dtype = out_dtype
    if jnp.issubdtype(out_dtype, jnp.floating) and jnp.finfo(out_dtype).bits < 32:
        # A conv accumulates all taps before rounding once; keep z and the
        # overlap-add in f32 so low-precision results match native closely.
        acc_dtype = jnp.float32
    # As one 2-D matmul, (N*n_0.., in) @ (in, k_0..*out): XLA:CPU then differentiates it
    # into two plain GEMMs. Contracted as a 4-D dot_general, the kernel-gradient GEMM
    # transposed the large z-cotangent first (decoder fwd+bwd 957 -> 780 ms, paper config).
    cin, cout = kernel.shape[-2:]
    w = jnp.moveaxis(kernel, nsp, 0).reshape(cin, -1)
    z = lax.dot_general(
        x.reshape(-1, cin),
        w,
        (((1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=acc_dtype,
    ).reshape(x.shape[:-1] + tuple(ks) + (cout,))  # (N, n_0.., k_0.., out)
    for d in range(nsp):
        # Earlier tap axes are consumed, so tap axis d is always at 1 + nsp.
        sp_ax, tap_ax = 1 + d, 1 + nsp
        n, k, s = ns[d], ks[d], strides[d]
        out_len = _out_len(n, k, s, *pads[d])
        q = -(-out_len // s)
        res = []
        # One split (whose transpose is one concatenate) rather than k index
        # slices (each transposed to a full-size zero pad, summed k-fold).
        taps = [lax.squeeze(zt, (tap_ax,)) for zt in lax.split(z, (1,) * k, axis=tap_ax)]
        for a, b, ln in _phases(k, s, pads[d][0]):
            acc = None
            for t in range(ln):
                zt = taps[s * t + b]
                zt = _pad_or_crop(zt, sp_ax, a - t, q - 1 - a + t - (n - 1))
                acc = zt if acc is None else acc + zt
            if acc is None:  # kernel < stride: this phase meets no tap
                shape = list(z.shape)
                del shape[tap_ax]
                shape[sp_ax] = q
                acc = jnp.zeros(shape, z.dtype)
            res.append(acc)
        z = jnp.stack(res, axis=sp_ax + 1)
        z = z.reshape(z.shape[:sp_ax] + (q * s,) + z.shape[sp_ax + 2 :])
        if q * s != out_len:
            z = lax.slice_in_dim(z, 0, out_len, axis=sp_ax)
    return z.astype(out_dtype)


# name -> fn(x, kernel, strides, pads, precision, preferred_element_type). Other forms
# (sub-pixel and per-phase convolutions, measured slower on CPU) live in
# benchmarks/conv_transpose_forms.py, which registers them here for its comparisons.
FORMS = {"col2im": _col2im}


def conv_transpose(
    x: Array,
    kernel: Array,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    *,
    impl: str = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: Dtype | None = None,
) -> Array:
    """Functional equivalent of ``lax.conv_transpose(..., transpose_kernel=False)``.

    ``x`` is ``(N, *spatial, in)`` and ``kernel`` ``(*kernel_size, in, out)``
    (channels-last, as in Flax).  ``padding`` is ``'SAME'``, ``'VALID'`` or
    explicit ``(lo, hi)`` pairs with ``lax.conv_transpose``'s (default,
    ``use_consistent_padding=False``) meaning: padding of the stride-dilated
    input, exactly as ``flax.linen.ConvTranspose`` passes it.
    """
    nsp = x.ndim - 2
    strides = tuple(int(s) for s in strides)
    if len(strides) != nsp or any(s < 1 for s in strides):
        raise ValueError(f"strides {strides} invalid for {nsp} spatial dims")
    impl = resolve_impl(impl, strides, x.shape[1:-1], kernel.shape[:nsp])
    if impl == "native":
        return lax.conv_transpose(
            x,
            kernel,
            strides,
            padding,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if isinstance(padding, str):
        pads = [_transpose_padding(k, s, padding) for k, s in zip(kernel.shape[:nsp], strides)]
    else:
        pads = [tuple(int(v) for v in p) for p in padding]
        if len(pads) != nsp or any(len(p) != 2 for p in pads):
            raise ValueError(f"padding {padding} invalid for {nsp} spatial dims")
    if any(n == 0 for n in x.shape[1:-1]) or x.ndim - 2 not in (1, 2, 3):
        raise ValueError(f"unsupported input shape {x.shape}")
    return FORMS[impl](x, kernel, strides, pads, precision, preferred_element_type)


class ConvTranspose(nn.Module):
    """Drop-in replacement for ``flax.linen.ConvTranspose`` (``transpose_kernel=False``).

    Same fields, defaults, parameter names/shapes (``kernel``
    ``(*kernel_size, in, features)``, ``bias`` ``(features,)``) and outputs as
    ``nn.ConvTranspose``; parameters are interchangeable.  Batch handling
    (several leading batch dims, or none) follows Flax too.

    Extra field ``impl`` (formulas in the module docstring):

    * ``'auto'`` (default) -- on CPU ``'col2im'``, except stride-1 layers
      with an input at least kernel-sized (``'native'``, a plain conv there);
      ``'native'`` on other backends.  Decided at trace time; rationale and
      numbers in :func:`resolve_impl`.
    * ``'col2im'`` -- GEMM + phase-wise overlap-add; no convolutions at all.
      Fastest on XLA:CPU for strided layers (README, "Speed").
    * ``'native'`` -- ``lax.conv_transpose``, i.e. exactly what Flax does.

    Supported: padding ``'SAME'``, ``'VALID'`` or explicit ``(lo, hi)`` pairs /
    ints (Flax semantics), any strides >= 1, any kernel size (including
    kernel < stride), ``mask``, ``dtype``/``param_dtype``/``precision``/
    ``preferred_element_type``/``promote_dtype``.  Not supported (raise
    ``NotImplementedError``): ``transpose_kernel=True``, ``kernel_dilation``
    other than 1 and ``padding='CIRCULAR'``.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: Sequence[int] | int | None = None
    padding: PaddingLike = "SAME"
    kernel_dilation: Sequence[int] | int | None = None
    use_bias: bool = True
    mask: Array | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    transpose_kernel: bool = False
    promote_dtype: object = promote_dtype
    preferred_element_type: Dtype | None = None
    impl: Impl = "auto"

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        if isinstance(self.kernel_size, int):
            kernel_size = (self.kernel_size,)
        else:
            kernel_size = tuple(self.kernel_size)
        nsp = len(kernel_size)

        def broadcast(v) -> tuple[int, ...]:
            if v is None:
                v = 1
            if isinstance(v, int):
                return (v,) * nsp
            return tuple(v)

        if self.transpose_kernel:
            raise NotImplementedError("djax ConvTranspose: transpose_kernel=True is not supported")
        if any(d != 1 for d in broadcast(self.kernel_dilation)):
            raise NotImplementedError("djax ConvTranspose: kernel_dilation != 1 is not supported")
        if isinstance(self.padding, str) and self.padding not in ("SAME", "VALID"):
            raise NotImplementedError(
                f"djax ConvTranspose: padding {self.padding!r} is not supported "
                "(use 'SAME', 'VALID' or explicit (lo, hi) pairs)"
            )
        resolve_impl(self.impl)  # validate early, at init time too

        num_batch = inputs.ndim - (nsp + 1)
        if num_batch != 1:
            batch_shape = inputs.shape[:num_batch]
            inputs = jnp.reshape(inputs, (-1,) + inputs.shape[num_batch:])

        strides = broadcast(self.strides)
        in_features = jnp.shape(inputs)[-1]
        kernel_shape = kernel_size + (in_features, self.features)
        if self.mask is not None and self.mask.shape != kernel_shape:
            raise ValueError(
                "Mask needs to have the same shape as weights. "
                f"Shapes are: {self.mask.shape}, {kernel_shape}"
            )
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask

        padding = canonicalize_padding(self.padding, nsp)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

        y = conv_transpose(
            inputs,
            kernel,
            strides,
            padding,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        if num_batch != 1:
            y = jnp.reshape(y, batch_shape + y.shape[1:])
        return y
