"""Evaluate a run's checkpoint: ``python -m djax.evaluate --workdir=W [--step=N]``.

Rebuilds the method from the config stored with the checkpoint, restores its state (the
latest checkpoint, or ``--step``), computes every metric ``config.eval.metrics`` names (or
``--metrics=a,b``) on ``config.eval.split`` (or ``--split``), prints one table per metric
and writes ``W/eval.json`` atomically: the step, dataset, split, the probe split, the
metric versions, seconds per metric, the headline numbers and the full results.

``--out=PATH`` writes the JSON elsewhere (e.g. for a run directory you must not write
into).  ``--set=eval.code_slice=0:16`` (repeatable; values parsed as JSON where they parse)
overrides or adds config values before the method is rebuilt.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import app, flags, logging

def _parse(value: str):
  try:
    return json.loads(value)
  except ValueError:
    return value


def load_run(workdir: str, step: int | None = None, overrides: dict | None = None):
  """(method, state, config, step) of a run's checkpoint."""
  import ml_collections
  import orbax.checkpoint as ocp

  from djax import checkpoint as ckpt_lib
  from djax import methods, train
  from djax.data import pipeline

  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
  try:
    cfg = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    cfg = cfg["config"]
  except Exception:  # older layouts: the resolved config the trainer writes
    with open(os.path.join(workdir, "config.json")) as f:
      cfg = json.load(f)
  config = ml_collections.ConfigDict(cfg)
  for key, value in (overrides or {}).items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  method = methods.create(config)
  train_data = pipeline.get_dataset(config.data, "train", batch_size=config.train.batch_size,
                                    num_devices=1, seed=config.seed,
                                    pairing=config.data.get("pairing"))
  like = train.create_state(method, config, train_data)
  state, _ = ckpt.restore(like, step)
  ckpt.close()
  return method, state, config, step


def evaluate_run(workdir: str, *, step: int | None = None, metrics=None, split: str | None = None,
                 out: str | None = None, overrides: dict | None = None,
                 verbose: bool = True) -> dict[str, Any]:
  """Evaluates a checkpoint, prints the tables, writes the JSON; returns the report."""
  from djax import evaluation, train
  from djax.data import pipeline
  from djax.metrics import summary

  overrides = dict(overrides or {})
  if split:
    overrides["eval.split"] = split
  method, state, config, step = load_run(workdir, step, overrides)
  return evaluate_state(method, state, config, workdir, step=step, metrics=metrics, out=out,
                        verbose=verbose)


def evaluate_state(method, state, config, workdir: str, *, step: int, metrics=None,
                   out: str | None = None, verbose: bool = True) -> dict[str, Any]:
  """Scores a state with ``config.eval`` (the trainer's end-of-run evaluation too)."""
  from djax import evaluation, train
  from djax.data import pipeline
  from djax.metrics import summary

  names = list(config.eval.metrics if metrics is None else metrics)
  source, meta = pipeline.load_split(config.data, config.eval.split)
  timings: dict[str, float] = {}
  t0 = time.time()
  results = evaluation.evaluate_representation(method, state.params, state.batch_stats, config,
                                               source, metrics=names, timings=timings)
  report = {
      "step": int(step), "method": config.method, "dataset": meta.name,
      "split": config.eval.split, "num_examples": meta.size,
      "probe_split": config.eval.get("probe_split", None) or "validation",
      "factors": list(config.eval.factors), "seed": int(config.get("seed", 0)),
      "metric_versions": evaluation.metric_versions(names),
      "seconds": {k: round(v, 3) for k, v in timings.items()},
      "total_seconds": round(time.time() - t0, 3),
      "headline": summary.headline(results), "results": results,
  }
  path = out or os.path.join(workdir, "eval.json")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(train._jsonable(report), f, indent=2)
  os.replace(path + ".tmp", path)
  if verbose:
    print(f"\n{config.method} on {meta.name}:{config.eval.split} ({meta.size} examples), "
          f"step {step}\n")
    print(summary.format_results(results))
    print("\nseconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"wrote {path}")
  return report


def _define_flags():
  """Flags exist only when this module is the program (importing it defines none, so it
  can be imported next to djax.main, whose --workdir it would clash with)."""
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_list("metrics", None, "Metrics to compute (default: config.eval.metrics).")
  flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval.split).")
  flags.DEFINE_string("out", None, "Where to write the JSON (default: WORKDIR/eval.json).")
  flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE (VALUE parsed as JSON when "
                            "it parses), e.g. --set=eval.probe_split=validation.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS["verbosity"].using_default_value:
    logging.set_verbosity(logging.WARNING)
  overrides = {}
  for item in f.set:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set needs KEY=VALUE, got {item!r}")
    overrides[key] = _parse(value)
  evaluate_run(f.workdir, step=f.step, metrics=f.metrics, split=f.split, out=f.out,
               overrides=overrides)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
