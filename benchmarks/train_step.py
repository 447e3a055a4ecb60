"""Seconds per train step of a method at a config, on synthetic batches of the config's shape.

    python -m benchmarks.train_step --config=experiments/mixing_sprites.py:small [--steps=10]
    python -m benchmarks.train_step --config=experiments/mixing_sprites.py --out=bench.json
    python -m benchmarks.train_step --config=experiments/jacobian_mnist.py:small --notorch

Prints compile time, steady-state ms/step (median of --steps after warm-up, with min/max),
images/s, XLA's FLOP count of the compiled step (on CPU also of the same step with the
native ops an accelerator lowers: a step there takes at least that count over the device's
peak rate), peak resident memory, device kind and count, jax/flax versions; --out writes
JSON.
The step is the trainer's own pmapped step (donated state), so the figure is what a run pays.
``--host_memory`` (default ``retain``, as ``djax.main`` sets it) applies to both frameworks:
they run in one process, one after the other.

``--torch`` (the default when PyTorch is importable, ``--notorch`` to skip) then times the
PyTorch reference of the same networks and step (``benchmarks/torch_reference.py``, eager,
same batch) and prints its figures and ``djax_ms/torch_ms`` (above 1: PyTorch is faster);
the JSON gets them as ``torch`` and ``djax_over_torch``. Methods without a PyTorch reference
print a note instead.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import resource
import statistics
import time

import flax
import jax
from absl import app, flags
from ml_collections import config_flags

from djax import host_memory, methods, train
from benchmarks.common import step_flops, synthetic_batch
from djax.methods import base

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:variant]")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps after warm-up")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
_OUT = flags.DEFINE_string("out", "", "write the figures as JSON here")
_TORCH = flags.DEFINE_bool("torch", importlib.util.find_spec("torch") is not None,
                           "also time the PyTorch reference (benchmarks/torch_reference.py)")
_HOST_MEMORY = flags.DEFINE_enum(
    "host_memory", "retain", ["retain", "default"],
    "glibc allocator settings for the whole process, djax and PyTorch alike: 'retain' is "
    "what djax.main sets (djax/host_memory.py), 'default' leaves glibc as it starts")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0,
                                      "torch.set_num_threads for the reference; 0: PyTorch's "
                                      "default (one per core)")
flags.mark_flags_as_required(["config"])

def build_step(config, devices):
  """(the trainer's pmapped step with donated state, the replicated initial state, a
  synthetic batch) of the config on ``devices``."""
  method = methods.create(config)
  batch = synthetic_batch(config, len(devices))
  first = jax.tree_util.tree_map(lambda x: x[0], batch)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), first)
  p_step = jax.pmap(train._make_step(method), axis_name=base.AXIS, devices=devices,
                    donate_argnums=(0,))
  return p_step, train.replicate(state, devices), batch


def measure(config, steps: int = 10, warmup: int = 2) -> dict:
  devices = train.local_devices(config)
  p_step, rstate, batch = build_step(config, devices)
  t0 = time.perf_counter()
  rstate, metrics = p_step(rstate, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    rstate, metrics = p_step(rstate, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    rstate, metrics = p_step(rstate, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  flops = step_flops(p_step, rstate, batch)  # after the timing: its compile is not counted
  return {
      "method": config.method, "data": config.data.name, "image_size": config.data.image_size,
      "batch_size": config.train.batch_size, "compile_plus_first_step_s": round(compile_s, 3),
      "ms_per_step_median": round(1e3 * med, 2), "ms_per_step_min": round(1e3 * min(times), 2),
      "ms_per_step_max": round(1e3 * max(times), 2),
      "images_per_s": round(config.train.batch_size / med, 1),
      "xla_gflop_per_step_per_device": None if flops is None else round(flops / 1e9, 2),
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "device_kind": devices[0].device_kind, "device_count": len(devices),
      "jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
  }


def accelerator_flops(config) -> float | None:
  """``step_flops`` of the step as a GPU or TPU would lower it: djax/nn's backend switch
  told it is not on CPU, so every layer is the native convolution, transposed convolution
  and pool. Only compiled here, never run."""
  from unittest import mock
  with mock.patch.object(jax, "default_backend", lambda: "gpu"):
    return step_flops(*build_step(config, train.local_devices(config)[:1]))


def measure_torch(config, steps: int = 10, warmup: int = 2, threads: int = 0) -> dict | None:
  """The PyTorch reference's figures on the same batch as djax's, or None (with a note)
  where the method has none."""
  from benchmarks import torch_reference
  try:
    return torch_reference.measure_torch(config, steps, warmup,
                                         batch=synthetic_batch(config, 1), threads=threads)
  except NotImplementedError as e:
    print(f"torch reference skipped: {e}")
    return None


def main(argv):
  del argv
  note = host_memory.retain() if _HOST_MEMORY.value == "retain" else "host memory: default"
  config = _CONFIG.value
  result = {**measure(config, _STEPS.value, _WARMUP.value), "host_memory": note}
  if jax.default_backend() == "cpu":
    native = accelerator_flops(config)
    result["xla_gflop_per_step_native_ops"] = None if native is None else round(native / 1e9, 2)
  width = max(map(len, result))
  for k, v in result.items():
    print(f"{k:<{width}}  {v}")
  if _TORCH.value:
    ref = measure_torch(config, _STEPS.value, _WARMUP.value, _TORCH_THREADS.value)
    if ref is not None:
      result["torch"] = ref
      result["djax_over_torch"] = round(result["ms_per_step_median"] / ref["ms_per_step_median"],
                                        3)
      named = {(k if k.startswith("torch") else f"torch_{k}"): v for k, v in ref.items()}
      width = max(width, *map(len, named))
      for k, v in named.items():
        print(f"{k:<{width}}  {v}")
      print(f"{'djax_ms/torch_ms':<{width}}  {result['djax_over_torch']}  "
            f"(djax {result['ms_per_step_median']} ms, torch {ref['ms_per_step_median']} ms "
            f"per step, medians; above 1: torch faster)")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
