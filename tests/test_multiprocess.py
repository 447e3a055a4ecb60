"""Multi-host data parallelism, on one machine: two processes x two CPU devices, joined by
jax.distributed over localhost, train exactly as one process x four devices (same losses,
same parameters), and only process 0 writes logs and eval.json."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


def _free_port() -> str:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return str(s.getsockname()[1])


def _run(nproc, ndev, workdir, timeout=600):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(WORKER)),
                                       env.get("PYTHONPATH", "")])
  procs = [subprocess.Popen([sys.executable, WORKER, str(i), str(nproc), port, str(ndev),
                             workdir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env) for i in range(nproc)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("a process hung")
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _losses(workdir):
  return [{k: v for k, v in json.loads(l).items() if k.startswith("loss") or k == "step"}
          for l in open(os.path.join(workdir, "metrics.jsonl"))]


def _params(workdir):
  from djax import checkpoint
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  state = ckpt.restore_untargeted()[0]
  ckpt.close()
  return state["params"]


def test_two_processes_of_two_devices_train_as_one_process_of_four(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _run(1, 4, one)
  outs = _run(2, 2, two)
  assert "process 1 of 2: 2 local, 4 global devices; end step 3" in "".join(outs), outs[1][-2000:]
  l1, l2 = _losses(one), _losses(two)
  assert len(l1) == len(l2) == 3  # process 0 alone wrote metrics.jsonl
  for a, b in zip(l1, l2):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=1e-6, err_msg=k)
  import jax
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6),
                         _params(one), _params(two))
  assert os.path.exists(os.path.join(two, "eval.json"))
