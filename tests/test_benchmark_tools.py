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


def test_synthetic_batches_have_the_datasets_channels():
  import ml_collections
  cfg = lambda name, size, **data: ml_collections.ConfigDict({
      "train": {"batch_size": 8}, "model": {"num_classes": 10},
      "data": {"name": name, "image_size": size, "value_range": (-1.0, 1.0),
               "label_key": "label", "data_dir": "", **data}})
  b = profile_step.synthetic_batch(cfg("mnist_5k", 28), 2)  # Zheng & Sun's MNIST config
  assert b["image"].shape == (2, 4, 28, 28, 1)
  assert b["labels"]["label"].shape == (2, 4) and b["labels"]["label"].max() < 10
  assert profile_step.synthetic_batch(cfg("cifar10", 32), 1)["image"].shape[-1] == 3
  assert profile_step.synthetic_batch(cfg("mnist_5k", 28, channels=3), 1)["image"].shape[-1] == 3


def test_step_flops_counts_a_matrix_product():
  f = jax.pmap(lambda x, y: x @ y)
  # [8, 16] @ [16, 4]: 8 * 4 outputs of 16 multiply-adds each.
  assert profile_step.step_flops(f, jnp.ones((1, 8, 16)), jnp.ones((1, 16, 4))) == 2 * 8 * 16 * 4
  assert profile_step.step_flops(lambda *a: None, 1, 2) is None  # no .lower: no count, no error
