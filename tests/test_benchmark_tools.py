"""The profiling helpers of benchmarks/profile_step.py (benchmarks/common.py), on a trace of a
tiny jitted function."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common as profile_step


def test_op_kind_strips_instance_numbers():
  assert profile_step.op_kind("ynn_fusion.129") == "ynn_fusion"
  assert profile_step.op_kind("copy_bitcast_fusion.3.1") == "copy_bitcast_fusion"
  assert profile_step.op_kind("select-and-scatter") == "select-and-scatter"


def test_op_times_reads_the_ops_of_a_trace(tmp_path):
  a = jnp.asarray(np.random.default_rng(0).normal(size=(256, 256)), jnp.float32)
  f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
  jax.block_until_ready(f(a))
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(3):
      jax.block_until_ready(f(a))
  times = profile_step.op_times(str(tmp_path))
  assert times and all(ns >= 0 for ns in times.values())
  kinds = {profile_step.op_kind(n) for n in times}
  # Two matrix products ran, as dots or library fusions; no container event is counted.
  assert any("dot" in k or "fusion" in k for k in kinds), kinds
  assert not any(k.startswith(("PjitFunction", "PmapFunction")) for k in kinds), kinds
