"""Progressive growth of the code (Lezama 2019 §3, Table 1) on top of the one training loop.

``run(config, workdir)`` trains every stage by calling ``djax.train.train_and_evaluate`` once
per stage, each in its own directory::

    WORKDIR/stage_00/   the teacher: code size ``stages.first_code_size`` (k=2, d=0)
    WORKDIR/stage_01/   student, code 3, trained against stage_00 (frozen), ...
    WORKDIR/stage_NN/   the last student (d = ``stages.num_students``)
    WORKDIR/table.json, table.md   Table 1 rows: swap success of ``stages.swap_dims``, MSE

A stage's config (``stage_config``) sets ``model.stage``, ``model.code_size``,
``model.teacher_dir`` (the previous stage's checkpoints) and ``train.steps``; it is saved in
every checkpoint of the stage, so the stage is part of the checkpoint. A finished stage
leaves ``stage_done.json`` and is skipped on a rerun; an unfinished one resumes from its own
latest checkpoint: a killed run resumes inside the right stage.

``run_ablation(config, workdir)`` runs ``config.ablation.variants`` (estimator and loss
weights per variant) with the same seed and schedule in WORKDIR/<variant>/, sharing the
teacher (stage 0 is identical for all), and writes WORKDIR/ablation.md / ablation.json:
swap success, MSE, seconds per step and the compiled train step's memory per estimator.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

DONE = "stage_done.json"


def stage_name(stage: int) -> str:
  return f"stage_{stage:02d}"


def num_stages(config) -> int:
  return 1 + int(config.stages.num_students)


def eval_stages(config) -> set[int]:
  n = num_stages(config)
  return {s % n for s in config.stages.get("eval_stages", (0, -1))}


def steps_per_epoch(config) -> int:
  from djax.data import pipeline
  _, meta = pipeline.load_split(config.data, "train")
  return max(1, meta.size // config.train.batch_size)


def stage_config(config, stage: int, workdir: str, spe: int | None = None):
  """The config of one stage: a plain single-model config for djax.train."""
  c = ml_collections.ConfigDict(config.to_dict())
  st = c.stages
  spe = spe or steps_per_epoch(config)
  c.model.stage = stage
  c.model.code_size = int(st.first_code_size) + stage * int(c.model.new_units)
  c.model.teacher_dir = (os.path.join(os.path.abspath(workdir), stage_name(stage - 1),
                                      "checkpoints") if stage else "")
  epochs = st.teacher_epochs if stage == 0 else st.epochs_per_stage
  c.train.steps = int(epochs) * spe
  # The trainer's own final evaluation is replaced by ``evaluate_stage`` below.
  c.eval.metrics = ()
  return c


def _read_done(stage_dir: str):
  path = os.path.join(stage_dir, DONE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def write_json(path: str, obj) -> None:
  from djax.train import _jsonable
  with open(path + ".tmp", "w") as f:
    json.dump(_jsonable(obj), f, indent=2)
  os.replace(path + ".tmp", path)


def test_mse(method, params, stats, config, batch_size: int = 500) -> float:
  """Mean squared error per pixel of the test reconstructions, on the data's value scale
  rescaled to [0, 1] (Table 1's scale)."""
  from djax.data import pipeline
  source, _ = pipeline.load_split(config.data, config.eval.split)
  lo, hi = config.data.value_range
  rec = jax.jit(method.reconstruct)
  total, n = 0.0, len(source)
  for s in range(0, n, batch_size):
    ex = source.take(np.arange(s, min(s + batch_size, n)))
    x = pipeline.to_model_images(ex["image"], config.data.image_size, tuple(config.data.value_range))
    xh = np.asarray(rec(params, stats, jnp.asarray(x)))
    total += float(np.sum(np.square(xh - x))) / (hi - lo) ** 2
  return total / (n * int(np.prod(x.shape[1:])))


def evaluate_stage(config, stage_dir: str, with_metrics: bool) -> dict[str, Any]:
  """Test MSE (always) and config.eval.metrics (swap success) of a stage's last checkpoint."""
  from djax import evaluation, methods
  from djax.data import pipeline
  from djax.methods import jacobian_supervision as js
  state, _ = js.load_stage_checkpoint(os.path.join(stage_dir, "checkpoints"))
  method = methods.create(config, axis_name=None)
  params, stats = state["params"], state.get("batch_stats") or {"encoder": {}}
  stats = {"encoder": stats.get("encoder") or {}}
  out: dict[str, Any] = {"step": int(state["step"]), "test_mse": test_mse(method, params, stats,
                                                                            config)}
  if with_metrics:
    c = ml_collections.ConfigDict(config.to_dict())
    c.eval.metrics = tuple(config.stages.get("metrics", ("swap_success",)))
    c.eval.swap_dims = config.stages.swap_dims
    source, _ = pipeline.load_split(c.data, c.eval.split)
    codes = evaluation.encode_split(method, params, stats, source, c.data,
                                    factor_names=list(c.eval.factors))
    res = evaluation.evaluate_representation(method, params, stats, c, source,
                                             features=codes[0], factors=codes[1])
    out["eval"] = res
    if "swap_success" in res:
      factor = c.eval.factors[0]
      out["swap_success"] = float(res["swap_success"]["best"][factor])
      # Table 1 under both readings of its protocol (djax.evaluation, ``swap_labels``):
      # the authors' code (above: the label of the partner's reconstruction) and the
      # paper's text (the partner's true digit; the teacher's 94.3 % is only possible so).
      c.eval.swap_labels = "true"
      true = evaluation.evaluate_representation(method, params, stats, c, source,
                                                metrics=["swap_success"],
                                                features=codes[0], factors=codes[1])
      out["swap_success_true"] = float(true["swap_success"]["best"][factor])
  return out


def _train_seconds(stage_dir: str) -> dict[str, float]:
  """Seconds per step from metrics.jsonl, leaving out the first log row (compilation)."""
  path = os.path.join(stage_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  rows = [json.loads(l) for l in open(path)]
  rates = [r["steps_per_second"] for r in rows[1:] if r.get("steps_per_second")]
  return {"seconds_per_step": float(1.0 / np.median(rates))} if rates else {}


def train_stages(config, workdir: str, make_stage_config, describe, finish) -> dict[str, Any]:
  """The stage loop of every staged method: trains stage 0..num_stages-1 in
  WORKDIR/stage_NN through ``djax.train``, skipping stages that left ``stage_done.json``
  and resuming the current one from its checkpoints (a killed run resumes inside the right
  stage). ``make_stage_config(config, stage, workdir, steps_per_epoch)`` gives a stage's
  plain config, ``describe(cfg)`` its progress line, ``finish(cfg, stage_dir, evaluate)``
  the row fields it adds (``evaluate``: the stage is one of ``stages.eval_stages``).
  Returns {"rows": [...]}, or {"stopped_by", "stage", "end_step"} when a signal stopped it."""
  from djax import train
  os.makedirs(workdir, exist_ok=True)
  spe = steps_per_epoch(config)
  n = num_stages(config)
  evals = eval_stages(config)
  rows = []
  for stage in range(n):
    sdir = os.path.join(workdir, stage_name(stage))
    done = _read_done(sdir)
    if done is None:
      cfg = make_stage_config(config, stage, workdir, spe)
      print(f"{config.method}: stage {stage}/{n - 1}, {describe(cfg)}, {cfg.train.steps} steps "
            f"in {sdir}", flush=True)
      t0 = time.time()
      summary = train.train_and_evaluate(cfg, sdir)
      if summary.get("stopped_by"):
        return {"stopped_by": summary["stopped_by"], "stage": stage,
                "end_step": summary.get("end_step")}
      done = {"stage": stage, "steps": int(cfg.train.steps), "wall_seconds": time.time() - t0,
              "final_metrics": summary.get("metrics", {}), **_train_seconds(sdir)}
      done.update(finish(cfg, sdir, stage in evals))
      write_json(os.path.join(sdir, DONE), done)
    rows.append(done)
  return {"rows": rows}


def run(config, workdir: str) -> dict[str, Any]:
  """Trains all stages in ``workdir`` (resuming), evaluates, writes table.json / table.md."""
  out = train_stages(
      config, workdir, stage_config,
      describe=lambda cfg: f"code size {cfg.model.code_size}",
      finish=lambda cfg, sdir, ev: {"code_size": int(cfg.model.code_size),
                                    **evaluate_stage(cfg, sdir, with_metrics=ev)})
  if out.get("stopped_by"):
    return out
  rows = out["rows"]
  table = {"rows": [{k: r.get(k) for k in ("stage", "code_size", "swap_success",
                                           "swap_success_true", "test_mse", "seconds_per_step",
                                           "wall_seconds")} for r in rows],
           "estimator": config.loss.estimator,
           "lambdas": {k: config.loss[k] for k in ("lambda_y", "lambda_diff", "lambda_xcov")}}
  write_json(os.path.join(workdir, "table.json"), table)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(format_table(rows))
  print(format_table(rows), flush=True)
  return {"rows": rows, "end_step": rows[-1].get("step")}


def _percent(x) -> str:
  return "" if x is None else f"{100 * x:.1f} %"


def format_table(rows) -> str:
  lines = ["| stage | code (k+d) | swap success (authors' code) | swap success (true labels) "
           "| test MSE | s/step |", "|---|---|---|---|---|---|"]
  for r in rows:
    sps = r.get("seconds_per_step")
    lines.append(f"| {r['stage']} | {r['code_size']} | {_percent(r.get('swap_success'))} | "
                 f"{_percent(r.get('swap_success_true'))} | {r['test_mse']:.4f} | "
                 f"{'' if sps is None else f'{sps * 1e3:.2f} ms'} |")
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the ablation

def variant_config(config, name: str):
  c = ml_collections.ConfigDict(config.to_dict())
  spec = dict(config.ablation.variants[name])
  for k, v in spec.items():
    c.loss[k] = v
  return c


def step_cost(config, code_size: int | None = None, repeats: int = 50) -> dict[str, float]:
  """Seconds per jitted train step (one device, steady state) and the compiled step's
  memory (XLA's buffer assignment: temporaries + arguments + outputs) of a student with
  ``code_size`` units, its teacher initialised at random (the cost does not depend on it)."""
  from djax import methods
  c = ml_collections.ConfigDict(config.to_dict())
  code_size = code_size or int(c.stages.first_code_size) + int(c.stages.num_students)
  c.model.stage, c.model.code_size, c.model.teacher_dir = 1, code_size, "unused"
  method = methods.create(c, axis_name=None)
  b = c.train.batch_size
  shape = (b, c.data.image_size, c.data.image_size, int(c.data.get("channels", 1)))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(0, 1, shape), jnp.float32),
           "image2": jnp.asarray(rng.uniform(0, 1, shape), jnp.float32)}
  method.random_teacher(jax.random.PRNGKey(1), batch)
  state = method.init(jax.random.PRNGKey(0), batch)
  step = jax.jit(method.train_step)
  compiled = step.lower(state, batch, jax.random.PRNGKey(0)).compile()
  mem = {}
  try:
    ma = compiled.memory_analysis()
    mem = {"temp_bytes": int(ma.temp_size_in_bytes),
           "total_bytes": int(ma.temp_size_in_bytes + ma.argument_size_in_bytes
                              + ma.output_size_in_bytes - ma.alias_size_in_bytes)}
  except Exception:  # not every backend reports it
    pass
  s, _ = compiled(state, batch, jax.random.PRNGKey(0))
  jax.block_until_ready(s)
  t0 = time.perf_counter()
  for i in range(repeats):
    s, m = compiled(s, batch, jax.random.PRNGKey(i))
  jax.block_until_ready(m)
  return {"seconds_per_step": (time.perf_counter() - t0) / repeats, **mem}


def run_ablation(config, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  names = list(config.ablation.variants)
  results = {}
  first_teacher = None
  for name in names:
    c = variant_config(config, name)
    vdir = os.path.join(workdir, name)
    t0dir = os.path.join(vdir, stage_name(0))
    if first_teacher and _read_done(t0dir) is None:
      # Same seed, same schedule: the teacher is the same for every variant.
      if os.path.exists(t0dir):
        shutil.rmtree(t0dir)
      shutil.copytree(first_teacher, t0dir)
    print(f"ablation: variant {name} ({dict(config.ablation.variants[name])}) in {vdir}",
          flush=True)
    out = run(c, vdir)
    if out.get("stopped_by"):
      return out
    first_teacher = first_teacher or t0dir
    results[name] = {"rows": out["rows"], "cost": step_cost(c)}
  table = format_ablation(config, results)
  write_json(os.path.join(workdir, "ablation.json"), results)
  with open(os.path.join(workdir, "ablation.md"), "w") as f:
    f.write(table)
  print(table, flush=True)
  return {"results": results}


def format_ablation(config, results) -> str:
  teacher = next(iter(results.values()))["rows"][0]
  d = int(config.stages.num_students)
  lines = [f"| model | estimator | swap success, authors' code (units 0:2) | "
           f"swap success, true labels | test MSE | s/step (d={d}) | step memory | "
           f"train s/step |", "|---|---|---|---|---|---|---|---|"]
  lines.append(f"| teacher (k=2, d=0) | – | {_percent(teacher.get('swap_success'))} | "
               f"{_percent(teacher.get('swap_success_true'))} | {teacher['test_mse']:.4f} | | | "
               f"{1e3 * teacher.get('seconds_per_step', float('nan')):.2f} ms |")
  for name, r in results.items():
    last = r["rows"][-1]
    spec = dict(config.ablation.variants[name])
    est = spec.get("estimator", config.loss.estimator) if spec.get(
        "lambda_diff", config.loss.lambda_diff) else "none (xcov only)"
    cost = r["cost"]
    mem = cost.get("total_bytes")
    lines.append(
        f"| {name} (d={last['code_size'] - 2}) | {est} | {_percent(last.get('swap_success'))} | "
        f"{_percent(last.get('swap_success_true'))} | {last['test_mse']:.4f} | "
        f"{1e3 * cost['seconds_per_step']:.2f} ms | "
        f"{'' if mem is None else f'{mem / 2**20:.1f} MiB'} | "
        f"{1e3 * last.get('seconds_per_step', float('nan')):.2f} ms |")
  return "\n".join(lines) + "\n"


def main(config, workdir: str) -> dict[str, Any]:
  """What djax.main calls for configs with ``stages`` (and ``ablation``)."""
  if config.get("ablation"):
    return run_ablation(config, workdir)
  return run(config, workdir)
