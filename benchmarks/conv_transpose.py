"""Benchmark: native (lax.conv_transpose) vs decomposed djax ConvTranspose impls.

Run from the repo root::

    python -m benchmarks.conv_transpose [--repeats 5] [--batch 64] [--out res.json]
        [--impls native,col2im,subpixel,phase] [--extra] [--no-stack] [--layers 0,1]
    python -m benchmarks.conv_transpose --conv --pool --layers= --no-stack

``--conv`` adds the mixing method's convolutions (djax.nn.conv, native vs im2col, and
Winograd for the stride-1 k3/k5 layers) and
``--pool`` the chunk classifier's 3x3/2 max pools (djax.nn.pool, native vs separable), at
the paper config's shapes.

Times, per layer and for a 4-layer decoder stack (k4 s2 'SAME'):

* ``fwd``     -- y = f(params, x)
* ``fwd_bwd`` -- grad of sum(y**2) w.r.t. (params, x)
* ``jvp``     -- jax.jvp w.r.t. (params, x) with random tangents
* ``grad_jvp`` (only with ``--modes ...,grad_jvp``) -- grad w.r.t.
  (params, x) of sum(tangent**2) of that jvp

Every function is jitted, compiled and run once before timing (excluded);
each timed call ends with ``block_until_ready``; the median over
``--repeats`` calls is reported.  Impls are timed round-robin within each
repeat, so that load from other processes affects them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from flax import linen as nn

from benchmarks import conv_transpose_forms  # noqa: F401  (subpixel, phase)
from djax.nn.conv import Conv
from djax.nn.conv_transpose import ConvTranspose
from djax.nn.pool import max_pool

# (H_in, C_in, C_out): k4 s2 'SAME' doubles H.  Matches djax's 64x64 decoders.
LAYERS = [(4, 512, 512), (8, 512, 256), (16, 256, 128), (32, 128, 3)]
# --extra: other combos decoders use (k2s2, the 1x1 -> 4x4 k4 VALID
# projection) plus odd kernels.
# (name, H_in, C_in, C_out, kernel, stride, padding)
EXTRA = [
    ("k4s1 VALID 1x1x256->4x4x512", 1, 256, 512, 4, 1, "VALID"),
    ("k2s2 SAME 16x16x256->32x32x128", 16, 256, 128, 2, 2, "SAME"),
    ("k3s1 SAME 16x16x128->16x16x128", 16, 128, 128, 3, 1, "SAME"),
    ("k5s2 SAME 16x16x128->32x32x64", 16, 128, 64, 5, 2, "SAME"),
]

# --conv: (name, H_in, C_in, C_out, kernel, stride), SAME, the mixing paper config's layers
CONVS = [
    ("cls conv1 k8s2 64x64x9->96", 64, 9, 96, 8, 2),
    ("cls conv2 k5s1 16x16x96->256", 16, 96, 256, 5, 1),
    ("cls conv3 k3s1 8x8x256->384", 8, 256, 384, 3, 1),
    ("cls conv4 k3s1 8x8x384->384", 8, 384, 384, 3, 1),
    ("cls conv5 k3s1 8x8x384->256", 8, 384, 256, 3, 1),
    ("enc/dsc conv1 k3s2 64x64x3->64", 64, 3, 64, 3, 2),
    ("enc/dsc conv2 k3s2 32x32x64->128", 32, 64, 128, 3, 2),
    ("enc/dsc conv3 k3s2 16x16x128->256", 16, 128, 256, 3, 2),
    ("dsc conv4 k1s1 8x8x256->512", 8, 256, 512, 1, 1),
    ("enc conv4 k2s2 8x8x256->512", 8, 256, 512, 2, 2),
]
# --pool: (H, C) of the chunk classifier's 3x3 stride-2 SAME max pools
POOLS = [(32, 96), (16, 256), (8, 256)]


class Pool(nn.Module):
    impl: str

    @nn.compact
    def __call__(self, x):
        return max_pool(x, (3, 3), (2, 2), "SAME", impl=self.impl)


class Stack(nn.Module):
    impl: str

    @nn.compact
    def __call__(self, x):
        for i, (_, _, cout) in enumerate(LAYERS):
            x = ConvTranspose(cout, (4, 4), (2, 2), "SAME", impl=self.impl)(x)
            if i < len(LAYERS) - 1:
                x = nn.relu(x)
        return x


def _timeit_interleaved(fns, args, repeats):
    """Median wall time per fn.  The fns are run round-robin within each
    repeat so that load changes on a shared machine hit every impl alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))  # compile + warm-up, excluded
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), v) for k, v in ts.items()}


def _make_fns(module):
    def fwd(p, x):
        return module.apply(p, x)

    def loss(p, x):
        return jnp.sum(module.apply(p, x) ** 2)

    def fwd_bwd(p, x):
        return jax.grad(loss, argnums=(0, 1))(p, x)

    def jvp(p, x, tp, tx):
        return jax.jvp(fwd, (p, x), (tp, tx))

    def grad_jvp(p, x, tp, tx):
        # What djax's Jacobian-based regularisers differentiate.
        def tangent_loss(p, x):
            return jnp.sum(jax.jvp(fwd, (p, x), (tp, tx))[1] ** 2)

        return jax.grad(tangent_loss, argnums=(0, 1))(p, x)

    return jax.jit(fwd), jax.jit(fwd_bwd), jax.jit(jvp), jax.jit(grad_jvp)


def bench_case(name, make_module, x_shape, impls, modes, repeats, key):
    kx, kp, kt1, kt2 = jax.random.split(key, 4)
    x = jax.random.normal(kx, x_shape, jnp.float32)
    # Same parameters for every impl: the layouts are identical.
    params = make_module(impls[0]).init(kp, x)
    tp = jax.tree_util.tree_map(
        lambda a: jax.random.normal(kt1, a.shape, a.dtype), params
    )
    tx = jax.random.normal(kt2, x.shape, x.dtype)
    fns = {impl: _make_fns(make_module(impl)) for impl in impls}
    args = {"fwd": (params, x), "fwd_bwd": (params, x),
            "jvp": (params, x, tp, tx), "grad_jvp": (params, x, tp, tx)}
    idx = {"fwd": 0, "fwd_bwd": 1, "jvp": 2, "grad_jvp": 3}
    rows = {}
    for mode in modes:
        res = _timeit_interleaved({i: fns[i][idx[mode]] for i in impls}, args[mode], repeats)
        for impl, (med, ts) in res.items():
            rows[(impl, mode)] = {"median_s": med, "times_s": ts}
            print(f"  {name:<32} {impl:<9} {mode:<8} {med * 1e3:10.1f} ms", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--impls", default="native,col2im,subpixel",
                    help="comma list of: native, col2im, subpixel, phase")
    ap.add_argument("--modes", default="fwd,fwd_bwd,jvp", help="also: grad_jvp")
    ap.add_argument("--no-stack", action="store_true", help="skip the 4-layer stack")
    ap.add_argument("--layers", default="0,1,2,3", help="indices into LAYERS ('' = none)")
    ap.add_argument("--extra", action="store_true", help="also time the EXTRA layers")
    ap.add_argument("--conv", action="store_true", help="also time CONVS: native, im2col, winograd")
    ap.add_argument("--pool", action="store_true", help="also time POOLS: native vs separable")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args(argv)

    impls = args.impls.split(",")
    modes = args.modes.split(",")
    layer_ids = [int(i) for i in args.layers.split(",") if i != ""]
    key = jax.random.key(0)
    print(f"backend={jax.default_backend()} devices={jax.devices()} batch={args.batch} "
          f"repeats={args.repeats}", flush=True)

    cases = []
    for i in layer_ids:
        h, cin, cout = LAYERS[i]
        name = f"L{i} {h}x{h}x{cin}->{2 * h}x{2 * h}x{cout}"
        cases.append((name, lambda impl, cout=cout: ConvTranspose(
            cout, (4, 4), (2, 2), "SAME", impl=impl), (args.batch, h, h, cin), impls))
    if args.extra:
        for name, h, cin, cout, k, st, pad in EXTRA:
            cases.append((name, lambda impl, cout=cout, k=k, st=st, pad=pad: ConvTranspose(
                cout, (k, k), (st, st), pad, impl=impl), (args.batch, h, h, cin), impls))
    if not args.no_stack:
        h, cin, _ = LAYERS[0]
        cases.append(("stack 4x4x512->64x64x3", lambda impl: Stack(impl),
                      (args.batch, h, h, cin), impls))
    if args.conv:
        for name, h, cin, cout, k, st in CONVS:
            cases.append((name, lambda impl, cout=cout, k=k, st=st: Conv(
                cout, (k, k), (st, st), "SAME", impl=impl), (args.batch, h, h, cin),
                ["native", "im2col"] + (["winograd"] if st == 1 and 3 <= k <= 5 else [])))
    if args.pool:
        for h, c in POOLS:
            cases.append((f"max_pool 3x3/2 {h}x{h}x{c}", Pool, (args.batch, h, h, c),
                          ["native", "separable"]))

    results = []
    for name, make, shape, case_impls in cases:
        rows = bench_case(name, make, shape, case_impls, modes, args.repeats, key)
        for mode in modes:
            entry = {"case": name, "mode": mode, "impls": case_impls}
            for impl in case_impls:
                entry[f"{impl}_ms"] = rows[(impl, mode)]["median_s"] * 1e3
                entry[f"{impl}_times_ms"] = [t * 1e3 for t in rows[(impl, mode)]["times_s"]]
            if "native" in case_impls:
                for impl in case_impls:
                    if impl != "native":
                        entry[f"speedup_{impl}"] = entry["native_ms"] / entry[f"{impl}_ms"]
            results.append(entry)

    print()
    # One table per set of impls compared (decoder layers, --conv, --pool).
    for group in dict.fromkeys(tuple(e["impls"]) for e in results):
        others = [i for i in group if i != "native"] if "native" in group else []
        hdr = f"{'case':<36}{'mode':<9}" + "".join(f"{i + ' ms':>13}" for i in group)
        hdr += "".join(f"{'x ' + i:>12}" for i in others)
        print(hdr)
        print("-" * len(hdr))
        for e in results:
            if tuple(e["impls"]) != group:
                continue
            line = f"{e['case']:<36}{e['mode']:<9}" + "".join(
                f"{e[i + '_ms']:13.1f}" for i in group)
            line += "".join(f"{e['speedup_' + i]:11.2f}x" for i in others)
            print(line)
        print()

    if args.out:
        meta = {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "platform": platform.platform(),
            "batch": args.batch,
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "layers": "k4 s2 SAME unless the case name says otherwise",
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
