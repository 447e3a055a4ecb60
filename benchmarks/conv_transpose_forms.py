"""Two more forms of djax.nn.conv_transpose's transposed convolution, kept for comparison
(``python -m benchmarks.conv_transpose --impls native,col2im,subpixel,phase``); importing
this module registers them as ``impl='subpixel'`` and ``impl='phase'``.

* ``'subpixel'``: all phases read windows ``x[q + m .. q + m + T - 1]`` (``m``/``T`` span the
  union of the phases' windows), so ONE stride-1 conv with a rearranged
  ``(T.., in, prod(s)*out)`` kernel (zeros where a phase has no tap) followed by
  depth-to-space computes every phase. Wastes ``(T/ceil(k/s))**2`` FLOPs (2.25x for k4 s2)
  and still has a conv kernel gradient.
* ``'phase'``: ``prod(s)`` stride-1 convs with the sub-kernels, then depth-to-space. Minimal
  FLOPs, but ``prod(s)`` conv kernel gradients.
"""

import itertools

import jax.numpy as jnp
import numpy as np
from jax import lax

from djax.nn import conv_transpose
from djax.nn.conv_transpose import _out_len, _pad_or_crop, _phases


def _axis_plan(n: int, k: int, s: int, pad_a: int, pad_b: int):
    """Static plan of the single-conv ('subpixel') form for one spatial axis.

    Returns ``(idx, pad_lo, pad_hi, q, out_len)``: ``idx[u, r]`` is the
    kernel tap that phase ``r`` applies at combined-kernel position ``u``
    (``k`` means "zero"), ``(pad_lo, pad_hi)`` the (possibly negative) input
    padding of the stride-1 conv, ``q`` its output length and ``out_len`` the
    transposed-conv output length (``<= q * s``).
    """
    out_len = _out_len(n, k, s, pad_a, pad_b)
    live = [(r, a, b, ln) for r, (a, b, ln) in enumerate(_phases(k, s, pad_a)) if ln > 0]
    # Residues pad_a - r cover every b in [0, s), and b = 0 < k always has taps.
    m = min(-a for _, a, _, _ in live)
    t_len = max(-a + ln - 1 for _, a, _, ln in live) - m + 1
    idx = np.full((t_len, s), k, dtype=np.int32)
    for r, a, b, ln in live:
        for u in range(t_len):
            t = m + u + a
            if 0 <= t < ln:
                idx[u, r] = s * t + b
    q = -(-out_len // s)
    return idx, -m, q + m + t_len - 1 - n, q, out_len


def _conv_nhwc(x, w, pads, precision, preferred_element_type):
    """Stride-1 conv; negative pads become crops so that every conv the
    autodiff rules derive keeps plain non-negative padding."""
    nsp = x.ndim - 2
    for d, (lo, hi) in enumerate(pads):
        x = _pad_or_crop(x, 1 + d, min(lo, 0), min(hi, 0))
    spatial = "HWD"[:nsp]
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,) * nsp,
        padding=[(max(lo, 0), max(hi, 0)) for lo, hi in pads],
        dimension_numbers=dn,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _depth_to_space(z, strides, cout, out_lens):
    """(N, Q_0.., prod(s)*C) with channels ordered (s_0, .., C) -> (N, L_0.., C)."""
    nsp = len(strides)
    bsz, qs = z.shape[0], z.shape[1 : 1 + nsp]
    z = z.reshape((bsz,) + qs + tuple(strides) + (cout,))
    perm = [0] + [i for d in range(nsp) for i in (1 + d, 1 + nsp + d)] + [1 + 2 * nsp]
    z = jnp.transpose(z, perm)
    z = z.reshape((bsz,) + tuple(q * s for q, s in zip(qs, strides)) + (cout,))
    if tuple(out_lens) != z.shape[1 : 1 + nsp]:
        z = z[(slice(None),) + tuple(slice(0, L) for L in out_lens)]
    return z


def _subpixel(x, kernel, strides, pads, precision, preferred_element_type):
    """One stride-1 conv with a (T.., in, prod(s)*out) kernel, then depth-to-space."""
    nsp = x.ndim - 2
    plans = [
        _axis_plan(x.shape[1 + d], kernel.shape[d], strides[d], *pads[d]) for d in range(nsp)
    ]
    # W (k_0.., in, out) -> (T_0, s_0, .., T_{n-1}, s_{n-1}, in, out) one axis at
    # a time; index k selects the appended zero slice.
    w = kernel
    for d, (idx, *_) in enumerate(plans):
        ax = 2 * d
        w = jnp.concatenate(
            [w, jnp.zeros(w.shape[:ax] + (1,) + w.shape[ax + 1 :], w.dtype)], axis=ax
        )
        w = jnp.take(w, jnp.asarray(idx.reshape(-1)), axis=ax)
        w = w.reshape(w.shape[:ax] + idx.shape + w.shape[ax + 1 :])
    cin, cout = kernel.shape[-2:]
    perm = [2 * d for d in range(nsp)] + [2 * nsp] + [2 * d + 1 for d in range(nsp)]
    w = jnp.transpose(w, perm + [2 * nsp + 1])
    w = w.reshape(tuple(p[0].shape[0] for p in plans) + (cin, int(np.prod(strides)) * cout))
    z = _conv_nhwc(x, w, [(p[1], p[2]) for p in plans], precision, preferred_element_type)
    return _depth_to_space(z, strides, cout, [p[4] for p in plans])


def _phase(x, kernel, strides, pads, precision, preferred_element_type):
    """prod(s) stride-1 convs with the sub-kernels W[b_0::s_0, ..], then depth-to-space.

    Minimal FLOPs (each output pixel only meets its ceil(k/s) taps per axis),
    at the price of prod(s) smaller convolutions.
    """
    nsp = x.ndim - 2
    ns = x.shape[1 : 1 + nsp]
    ks = kernel.shape[:nsp]
    cout = kernel.shape[-1]
    out_lens = [_out_len(ns[d], ks[d], strides[d], *pads[d]) for d in range(nsp)]
    qs = [-(-out_lens[d] // strides[d]) for d in range(nsp)]
    per_axis = [_phases(ks[d], strides[d], pads[d][0]) for d in range(nsp)]
    outs = []
    for combo in itertools.product(*per_axis):
        if any(ln == 0 for _, _, ln in combo):
            # kernel < stride: this phase never meets a kernel tap.
            dt = preferred_element_type or jnp.result_type(x.dtype, kernel.dtype)
            outs.append(jnp.zeros((x.shape[0], *qs, cout), dt))
            continue
        sub = kernel[tuple(slice(b, None, s) for (_, b, _), s in zip(combo, strides))]
        # Output q reads inputs q - a .. q - a + len - 1, for q in [0, Q).
        conv_pads = [(a, q - 1 - a + ln - n) for (a, _, ln), q, n in zip(combo, qs, ns)]
        outs.append(_conv_nhwc(x, sub, conv_pads, precision, preferred_element_type))
    z = jnp.stack(outs, axis=-2)  # phase index is row-major over (r_0, ..), as in d2s
    z = z.reshape(z.shape[:-2] + (-1,))
    return _depth_to_space(z, strides, cout, out_lens)


conv_transpose.FORMS.update(subpixel=_subpixel, phase=_phase)
