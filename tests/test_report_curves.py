"""djax.report draws every run's logged quantities from metrics.jsonl, runs overlaid."""

import json
import os

import numpy as np
from PIL import Image

from djax import report


def _run(tmp_path, name, rows):
  d = tmp_path / name
  d.mkdir()
  with open(d / "metrics.jsonl", "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    f.write('{"step": 9, "loss')  # a half-written last row of a killed run is skipped
  return str(d)


def test_curves_are_read_and_drawn_per_run(tmp_path):
  a = _run(tmp_path, "a", [{"step": s, "loss_x": 10.0 / s, "steps_per_second": 3.0,
                            "epoch": 0, "acc": 0.1 * s} for s in range(1, 6)])
  b = _run(tmp_path, "b", [{"step": s, "loss_x": 1.0 + s} for s in range(1, 4)])
  ca, cb = report.load_curves(a), report.load_curves(b)
  assert set(ca) == {"loss_x", "acc"}  # step counters are not curves
  assert ca["loss_x"] == [(s, 10.0 / s) for s in range(1, 6)]
  assert cb == {"loss_x": [(1, 2.0), (2, 3.0), (3, 4.0)]}
  path = report.curves_chart([("a", ca), ("b", cb)], str(tmp_path / "out" / "curves.png"))
  img = np.asarray(Image.open(path).convert("RGB"))
  colours = {tuple(c) for c in img.reshape(-1, 3)}
  assert tuple(report.PALETTE[0]) in colours and tuple(report.PALETTE[1]) in colours
  assert img.shape[1] == 3 * 330  # three panels a row; two quantities fit one row
  assert report.curves_chart([("empty", {})], str(tmp_path / "none.png")) is None
  assert not os.path.exists(tmp_path / "none.png")
