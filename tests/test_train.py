"""The generic trainer: determinism, data parallelism, resuming, stopping and bad losses."""

import glob
import json
import os
import signal

import chex
import jax
import numpy as np
import pytest

from conftest import tiny_mixing_config
from djax import checkpoint, train
from djax.data import pipeline


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k.startswith(("loss", "step")) and k != "steps_per_second"}
          for r in rows]


def _params(workdir, config):
  from djax import methods
  method = methods.create(config)
  data = pipeline.get_dataset(config.data, "train", batch_size=config.train.batch_size,
                              num_devices=1, seed=config.seed, pairing="random")
  like = train.create_state(method, config, data)
  state, _ = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(like)
  return state


def test_same_seed_same_losses_bit_for_bit(tmp_path):
  c = tiny_mixing_config(steps=3)
  c.num_devices = 1
  c.eval.at_end = False
  out = train.train_and_evaluate(c, str(tmp_path / "a"))
  assert out["train_step_traces"] == 1  # the mixing step compiles once per run
  train.train_and_evaluate(c, str(tmp_path / "b"))
  a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
  assert len(a) == 3 and a == b
  c.seed = 1
  train.train_and_evaluate(c, str(tmp_path / "c"))
  assert _losses(tmp_path / "c") != a


def test_four_devices_match_one_device(tmp_path):
  assert jax.local_device_count() == 4, "conftest forces 4 CPU devices"
  runs = {}
  for n in (1, 4):
    c = tiny_mixing_config(steps=3, batch_size=8)
    c.num_devices = n
    c.eval.at_end = False
    train.train_and_evaluate(c, str(tmp_path / f"d{n}"))
    runs[n] = (_losses(tmp_path / f"d{n}"), _params(tmp_path / f"d{n}", c))
  (l1, s1), (l4, s4) = runs[1], runs[4]
  for r1, r4 in zip(l1, l4):
    assert r1.keys() == r4.keys()
    for k in r1:
      np.testing.assert_allclose(r4[k], r1[k], rtol=2e-4, atol=1e-5, err_msg=k)
  chex.assert_trees_all_close((s4.params, s4.batch_stats), (s1.params, s1.batch_stats),
                              rtol=1e-3, atol=2e-5)


def test_resume_continues_where_it_stopped(tmp_path):
  c = tiny_mixing_config(steps=4)
  c.num_devices = 2
  c.eval.at_end = False
  train.train_and_evaluate(c, str(tmp_path / "straight"))
  c.train.steps = 2
  first = train.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert first["end_step"] == 2
  c.train.steps = 4
  second = train.train_and_evaluate(c, str(tmp_path / "resumed"))
  assert second["start_step"] == 2 and second["end_step"] == 4
  assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")


def test_outputs_of_a_run(tmp_path):
  c = tiny_mixing_config(steps=2)
  c.train.save_every = 1
  c.train.keep_checkpoints = 1
  w = str(tmp_path)
  summary = train.train_and_evaluate(c, w)
  assert checkpoint.Checkpointer(os.path.join(w, "checkpoints")).all_steps() == [2]
  assert glob.glob(os.path.join(w, "tensorboard", "events.out.tfevents.*"))
  pngs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(w, "samples", "*.png")))
  assert "transfer_chunk0_0000002.png" in pngs and "overview_0000002.png" in pngs
  with open(os.path.join(w, "eval.json")) as f:
    ev = json.load(f)
  table = ev["results"]["chunk_retrieval_map"]
  assert ev["step"] == 2 and ev["split"] == "test"
  assert np.asarray(table["map"]).shape == (c.model.n_chunks, 2)
  assert summary["eval"]["step"] == 2


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  c = tiny_mixing_config(steps=2)
  c.eval.at_end = False
  w = str(tmp_path)
  train.train_and_evaluate(c, w)
  from djax.methods import mixing
  monkeypatch.setattr(mixing, "mixing_loss", lambda x4, x1: (x4 - x1).sum() * np.nan)
  c.train.steps = 4
  with pytest.raises(train.NonFiniteLossError, match=r"loss_mix became nan at step 3"):
    train.train_and_evaluate(c, w)
  assert checkpoint.Checkpointer(os.path.join(w, "checkpoints")).latest_step() == 2


def test_sigterm_saves_and_rerun_resumes(tmp_path, monkeypatch):
  c = tiny_mixing_config(steps=1000)
  c.eval.at_end = False
  c.train.save_every = 1000
  w = str(tmp_path)
  original = pipeline.Pipeline.batch

  def batch_then_signal(self, step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, step)

  monkeypatch.setattr(pipeline.Pipeline, "batch", batch_then_signal)
  summary = train.train_and_evaluate(c, w)
  assert summary["stopped_by"] == "SIGTERM"
  stopped = summary["end_step"]
  assert 1 <= stopped < 10
  assert checkpoint.Checkpointer(os.path.join(w, "checkpoints")).latest_step() == stopped
  monkeypatch.setattr(pipeline.Pipeline, "batch", original)
  c.train.steps = stopped + 1
  again = train.train_and_evaluate(c, w)
  assert again["start_step"] == stopped and again["end_step"] == stopped + 1


def test_sigterm_during_a_log_step_still_saves(tmp_path, monkeypatch):
  """A signal that lands while a log step is being written (after the step decided it was
  not the last) stops the run one step later, with a checkpoint at the step it stops on."""
  c = tiny_mixing_config(steps=1000)
  c.eval.at_end = False
  c.train.save_every = 1000
  c.train.log_every = 2
  w = str(tmp_path)
  original = train.MetricWriter.write

  def write_then_signal(self, step, scalars):
    original(self, step, scalars)
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(train.MetricWriter, "write", write_then_signal)
  summary = train.train_and_evaluate(c, w)
  assert summary["stopped_by"] == "SIGTERM"
  assert summary["end_step"] == 3
  assert checkpoint.Checkpointer(os.path.join(w, "checkpoints")).latest_step() == 3
