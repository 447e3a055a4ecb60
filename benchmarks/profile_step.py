"""Profile of one method's train step: where XLA spends the step, by op, from a
``jax.profiler`` trace of a few steady-state steps (compilation excluded).

    python -m benchmarks.profile_step --config=experiments/mixing_sprites.py [--steps=3]

Prints the top ops by total time per step (an op's share of the traced host time), grouped
by HLO op kind as well (convolution, fusion, dot, select-and-scatter, ...); --out writes JSON,
--trace_dir keeps the raw trace for TensorBoard/Perfetto.
"""

from __future__ import annotations

import collections
import json
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks.common import op_kind, op_times, synthetic_batch
from djax import host_memory, methods, train
from djax.methods import base

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_STEPS = flags.DEFINE_integer("steps", 3, "traced steps (after one untraced warm-up step)")
_TOP = flags.DEFINE_integer("top", 20, "ops to list")
_OUT = flags.DEFINE_string("out", "", "write the figures as JSON here")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "keep the trace here (default: temporary)")

def main(argv):
  del argv
  print(host_memory.retain())  # as djax.main runs
  config = _CONFIG.value
  devices = train.local_devices(config)[:1]
  config.num_devices = 1
  method = methods.create(config)
  batch = synthetic_batch(config, 1)
  first = jax.tree_util.tree_map(lambda x: x[0], batch)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), first)
  p_step = jax.pmap(train._make_step(method), axis_name=base.AXIS, devices=devices,
                    donate_argnums=(0,))
  rstate = train.replicate(state, devices)
  rstate, metrics = p_step(rstate, batch)  # compile + warm-up
  jax.block_until_ready(metrics)
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="djax-profile-")
  with jax.profiler.trace(trace_dir):
    for _ in range(_STEPS.value):
      rstate, metrics = p_step(rstate, batch)
    jax.block_until_ready(metrics)
  by_op = op_times(trace_dir)
  steps = _STEPS.value
  total = sum(by_op.values())
  if not by_op:
    raise RuntimeError(f"the trace in {trace_dir} has no per-op events")
  kinds: dict[str, float] = collections.defaultdict(float)
  for name, ns in by_op.items():
    kinds[op_kind(name)] += ns
  print(f"{config.method} batch {config.train.batch_size}: ops sum to {total / steps / 1e6:.0f} "
        f"ms/step (threads overlap; the step's wall time is in benchmarks.train_step)")
  print("by op kind:")
  for kind, ns in sorted(kinds.items(), key=lambda kv: -kv[1])[:12]:
    print(f"  {kind:28s} {ns / steps / 1e6:9.1f} ms  {100 * ns / total:5.1f} %")
  print(f"top {_TOP.value} ops:")
  top = sorted(by_op.items(), key=lambda kv: -kv[1])[:_TOP.value]
  for name, ns in top:
    print(f"  {name[:48]:48s} {ns / steps / 1e6:9.1f} ms  {100 * ns / total:5.1f} %")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"ms_per_step_by_kind": {k: v / steps / 1e6 for k, v in kinds.items()},
                 "top_ops_ms_per_step": {k: v / steps / 1e6 for k, v in top},
                 "trace_dir": trace_dir}, f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
