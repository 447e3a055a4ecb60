"""Hu et al. 2018 runs end to end at a tiny size: the retrieval curve during training, the
untrained row of eval.json, the GAN-balancing options, Table 2's rows in one command and
the MNIST / CelebA configs."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_mixing_config
from djax import evaluation, methods, report, train
from djax.data import pipeline


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_tracked_map_curve_and_untrained_row(tmp_path):
  c = tiny_mixing_config(steps=4)
  c.num_devices = 1
  c.eval.metrics = ("chunk_retrieval_map",)
  c.eval.track_every = 2
  w = str(tmp_path / "run")
  summary = train.train_and_evaluate(c, w)
  tracked = {r["step"]: r["eval/nn_map/average"] for r in _rows(w) if "eval/nn_map/average" in r}
  assert sorted(tracked) == [0, 2, 4]

  # The untrained row is the same evaluation on the initial parameters, recomputed here.
  method = methods.create(c)
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=c.seed, pairing=c.data.pairing)
  state0 = train.create_state(method, c, data)
  source, _ = pipeline.load_split(c.data, c.eval.split)
  want = evaluation.headline(evaluation.evaluate_representation(
      method, state0.params, state0.batch_stats, c, source))
  with open(os.path.join(w, "eval.json")) as f:
    ev = json.load(f)
  assert ev["untrained"]["step"] == 0
  for k, v in want.items():
    np.testing.assert_allclose(ev["untrained"]["headline"][k], v, rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(tracked[0], want["nn_map/average"], rtol=1e-5)
  # The last tracked point is the final evaluation's number (same split, same state).
  np.testing.assert_allclose(tracked[4], summary["eval"]["headline"]["nn_map/average"],
                             rtol=1e-5)
  assert tracked[4] != tracked[0]  # training moved the code

  # djax.report: the curve is a panel of curves.png, the untrained row a column of its own.
  md, _, _ = report.make_report([w], str(tmp_path / "report"))
  assert "run untrained" in md
  assert "eval/nn_map/average" in report.load_curves(w)
  assert os.path.exists(tmp_path / "report" / "curves.png")


def test_tracking_a_subset_and_bad_tracking_config(tmp_path):
  c = tiny_mixing_config(steps=2)
  c.num_devices = 1
  c.eval.at_end = False
  c.eval.metrics = ("chunk_retrieval_map",)
  c.eval.track_every = 2
  c.eval.track_examples = 40
  w = str(tmp_path / "sub")
  train.train_and_evaluate(c, w)
  assert [r["step"] for r in _rows(w) if "eval/nn_map/average" in r] == [0, 2]
  assert not os.path.exists(os.path.join(w, train.UNTRAINED))  # at_end=False: no eval at all

  c.eval.metrics = ()
  with pytest.raises(ValueError, match="nothing to track"):
    train.train_and_evaluate(c, str(tmp_path / "bad"))
