"""What the exact Jacobian term costs against the decoder's forward pass (issue 7 target:
the jvp term at most 2.5x the decoder forward), for every Jacobian-supervision decoder.

    python -m benchmarks.jacobian [--batch=128] [--repeats=20] [--only=mlp,svhn,celeba64]

Per decoder (random weights; the cost does not depend on them), jitted, median of
--repeats after warm-up:
  forward         D(y, z) on the batch
  jvp             jax.jvp of y -> D(y, z) along one direction per sample (primal + tangent:
                  what the 'jvp' estimator evaluates for one network)
  finite diff.    D(y_j, z) - D(y, z) (eq. 9, two forwards)
  full (k cols)   the k vmapped jvps of the 'full' estimator
and the training view: value-and-grad of the reconstruction loss alone vs with the jvp
term added (the term's extra cost inside a train step).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from djax.methods import jacobian_nets
from djax.methods import jacobian_supervision as js

_BATCH = flags.DEFINE_integer("batch", 128, "samples per call")
_REPEATS = flags.DEFINE_integer("repeats", 20, "timed calls per figure")
_ONLY = flags.DEFINE_list("only", [], "decoders to time (mlp, svhn, celeba64)")
_OUT = flags.DEFINE_string("out", "", "write the figures as JSON here")


def decoders():
  """name -> (decoder module, k, d): the paper's decoders, y of size k, z of size d."""
  return {
      # Table 1's last MNIST student: k = 2 teacher units + 14 grown ones in one code.
      "mlp": (js.MLPDecoder((28, 28, 1), (64, 128, 256)), 2, 14),
      "svhn": (jacobian_nets.SVHNDecoder((32, 32, 3), (256, 128, 64)), 2, 14),
      # CelebA's decoder at 64x64, z a 2x2x512 map (the paper's 256x256 one has the same
      # blocks and two more): y = the 40 attribute units, tiled into every block.
      "celeba64": (jacobian_nets.FaceDecoder((64, 64, 3), (512, 256, 128, 64), 512, 40),
                   40, 2 * 2 * 512),
  }


def _time(f, *args, repeats):
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure(name, decoder, k, d, batch, repeats) -> dict:
  rng = np.random.default_rng(0)
  code = jnp.asarray(rng.normal(size=(batch, k + d)), jnp.float32)
  params = decoder.init(jax.random.PRNGKey(0), code)
  y, z = code[:, :k], code[:, k:]
  y_j = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  dec = lambda p: (lambda c: decoder.apply(p, c))
  x = dec(params)(code)
  target = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  fwd = jax.jit(lambda p, y, z: dec(p)(jnp.concatenate([y, z], -1)))
  jvp = jax.jit(lambda p, y, z, yj: jax.jvp(js._with_z(dec(p), z), (y,), (yj - y,)))
  fd = jax.jit(lambda p, y, z, yj: js._with_z(dec(p), z)(yj) - js._with_z(dec(p), z)(y))
  full = jax.jit(lambda p, y, z: js.jacobian_columns(dec(p), y, z))

  def rec_loss(p, y, z):
    return jnp.mean(jnp.square(dec(p)(jnp.concatenate([y, z], -1)) - target))

  def rec_plus_jvp(p, y, z, yj):
    _, d_s = jax.jvp(js._with_z(dec(p), z), (y,), (yj - y,))
    return rec_loss(p, y, z) + jnp.mean(jnp.square(d_s - target))

  g_rec = jax.jit(jax.value_and_grad(rec_loss))
  g_jvp = jax.jit(jax.value_and_grad(rec_plus_jvp))
  t = {
      "forward": _time(fwd, params, y, z, repeats=repeats),
      "jvp": _time(jvp, params, y, z, y_j, repeats=repeats),
      "finite_difference": _time(fd, params, y, z, y_j, repeats=repeats),
      "full": _time(full, params, y, z, repeats=max(3, repeats // 4)),
      "grad_reconstruction": _time(g_rec, params, y, z, repeats=repeats),
      "grad_reconstruction_plus_jvp": _time(g_jvp, params, y, z, y_j, repeats=repeats),
  }
  return {"decoder": name, "batch": batch, "k": k, "d": d,
          **{f"{n}_ms": round(1e3 * v, 3) for n, v in t.items()},
          "jvp_over_forward": round(t["jvp"] / t["forward"], 2),
          "finite_difference_over_forward": round(t["finite_difference"] / t["forward"], 2),
          "full_over_forward": round(t["full"] / t["forward"], 2),
          "jvp_term_extra_in_grad": round(t["grad_reconstruction_plus_jvp"]
                                          / t["grad_reconstruction"], 2),
          "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__}


def main(argv):
  del argv
  rows = []
  for name, (decoder, k, d) in decoders().items():
    if _ONLY.value and name not in _ONLY.value:
      continue
    r = measure(name, decoder, k, d, _BATCH.value, _REPEATS.value)
    rows.append(r)
    print(f"{name:9s} k={r['k']:<3d} d={r['d']:<5d} forward {r['forward_ms']:8.2f} ms | jvp "
          f"{r['jvp_ms']:8.2f} ms ({r['jvp_over_forward']:.2f}x) | finite diff. "
          f"{r['finite_difference_ms']:8.2f} ms ({r['finite_difference_over_forward']:.2f}x) | "
          f"full {r['full_ms']:8.2f} ms ({r['full_over_forward']:.2f}x) | train: rec "
          f"{r['grad_reconstruction_ms']:.2f} ms, rec+jvp {r['grad_reconstruction_plus_jvp_ms']:.2f}"
          f" ms ({r['jvp_term_extra_in_grad']:.2f}x)", flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
