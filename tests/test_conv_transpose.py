"""djax.nn.conv_transpose.ConvTranspose must be interchangeable with flax's.

Each case jits ONE function that evaluates flax and every djax impl, so the
whole grid costs one compile per case (keeps the file fast on 2 CPU cores).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import benchmarks.conv_transpose_forms  # noqa: F401  (registers 'subpixel' and 'phase')
from djax.nn.conv_transpose import ConvTranspose, conv_transpose, resolve_impl

IMPLS = ("col2im", "subpixel", "phase", "native")

# (kernel_size, strides, padding, (H, W), C_in, C_out)
FORWARD_CASES = [
    (k, s, p, (3, 4), 3, 2) for k in (2, 3, 4, 5) for s in (1, 2) for p in ("SAME", "VALID")
] + [
    (3, 3, "SAME", (3, 2), 2, 3),
    (4, 3, "VALID", (2, 3), 2, 3),
    (2, 3, "SAME", (3, 3), 2, 2),  # kernel < stride: some output phases are 0
    (1, 2, "VALID", (3, 2), 2, 2),
    (4, 1, "VALID", (1, 1), 5, 4),  # 1x1 -> 4x4 projection
    ((3, 4), (2, 1), "SAME", (3, 4), 2, 3),  # anisotropic kernel and stride
    (4, 2, ((1, 2), (0, 1)), (3, 3), 2, 2),  # explicit (dilated-input) padding
    (3, 2, ((-1, 1), (2, 0)), (4, 3), 2, 2),  # negative explicit padding
    (4, 2, 1, (3, 3), 2, 2),  # int padding
]

# Representative subset for the (more expensive to compile) autodiff checks.
AD_CASES = [
    (4, 2, "SAME", (3, 4), 3, 2),
    (3, 2, "VALID", (3, 3), 2, 3),
    (5, 2, "SAME", (2, 3), 2, 2),
    (2, 2, "SAME", (3, 3), 3, 2),
    (4, 1, "VALID", (1, 1), 3, 2),
    (2, 3, "VALID", (2, 3), 2, 2),
]


def _case_id(c):
    k, s, p, hw, ci, co = c
    return f"k{k}-s{s}-{p}-{hw[0]}x{hw[1]}-{ci}to{co}"


def _setup(case, seed=0, batch=2):
    # numpy data, no eager jax ops: each would compile separately, which
    # dominates the runtime of small-shape tests.
    k, s, p, (h, w), ci, co = case
    rng = np.random.default_rng(seed)
    normal = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    x = normal((batch, h, w, ci))
    ref = nn.ConvTranspose(co, k if isinstance(k, tuple) else (k, k), s, p)
    # Built by hand (layout checked in test_param_tree_identical): compiling
    # the lecun_normal init per case would double this file's runtime.
    kshape = tuple(ref.kernel_size) + (ci, co)
    params = {"params": {"kernel": normal(kshape) / np.sqrt(ci * np.prod(kshape[:2])),
                         "bias": normal((co,))}}  # non-zero bias, so it is exercised
    mods = {impl: ConvTranspose(co, ref.kernel_size, s, p, impl=impl) for impl in IMPLS}
    tp = jax.tree_util.tree_map(lambda a: normal(a.shape), params)
    tx = normal(x.shape)
    cot = normal(jax.eval_shape(ref.apply, params, x).shape)
    return ref, mods, params, x, tp, tx, cot


def _assert_close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = 1.0 + np.max(np.abs(b), initial=0.0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6 * scale, err_msg=what)


def _assert_tree_close(a, b, what):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, what
    for i, (u, v) in enumerate(zip(la, lb)):
        _assert_close(u, v, f"{what}[{i}]")


@pytest.mark.parametrize("case", FORWARD_CASES, ids=_case_id)
def test_forward_matches_flax(case):
    ref, mods, params, x, *_ = _setup(case)

    @jax.jit
    def run(params, x):
        return ref.apply(params, x), {i: m.apply(params, x) for i, m in mods.items()}

    want, got = run(params, x)
    for impl, y in got.items():
        _assert_close(y, want, impl)


@pytest.mark.parametrize("case", AD_CASES, ids=_case_id)
def test_grad_matches_flax(case):
    ref, mods, params, x, _, _, cot = _setup(case)

    def grads(mod):
        # Random cotangent: a plain sum would hide errors that cancel.
        return jax.grad(lambda p, x: jnp.sum(mod.apply(p, x) * cot), argnums=(0, 1))(params, x)

    want, got = jax.jit(lambda: (grads(ref), {i: grads(m) for i, m in mods.items()}))()
    for impl, g in got.items():
        _assert_tree_close(g, want, impl)


@pytest.mark.parametrize("case", AD_CASES, ids=_case_id)
def test_jvp_matches_flax(case):
    ref, mods, params, x, tp, tx, _ = _setup(case)

    def jvps(mod):
        f = lambda p, x: mod.apply(p, x)
        return (
            jax.jvp(f, (params, x), (tp, tx)),  # both tangents
            jax.jvp(lambda x: f(params, x), (x,), (tx,)),  # input tangent only
            jax.jvp(lambda p: f(p, x), (params,), (tp,)),  # param tangent only
        )

    want, got = jax.jit(lambda: (jvps(ref), {i: jvps(m) for i, m in mods.items()}))()
    for impl, g in got.items():
        _assert_tree_close(g, want, impl)


@pytest.mark.parametrize("case", AD_CASES, ids=_case_id)
def test_grad_of_jvp_matches_flax(case):
    ref, mods, params, x, tp, tx, cot = _setup(case)

    def grad_of_jvp(mod):
        def loss(p, x, tp, tx):
            _, t = jax.jvp(lambda p, x: mod.apply(p, x), (p, x), (tp, tx))
            return jnp.sum(jnp.tanh(t) * cot)

        return jax.grad(loss, argnums=(0, 1, 2, 3))(params, x, tp, tx)

    want, got = jax.jit(
        lambda: (grad_of_jvp(ref), {i: grad_of_jvp(m) for i, m in mods.items()})
    )()
    for impl, g in got.items():
        _assert_tree_close(g, want, impl)


def test_linearize_and_vjp_of_linearized():
    ref, mods, params, x, tp, tx, cot = _setup(AD_CASES[0])

    def lin(mod):
        y, f_jvp = jax.linearize(lambda p, x: mod.apply(p, x), params, x)
        t = f_jvp(tp, tx)
        # Transposing the linearized map exercises the transpose rules of
        # every primitive the impl uses.
        ct = jax.linear_transpose(f_jvp, tp, tx)(cot)
        return y, t, ct

    want, got = jax.jit(lambda: (lin(ref), {i: lin(m) for i, m in mods.items()}))()
    for impl, g in got.items():
        _assert_tree_close(g, want, impl)


def test_param_tree_identical():
    x = jnp.ones((2, 4, 4, 3))
    key = jax.random.key(1)
    for use_bias in (True, False):
        kw = dict(features=5, kernel_size=(4, 4), strides=(2, 2), use_bias=use_bias)
        want = jax.eval_shape(nn.ConvTranspose(**kw).init, key, x)
        assert want["params"]["kernel"].shape == (4, 4, 3, 5)
        for impl in IMPLS:
            got = jax.eval_shape(ConvTranspose(**kw, impl=impl).init, key, x)
            assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
            assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), got) == \
                jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), want)
    # Same param names, order and rng => identical initial values (impl only
    # changes the math after the params are created, so one impl suffices).
    # normal() instead of the default truncated normal: same check, faster compile.
    kw["kernel_init"] = nn.initializers.normal()
    want = jax.jit(nn.ConvTranspose(**kw).init)(key, x)
    got = jax.jit(ConvTranspose(**kw).init)(key, x)
    _assert_tree_close(got, want, "init values")


def test_batch_dims_mask_and_dtype():
    rng = np.random.default_rng(2)
    mask = jnp.asarray(rng.uniform(size=(3, 3, 2, 4)) > 0.3, jnp.float32)
    x = jnp.asarray(rng.normal(size=(2, 3, 3, 3, 2)), jnp.float32)  # two leading batch dims
    kw = dict(features=4, kernel_size=(3, 3), strides=2, padding="SAME", mask=mask)
    kw16 = dict(features=4, kernel_size=(4, 4), strides=2, dtype=jnp.bfloat16)
    ref, ref16 = nn.ConvTranspose(**kw), nn.ConvTranspose(**kw16)
    params = {"params": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
                         "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    params16 = {"params": {"kernel": jnp.asarray(rng.normal(size=(4, 4, 2, 4)) / 6, jnp.float32),
                           "bias": jnp.zeros((4,), jnp.float32)}}

    @jax.jit
    def run(params, params16, x):
        out = {"flax": (ref.apply(params, x), ref.apply(params, x[0, 0]),
                        ref16.apply(params16, x[0]))}
        for impl in IMPLS:
            mod, mod16 = ConvTranspose(**kw, impl=impl), ConvTranspose(**kw16, impl=impl)
            out[impl] = (mod.apply(params, x), mod.apply(params, x[0, 0]),
                         mod16.apply(params16, x[0]))
        return out

    out = run(params, params16, x)
    want = out.pop("flax")
    for impl, (y, y_unbatched, y16) in out.items():
        _assert_close(y, want[0], f"{impl} batch dims + mask")
        _assert_close(y_unbatched, want[1], f"{impl} unbatched")
        assert y16.dtype == want[2].dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(y16, np.float32),
                                   np.asarray(want[2], np.float32), rtol=2e-2, atol=2e-2)


def test_functional_1d_and_3d():
    rng = np.random.default_rng(3)
    f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    x1, w1, x3, w3 = f32(2, 5, 3), f32(4, 3, 2), f32(1, 2, 3, 2, 2), f32(3, 2, 2, 2, 3)

    @jax.jit
    def run(x1, w1, x3, w3):
        want = (
            jax.lax.conv_transpose(x1, w1, (2,), "SAME", dimension_numbers=("NHC", "HIO", "NHC")),
            jax.lax.conv_transpose(x3, w3, (2, 1, 3), "VALID"),
        )
        got = {
            impl: (conv_transpose(x1, w1, (2,), "SAME", impl=impl),
                   conv_transpose(x3, w3, (2, 1, 3), "VALID", impl=impl))
            for impl in IMPLS
        }
        return want, got

    want, got = run(x1, w1, x3, w3)
    for impl, g in got.items():
        _assert_tree_close(g, want, impl)


def test_unsupported_options_raise():
    x = jnp.ones((1, 3, 3, 2))
    with pytest.raises(NotImplementedError, match="transpose_kernel"):
        ConvTranspose(2, (3, 3), transpose_kernel=True).init(jax.random.key(0), x)
    with pytest.raises(NotImplementedError, match="kernel_dilation"):
        ConvTranspose(2, (3, 3), kernel_dilation=2).init(jax.random.key(0), x)
    with pytest.raises(NotImplementedError, match="CIRCULAR"):
        ConvTranspose(2, (3, 3), padding="CIRCULAR").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="impl"):
        ConvTranspose(2, (3, 3), impl="fast").init(jax.random.key(0), x)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="auto is backend dependent")
def test_auto_choice_on_cpu():
    assert resolve_impl("auto") == "col2im"
    assert resolve_impl("auto", (2, 2), (8, 8), (4, 4)) == "col2im"
    assert resolve_impl("auto", (1, 2), (8, 8), (3, 3)) == "col2im"
    assert resolve_impl("auto", (1, 1), (1, 1), (4, 4)) == "col2im"  # projection
    assert resolve_impl("auto", (1, 1), (8, 8), (3, 3)) == "native"
    for impl in ("native", "col2im", "subpixel", "phase"):
        assert resolve_impl(impl, (1, 1), (8, 8), (3, 3)) == impl


def test_padding_rule_matches_jax():
    # The SAME/VALID rule is re-implemented from a private jax helper; catch drift.
    try:
        from jax._src.lax.convolution import _conv_transpose_padding
    except ImportError:  # pragma: no cover
        pytest.skip("private jax helper moved")
    from djax.nn.conv_transpose import _transpose_padding

    for k in range(1, 8):
        for s in range(1, 5):
            for p in ("SAME", "VALID"):
                assert _transpose_padding(k, s, p) == _conv_transpose_padding(k, s, p)
