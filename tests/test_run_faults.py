"""Faults seen through the trainer: a damaged latest checkpoint mid-run, a second run on the
same workdir, a diverging loss, a resume's metrics.jsonl, and bad counters. Each case checks
that nothing good is lost (checkpoint-level cases: tests/test_faults.py)."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_mixing_config
from djax import checkpoint, methods, train, workdir_lock
from djax.data import pipeline
from test_faults import _data_file, _flip_middle, _holder


def _config(steps, save_every=2):
  c = tiny_mixing_config(steps=steps)
  c.num_devices = 1
  c.eval.at_end = False
  c.train.save_every = save_every
  c.train.keep_checkpoints = 5
  return c


def _final_params(workdir, c):
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=c.seed, pairing=c.data.get("pairing"))
  like = train.create_state(methods.create(c), c, data)
  ck = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, _ = ck.restore(like, ck.latest_step())
  return state.params


def _steps(workdir):
  return [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]


def test_damaged_latest_checkpoint_mid_run_resumes_from_the_previous_one(tmp_path, capsys):
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  train.train_and_evaluate(_config(6), ref)
  train.train_and_evaluate(_config(4), run)
  _flip_middle(_data_file(os.path.join(run, "checkpoints", "4")))
  train.train_and_evaluate(_config(6), run)
  assert "resumed from step 2" in capsys.readouterr().out
  assert os.listdir(os.path.join(run, "checkpoints", "corrupt")) == ["4-checksum"]  # kept
  c = _config(6)
  for a, b in zip(*(jax_leaves(_final_params(w, c)) for w in (ref, run))):
    np.testing.assert_array_equal(a, b)  # the same final state as an uninterrupted run
  assert _steps(run) == [1, 2, 3, 4, 5, 6]  # replayed steps are logged once


def jax_leaves(tree):
  import jax
  return jax.tree_util.tree_leaves(tree)


def test_a_second_run_on_the_same_workdir_stops_before_any_work(tmp_path):
  with _holder(tmp_path) as p:
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f"in use by pid {p.pid}"):
      train.train_and_evaluate(_config(2), str(tmp_path))
    p.stdin.write("\n")
    p.stdin.flush()
  assert not os.path.exists(tmp_path / "checkpoints")
  assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_divergence_stops_and_keeps_the_checkpoint_before_it(tmp_path, monkeypatch):
  w = str(tmp_path)
  c = _config(8)
  c.train.keep_checkpoints = 1
  c.train.divergence_factor = 100.0
  from djax.methods import mixing
  real = mixing.mixing_loss
  # Six sound steps, then (a new process would do the same: the running median is read back
  # from metrics.jsonl) a loss 1e6 x larger from step 7 on.
  train.train_and_evaluate(_config(6, save_every=2), w)
  monkeypatch.setattr(mixing, "mixing_loss", lambda x4, x1: real(x4, x1) * 1e6)
  with pytest.raises(train.DivergenceError, match=r"loss_mix became .* at step 7, over 100 x "
                                                  r"its running median"):
    train.train_and_evaluate(c, w)
  ck = checkpoint.Checkpointer(os.path.join(w, "checkpoints"))
  assert ck.latest_step() == 6 and ck.good_step() == 6  # nothing after the divergence saved


@pytest.mark.parametrize("key,value", [("steps", 0), ("steps", -5), ("save_every", 0),
                                       ("log_every", 0), ("batch_size", 0)])
def test_bad_counters_fail_before_any_work(tmp_path, key, value):
  c = _config(2)
  c.train[key] = value
  with pytest.raises(ValueError, match=f"config.train.{key} is {value}"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_a_batch_that_does_not_split_over_the_devices_fails_before_any_work(tmp_path):
  c = _config(2)
  c.num_devices = 3
  c.train.batch_size = 8
  with pytest.raises(ValueError, match="does not split over 3 devices"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_the_loop_waits_on_the_step_max_steps_in_flight_back(tmp_path, monkeypatch):
  """With no log or save step to sync on, the host still waits for the step two back, so a
  Ctrl-C stops within a couple of steps of the device's real work."""
  import jax
  c = _config(7, save_every=1000)
  c.train.log_every = 1000
  c.train.max_steps_in_flight = 2
  waited = []
  real = jax.block_until_ready
  monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(1) or real(x))
  out = train.train_and_evaluate(c, str(tmp_path))
  assert out["end_step"] == 7
  assert len(waited) == 7 - 2  # steps 3..7 each wait for step (done - 2)


def test_a_second_sigint_aborts(monkeypatch):
  stop = train._StopRequest()
  stop._handle(2, None)
  assert stop.requested == "SIGINT"
  with pytest.raises(KeyboardInterrupt):
    stop._handle(2, None)


def test_main_turns_an_abort_into_one_line(monkeypatch, capsys):
  from absl import flags
  from djax import main, stages
  flags.FLAGS(["djax.main", "--config=experiments/mixing_sprites.py:small",
               "--workdir=/tmp/unused-abort", "--noretain_host_memory", "--compile_cache="])
  monkeypatch.setattr(stages, "main", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
  monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
  try:
    with pytest.raises(SystemExit) as e:
      main.main(["djax.main"])
  finally:
    flags.FLAGS.unparse_flags()
  assert e.value.code == 130
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["djax: aborted; the last checkpoint is intact, rerun to resume"]


def _cli(args, cwd):
  import subprocess
  import sys
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env,
                     timeout=300)
  return p.returncode, p.stdout + p.stderr


def test_user_errors_are_one_line_and_write_nothing(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cfg = os.path.join(repo, "experiments", "mixing_sprites.py")
  bad = tmp_path / "bad_config.py"
  bad.write_text("def get_config(:\n  pass\n")
  afile = tmp_path / "afile"
  afile.write_text("")
  cases = [
      (["-m", "djax.main", f"--config={cfg}:small", "--config.train.stepz=3"],
       "unknown config key 'stepz' in --config.train.stepz; did you mean 'steps'?"),
      (["-m", "djax.main", f"--config={tmp_path}/nope.py"], "config file"),
      (["-m", "djax.main", f"--config={bad}"], "has a syntax error at line 1"),
      (["-m", "djax.main", f"--config={cfg}:smal"], f"{cfg}:smal: unknown variant"),
      (["-m", "djax.main", f"--config={cfg}:small", f"--workdir={afile}"],
       f"--workdir {afile} is a file"),
      (["-m", "djax.evaluate", f"--workdir={tmp_path}/none"], "no checkpoints in"),
  ]
  for args, want in cases:
    code, out = _cli(args + ["--noretain_host_memory"] * (args[1] == "djax.main"), tmp_path)
    errors = [l for l in out.splitlines() if "error:" in l]
    assert code != 0 and len(errors) == 1 and want in errors[0], (args, out[-2000:])
    assert "Traceback" not in out, out[-2000:]
  assert sorted(os.listdir(tmp_path)) == ["afile", "bad_config.py"]  # nothing created
