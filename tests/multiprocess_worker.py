"""One process of tests/test_multiprocess.py: trains the tiny mixing config with
jax.distributed over localhost (CPU, gloo collectives). argv: process_id num_processes port
devices_per_process workdir."""

import os
import sys

pid, nproc, port, ndev, workdir = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                   int(sys.argv[4]), sys.argv[5])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import make_tiny_shapes, tiny_mixing_config  # noqa: E402

# After conftest (which asks for 4 devices), before jax starts its backend.
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
from djax import train  # noqa: E402
from djax.data import registry  # noqa: E402

registry.register_arrays("tiny_shapes", {"train": make_tiny_shapes(256, 0),
                                         "validation": make_tiny_shapes(32, 1),
                                         "test": make_tiny_shapes(96, 2)},
                         {"colour": 3, "size": 3})
c = tiny_mixing_config(steps=3, batch_size=8)
c.num_devices = 0
c.tensorboard = False
c.eval.metrics = ("chunk_retrieval_map",)
if nproc > 1:
  c.distributed = True
  c.coordinator_address = f"localhost:{port}"
  c.num_processes = nproc
  c.process_id = pid
out = train.train_and_evaluate(c, workdir)
print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local,"
      f" {jax.device_count()} global devices; end step {out['end_step']}", flush=True)
