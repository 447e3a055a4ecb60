"""Runs a config: one stage, several stages, or several variants of a staged config.

A method that trains in stages declares them (``Method.stages(config, steps_per_epoch)``,
see :mod:`djax.methods.base`); each stage is a plain single-stage config trained by
:func:`djax.train.train_and_evaluate` in its own directory::

    WORKDIR/<stage name>/       checkpoints, metrics.jsonl, samples, eval.json, stage_done.json
    WORKDIR/table.json, table.md  one row per stage (the method's ``stage_row``/``stage_table``)

A stage whose ``from_previous`` is set starts from the previous stage's final state, read
here (outside jit) and handed to the method's ``init`` as data. A finished stage leaves
``stage_done.json`` (written atomically) and is skipped on a rerun; an unfinished one resumes
from its own latest checkpoint, so a killed run resumes inside the right stage. A signal
stops the current stage after its checkpoint and the run there.

``config.variants`` (name -> nested overrides, e.g. ``{"loss": {"estimator": "jvp"}}``) runs
the config once per variant in WORKDIR/<variant>/ with the same seed and schedule; the first
``config.variants_share_stages`` stages are the same for all, trained once and copied.
WORKDIR/variants.json and variants.md hold every variant's rows and the cost of its last
stage's train step (:func:`measure_step`).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from djax import fileio, methods, train

DONE = "stage_done.json"


def steps_per_epoch(config) -> int:
  from djax.data import pipeline
  _, meta = pipeline.load_split(config.data, "train")
  return max(1, meta.size // config.train.batch_size)


def stage_list(config) -> list:
  cls = methods.get_class(config.method)
  if cls.stages is None:
    raise ValueError(f"config.stages is set but method {config.method!r} does not train in "
                     f"stages; remove config.stages")
  return cls.stages(config, steps_per_epoch(config))


def final_state(stage_dir: str) -> tuple[dict, int]:
  """(state as nested dicts of arrays, step) of a finished stage's last checkpoint, read
  without a target structure: what the next stage's ``init`` receives."""
  from djax import checkpoint as ckpt_lib
  ckpt = ckpt_lib.Checkpointer(os.path.join(stage_dir, "checkpoints"))
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {stage_dir}/checkpoints: the previous stage "
                              f"must finish before the next one starts")
    state = ckpt.restore_untargeted(step)[0]
  finally:
    ckpt.close()
  return state, step


def _train_seconds(stage_dir: str) -> dict[str, float]:
  """Seconds per step from metrics.jsonl, leaving out the first log row (compilation)."""
  path = os.path.join(stage_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  import json
  rows = [json.loads(line) for line in open(path)]
  rates = [r["steps_per_second"] for r in rows[1:] if r.get("steps_per_second")]
  return {"seconds_per_step": float(1.0 / np.median(rates))} if rates else {}


def run(config, workdir: str) -> dict[str, Any]:
  """Trains every stage of ``config`` in ``workdir`` (resuming), writes table.json/.md.
  Returns {"rows": [...]}, or {"stopped_by", "stage", "end_step"} when a signal stopped it."""
  cls = methods.get_class(config.method)
  if train.is_main_process():
    os.makedirs(workdir, exist_ok=True)
  stages = stage_list(config)
  rows = []
  for i, stage in enumerate(stages):
    sdir = os.path.join(workdir, stage.name)
    done = fileio.read_json(os.path.join(sdir, DONE))
    if done is None:
      previous = None
      if stage.from_previous:
        if i == 0:
          raise ValueError(f"stage {stage.name} starts from a previous stage but is the first")
        previous, _ = final_state(os.path.join(workdir, stages[i - 1].name))
      print(f"{config.method}: stage {i}/{len(stages) - 1}, {stage.description}, "
            f"{stage.config.train.steps} steps in {sdir}", flush=True)
      t0 = time.time()
      summary = train.train_and_evaluate(stage.config, sdir, previous=previous)
      if summary.get("stopped_by"):
        return {"stopped_by": summary["stopped_by"], "stage": i,
                "end_step": summary.get("end_step")}
      ev = summary.get("eval") or {}
      done = {"stage": i, "name": stage.name, "steps": int(stage.config.train.steps),
              "wall_seconds": time.time() - t0, "final_metrics": summary.get("metrics", {}),
              "headline": ev.get("headline", {}), "eval": ev.get("results", {}),
              **_train_seconds(sdir), **cls.stage_row(stage, summary),
              "step": summary.get("end_step")}
      if train.is_main_process():
        fileio.write_json(os.path.join(sdir, DONE), done)
    rows.append(done)
  table = cls.stage_table(rows)
  if train.is_main_process():
    fileio.write_json(os.path.join(workdir, "table.json"), {"rows": rows})
    if table:
      fileio.write_text(os.path.join(workdir, "table.md"), table)
      print(table, flush=True)
  return {"rows": rows, "end_step": rows[-1].get("step") if rows else None}


def _update(c: ml_collections.ConfigDict, overrides) -> None:
  for k, v in dict(overrides).items():
    if isinstance(v, (dict, ml_collections.ConfigDict)) and isinstance(c.get(k), ml_collections.ConfigDict):
      _update(c[k], v)
    else:
      c[k] = v


def variant_config(config, name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  del c["variants"]
  if "variants_share_stages" in c:
    del c["variants_share_stages"]
  _update(c, config.variants[name])
  return c


def measure_step(config, previous=None, repeats: int = 20) -> dict[str, float]:
  """Seconds per jitted train step (one device, steady state) and the compiled step's
  memory (XLA's buffer assignment: temporaries + arguments + outputs) of ``config``'s
  method, started from ``previous`` (a stage's final state) when it needs one."""
  from djax.data import pipeline
  method = methods.create(config, axis_name=None)
  data = pipeline.get_dataset(config.data, "train", batch_size=config.train.batch_size,
                              num_devices=1, seed=config.seed,
                              pairing=config.data.get("pairing"))
  batch = jax.tree_util.tree_map(lambda x: x[0], data.batch(0))
  state = jax.jit(method.init)(jax.random.PRNGKey(config.seed), batch, previous)
  compiled = jax.jit(method.train_step).lower(state, batch, jax.random.PRNGKey(0)).compile()
  mem = {}
  try:
    ma = compiled.memory_analysis()
    mem = {"temp_bytes": int(ma.temp_size_in_bytes),
           "total_bytes": int(ma.temp_size_in_bytes + ma.argument_size_in_bytes
                              + ma.output_size_in_bytes - ma.alias_size_in_bytes)}
  except Exception:  # not every backend reports it
    pass
  s, m = compiled(state, batch, jax.random.PRNGKey(0))
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(repeats):
    s, m = compiled(s, batch, jax.random.PRNGKey(i))
  jax.block_until_ready(m)
  return {"seconds_per_step": (time.perf_counter() - t0) / repeats, **mem}


def run_variants(config, workdir: str) -> dict[str, Any]:
  cls = methods.get_class(config.method)
  os.makedirs(workdir, exist_ok=True)
  shared = int(config.get("variants_share_stages", 0) or 0)
  results: dict[str, Any] = {}
  first_dir = None
  for name in config.variants:
    c = variant_config(config, name)
    vdir = os.path.join(workdir, name)
    staged = bool(c.get("stages"))  # a plain method's variants are single runs
    names = [s.name for s in stage_list(c)] if staged else []
    if first_dir:
      # Same seed, same schedule: the shared stages are the same for every variant.
      for sname in names[:shared]:
        src, dst = os.path.join(first_dir, sname), os.path.join(vdir, sname)
        if fileio.read_json(os.path.join(dst, DONE)) is None:
          if os.path.exists(dst):
            shutil.rmtree(dst)
          shutil.copytree(src, dst)
    print(f"variant {name} ({config.variants[name].to_dict()}) in {vdir}", flush=True)
    out = run(c, vdir) if staged else {
        "rows": [train.train_and_evaluate(c, vdir)]}
    if out.get("stopped_by"):
      return out
    first_dir = first_dir or vdir
    cost_cfg = stage_list(c)[-1] if staged else None
    previous = (final_state(os.path.join(vdir, names[-2]))[0]
                if cost_cfg is not None and cost_cfg.from_previous else None)
    results[name] = {"rows": out["rows"],
                     "cost": measure_step(cost_cfg.config if cost_cfg else c, previous)}
  fileio.write_json(os.path.join(workdir, "variants.json"), results)
  table = cls.variant_table(config, results)
  if not table and config.get("table"):
    from djax import report  # a cross-method table (config.table), drawn with Pillow
    table = report.variant_table(config, results, workdir)
  if table:
    fileio.write_text(os.path.join(workdir, "variants.md"), table)
    print(table, flush=True)
  return {"results": results}


def main(config, workdir: str, **kwargs) -> dict[str, Any]:
  """What ``djax.main`` runs: variants, stages, or one plain training run."""
  if config.get("variants"):
    return run_variants(config, workdir)
  if config.get("stages"):
    return run(config, workdir)
  return train.train_and_evaluate(config, workdir, **kwargs)
