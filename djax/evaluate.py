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
from typing import Any

from absl import app, flags, logging

def _parse(value: str):
  try:
    return json.loads(value)
  except ValueError:
    return value


def load_run(workdir: str, step: int | None = None, overrides: dict | None = None):
  """(method, state, config, step) of a run's checkpoint. The state is read as saved (no
  target structure), so a stage that started from another one needs nothing else."""
  import ml_collections

  from djax import checkpoint as ckpt_lib
  from djax import methods
  from djax.methods import base

  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {workdir}: pass the --workdir of a run")
  ckpt = ckpt_lib.Checkpointer(directory)
  try:
    steps = ckpt.all_steps()
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; steps there: "
                              f"{sorted(steps)}")
    try:
      cfg = ckpt.restore_config(step)
    except Exception:  # older layouts: the resolved config the trainer writes
      with open(os.path.join(workdir, "config.json")) as f:
        cfg = json.load(f)
    raw = ckpt.restore_untargeted(step)[0]
  finally:
    ckpt.close()
  config = ml_collections.ConfigDict(cfg)
  for key, value in (overrides or {}).items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  method = methods.create(config)
  state = base.TrainState(step=raw["step"], params=raw["params"],
                          batch_stats=raw.get("batch_stats") or {},
                          opt_state=raw.get("opt_state") or {}, rng=raw.get("rng"))
  return method, state, config, step


def evaluate_run(workdir: str, *, step: int | None = None, metrics=None, split: str | None = None,
                 out: str | None = None, overrides: dict | None = None,
                 verbose: bool = True) -> dict[str, Any]:
  """Evaluates a checkpoint, prints the tables, writes the JSON; returns the report."""
  from djax import evaluation

  if metrics is not None:  # a misspelt name fails before the checkpoint and data load
    evaluation.check_metric_names(metrics, "--metrics")
  overrides = dict(overrides or {})
  if split:
    overrides["eval.split"] = split
  method, state, config, step = load_run(workdir, step, overrides)
  return evaluation.evaluate_and_write(method, state, config, workdir, step=step,
                                       metrics=metrics, out=out, verbose=verbose)


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
  import sys

  from djax import checkpoint
  try:
    evaluate_run(f.workdir, step=f.step, metrics=f.metrics, split=f.split, out=f.out,
                 overrides=overrides)
  except (ValueError, FileNotFoundError, KeyError, checkpoint.CheckpointError) as e:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    sys.exit(f"djax.evaluate: error: {' '.join(text.split())}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
