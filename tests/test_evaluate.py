"""djax.evaluate on a checkpoint of the tiny mixing run, and djax.report over two runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_mixing_config
from djax import evaluate, evaluation, report, train

METRICS = ["chunk_retrieval_map", "retrieval_map", "linear_probe", "mig", "sap", "dci",
           "factor_vae", "beta_vae"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run directory with a checkpoint at step 2 of the tiny mixing config (the initial
  state saved as the trainer saves it: compiling no train step keeps this fast)."""
  from djax import checkpoint, methods
  from djax.data import pipeline
  w = str(tmp_path_factory.mktemp("run"))
  c = tiny_mixing_config(steps=2)
  method = methods.create(c)
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=c.seed, pairing=c.data.get("pairing"))
  state = train.create_state(method, c, data)
  state = state.replace(step=np.asarray(2, np.int32))
  ckpt = checkpoint.Checkpointer(os.path.join(w, "checkpoints"))
  ckpt.save(2, state, c.to_dict())
  ckpt.close()
  return w


def test_evaluate_writes_eval_json_with_versions_and_split(run_dir, capsys):
  rep = evaluate.evaluate_run(run_dir, metrics=METRICS, overrides={"eval.code_slice": "0:4"})
  out = capsys.readouterr().out
  for title in ("retrieval mAP per chunk", "MIG =", "SAP =", "DCI:", "FactorVAE score",
                "BetaVAE score", "Linear probe accuracy"):
    assert title in out, title
  with open(os.path.join(run_dir, "eval.json")) as f:
    ev = json.load(f)
  assert ev["step"] == 2 and ev["split"] == "test" and ev["probe_split"] == "validation"
  assert ev["dataset"] == "tiny_shapes" and ev["method"] == "mixing"
  assert ev["metric_versions"] == {m: evaluation.METRICS[m].version for m in METRICS}
  assert set(ev["results"]) == set(METRICS) and set(ev["seconds"]) >= set(METRICS)
  assert np.asarray(ev["results"]["chunk_retrieval_map"]["map"]).shape == (4, 2)
  assert ev["results"]["retrieval_map"]["dims"] == "0:4"
  for k in ("mig", "sap", "factor_vae", "beta_vae", "dci/disentanglement", "nn_map/colour",
            "probe/size"):
    assert 0.0 <= ev["headline"][k] <= 1.0, k
  assert rep["headline"] == ev["headline"]


def test_evaluate_rejects_unknown_metric(run_dir, tmp_path):
  with pytest.raises(ValueError, match=r"unknown metric\(s\) \['nope'\] in --metrics"):
    evaluate.evaluate_run(run_dir, metrics=["nope"], out=os.path.join(run_dir, "x.json"))
  assert not os.path.exists(os.path.join(run_dir, "x.json"))
  # Named before anything loads: a directory with no checkpoint still gets the metric's error.
  with pytest.raises(ValueError, match="in --metrics"):
    evaluate.evaluate_run(str(tmp_path / "no_run"), metrics=["nope"])


def test_report_table_and_png_from_two_runs(tmp_path):
  # Two runs' eval.json (one shaped like a sprites mixing run, so Hu et al.'s numbers apply).
  runs = []
  for i, (name, dataset) in enumerate((("mix-a", "sprites/small"), ("mix-b", "sprites/small"))):
    d = tmp_path / name
    d.mkdir()
    results = {"chunk_retrieval_map": {
        "best_map": {"body": 0.6 + i / 10, "pose": 0.4}, "best_average": 0.5 + i / 20},
        "mig": {"score": 0.1 * (i + 1)}, "dci": {"disentanglement": 0.3, "completeness": 0.2,
                                               "informativeness_test": 0.9}}
    with open(d / "eval.json", "w") as f:
      json.dump({"step": 10, "method": "mixing", "dataset": dataset, "split": "test",
                 "results": results}, f)
    runs.append(str(d))
  out = tmp_path / "rep"
  proc = subprocess.run([sys.executable, "-m", "djax.report", *runs, f"--out={out}"],
                        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))), timeout=120)
  assert proc.returncode == 0, proc.stderr
  md = (out / "report.md").read_text()
  assert "| metric | mix-a | mix-b | paper: MIX + C + G [1] |" in md
  assert "| nn_map/body | 0.600 | 0.700 | 0.580 |" in md
  assert "| mig | 0.100 | 0.200 |  |" in md
  assert "Hu et al. 2018, Table 2" in md
  from PIL import Image
  img = Image.open(out / "report.png")
  assert img.size[0] > 300 and img.size[1] > 100
  colours = {tuple(p) for p in np.asarray(img.convert("RGB")).reshape(-1, 3)[::7]}
  assert tuple(report.PALETTE[0]) in colours and tuple(report.PALETTE[2]) in colours  # runs, paper


def test_paper_numbers_file_is_consistent():
  with open(report.PAPER_NUMBERS) as f:
    table = json.load(f)
  for key, entry in table.items():
    if key.startswith("_"):
      continue
    assert entry["compare_row"] in entry["rows"], key
    assert "Table" in entry["source"], key
    for row in entry["rows"].values():
      assert all(isinstance(v, (int, float)) for v in row.values())
  hu = table["hu2018_table2"]["rows"]
  assert hu["MIX + C + G"]["nn_map/average"] == 0.70 and hu["Random"]["nn_map/pose"] == 0.006
