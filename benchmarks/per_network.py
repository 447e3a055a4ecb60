"""Where a mixing train step's time goes: each network's forward and forward+backward, djax
(jitted, train-mode norms, gradients w.r.t. parameters and input) against the PyTorch
reference of the same network (``benchmarks/torch_reference.py``, eager), timed round-robin
so that load from other processes falls on both alike.

    python -m benchmarks.per_network --config=experiments/mixing_sprites.py [--repeats=5]

Prints one row per network (ms, median of --repeats after one untimed call) and the step's
own call count per network (encoder ×3, decoder ×2, discriminator ×3, classifier ×1 at
λ_rec = 0), so ``calls × fwd_bwd`` estimates each network's share of a step.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from djax import host_memory, methods

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per network and framework")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: default)")
_OUT = flags.DEFINE_string("out", "", "write the figures as JSON here")


def _inputs(config, code_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  b, s = config.train.batch_size, config.data.image_size
  c = int(config.data.get("channels", 3))
  rng = np.random.default_rng(seed)
  img = lambda ch: rng.uniform(-1, 1, (b, s, s, ch)).astype(np.float32)
  return {"encoder": img(c), "decoder": rng.normal(size=(b, code_size)).astype(np.float32),
          "discriminator": img(c), "classifier": img(3 * c)}


def _djax_fns(net, x):
  variables = net.clone(axis_name=None).init(jax.random.PRNGKey(0), x, train=False)
  params, stats = variables["params"], variables.get("batch_stats", {})
  plain = net.clone(axis_name=None)

  def forward(p, x):
    if stats:
      y, _ = plain.apply({"params": p, "batch_stats": stats}, x, train=True,
                         mutable=["batch_stats"])
      return y
    return plain.apply({"params": p}, x, train=True)

  loss = lambda p, x: jnp.sum(jnp.square(forward(p, x)))
  fwd = jax.jit(forward)
  bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return (lambda: fwd(params, x)), (lambda: bwd(params, x))


def _torch_fns(net, x_nhwc):
  import torch
  x = torch.from_numpy(np.ascontiguousarray(
      x_nhwc.transpose(0, 3, 1, 2) if x_nhwc.ndim == 4 else x_nhwc)).requires_grad_(True)

  def fwd():
    with torch.no_grad():
      return net(x)

  def fwd_bwd():
    net.zero_grad(set_to_none=True)
    x.grad = None
    net(x).square().sum().backward()
  return fwd, fwd_bwd


def _time(fn, block) -> float:
  t0 = time.perf_counter()
  block(fn())
  return time.perf_counter() - t0


def main(argv):
  del argv
  print(host_memory.retain())  # as djax.main runs
  config = _CONFIG.value
  if config.method != "mixing":
    raise app.UsageError(f"per_network profiles the mixing method's networks, not "
                         f"{config.method!r}")
  method = methods.create(config, axis_name=None)
  inputs = _inputs(config, method.code_size)
  nets = {"encoder": method.encoder, "decoder": method.decoder,
          "discriminator": method.discriminator, "classifier": method.classifier}
  calls = {"encoder": 3, "decoder": 3 if config.loss.lambda_rec else 2, "discriminator": 3,
           "classifier": 1}
  torch_nets = None
  try:
    import torch
    from benchmarks import torch_reference
    if _TORCH_THREADS.value:
      torch.set_num_threads(_TORCH_THREADS.value)
    torch_nets = torch_reference.TorchMixing(config).nets
  except ImportError:
    print("torch is not installed: djax figures only")

  block_jax = jax.block_until_ready
  block_none = lambda _: None
  fns = {}
  for name, net in nets.items():
    x = jnp.asarray(inputs[name])
    fwd, fwd_bwd = _djax_fns(net, x)
    fns[("djax", name)] = (fwd, fwd_bwd, block_jax)
    if torch_nets is not None:
      t_fwd, t_fwd_bwd = _torch_fns(torch_nets[name], inputs[name])
      fns[("torch", name)] = (t_fwd, t_fwd_bwd, block_none)
  for fwd, fwd_bwd, block in fns.values():  # compile / warm up
    block(fwd())
    block(fwd_bwd())
  times = {key: {"fwd": [], "fwd_bwd": []} for key in fns}
  for _ in range(_REPEATS.value):
    for key, (fwd, fwd_bwd, block) in fns.items():
      times[key]["fwd"].append(_time(fwd, block))
      times[key]["fwd_bwd"].append(_time(fwd_bwd, block))
  med = {key: {m: 1e3 * statistics.median(v) for m, v in t.items()} for key, t in times.items()}
  print(f"batch {config.train.batch_size}, image {config.data.image_size}, "
        f"median of {_REPEATS.value} (ms)")
  print(f"{'network':14s} {'calls':>5s} {'djax fwd':>9s} {'djax f+b':>9s} {'torch fwd':>9s} "
        f"{'torch f+b':>9s} {'f+b ratio':>9s}")
  rows = {}
  for name in nets:
    d = med[("djax", name)]
    t = med.get(("torch", name), {"fwd": float("nan"), "fwd_bwd": float("nan")})
    ratio = d["fwd_bwd"] / t["fwd_bwd"]
    rows[name] = {"calls": calls[name], "djax_fwd_ms": round(d["fwd"], 1),
                  "djax_fwd_bwd_ms": round(d["fwd_bwd"], 1), "torch_fwd_ms": round(t["fwd"], 1),
                  "torch_fwd_bwd_ms": round(t["fwd_bwd"], 1), "ratio": round(ratio, 3)}
    print(f"{name:14s} {calls[name]:5d} {d['fwd']:9.1f} {d['fwd_bwd']:9.1f} {t['fwd']:9.1f} "
          f"{t['fwd_bwd']:9.1f} {ratio:9.2f}")
  est = {fw: sum(r["calls"] * r[f"{fw}_fwd_bwd_ms"] for r in rows.values())
         for fw in ("djax", "torch")}
  print(f"calls × fwd+bwd: djax {est['djax']:.0f} ms, torch {est['torch']:.0f} ms")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"networks": rows, "calls_times_fwd_bwd_ms": est,
                 "batch_size": config.train.batch_size}, f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
