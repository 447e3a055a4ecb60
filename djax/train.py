"""The one training loop every method runs through.

Data-parallel with ``jax.pmap`` over every process's local devices: the state is replicated
once, each device gets ``batch_size / global devices`` examples, and the method's
``train_step`` averages gradients, metrics and BatchNorm statistics over the device axis.
The host touches device values only every ``log_every`` steps (metrics), when saving, and
when evaluating.

Several processes (``config.distributed``, ``jax.distributed``): each reads its own
deterministic slice of every global batch, pmap spans all processes' devices, every
process takes part in checkpoint saves (orbax writes host arrays from the primary process),
and only process 0 writes logs, samples and eval.json.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from djax import checkpoint as ckpt_lib
from djax import evaluation, methods, viz
from djax.data import pipeline
from djax.methods import base


class NonFiniteLossError(FloatingPointError):
  pass


class MetricWriter:
  """metrics.jsonl (one JSON object per log step) and TensorBoard events (tensorboardX)."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    if self.tb:
      for k, v in scalars.items():
        self.tb.add_scalar(k, v, step)

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    if self.tb:
      self.tb.add_image(tag, image, step, dataformats="HWC")

  def close(self) -> None:
    if self.tb:
      self.tb.close()
      self.tb = None


class _StopRequest:
  """SIGINT/SIGTERM ask the loop to save and stop at the end of the current step;
  a second SIGINT aborts at once."""

  def __init__(self):
    self.requested = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint and stopping", self.requested)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


_DISTRIBUTED = {"initialized": False}


def initialize_distributed(config) -> None:
  """``jax.distributed.initialize`` once per process (a staged run trains many stages)."""
  if not config.get("distributed") or _DISTRIBUTED["initialized"]:
    return
  kwargs = {k: config[k] for k in ("coordinator_address", "num_processes", "process_id")
            if config.get(k) is not None}
  jax.distributed.initialize(**kwargs)
  _DISTRIBUTED["initialized"] = True


def is_main_process() -> bool:
  return jax.process_index() == 0


def local_devices(config) -> list:
  devices = jax.local_devices()
  n = config.get("num_devices") or len(devices)
  if n > len(devices):
    raise ValueError(f"config.num_devices={n} but only {len(devices)} local devices exist")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"config.num_devices={n}: with several processes every process uses all "
                     f"its {len(devices)} local devices; unset num_devices")
  return devices[:n]


def _device_axis_sharding(devices):
  # pmap (shard_map underneath) names its output mesh axis after axis_name; a different
  # name here makes the second call miss the compile cache and compile the step again.
  mesh = jax.sharding.Mesh(np.array(devices), (base.AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(base.AXIS))


def replicate(tree, devices):
  """One copy per device along a leading axis, laid out as pmap expects its inputs."""
  local = jax.tree_util.tree_map(
      lambda x: np.broadcast_to(np.asarray(x)[None], (len(devices),) + np.shape(x)),
      jax.device_get(tree))
  return to_device_axis(local, devices)


def to_device_axis(tree, devices):
  """Host arrays [local devices, ...] as arrays over the device axis of every process."""
  if jax.process_count() == 1:
    return jax.device_put(tree, _device_axis_sharding(devices))
  sharding = _device_axis_sharding(jax.devices())
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), (jax.device_count(),) + np.shape(x)[1:]), tree)


def unreplicate(tree):
  """The first local copy, on the host (a multi-process array is not indexable as a whole)."""
  def first(x):
    d = np.asarray(x.addressable_data(0))
    return d[0] if d.ndim == x.ndim else d  # a shard keeps the device axis, or drops it
  return jax.tree_util.tree_map(first, tree)


def first_nonfinite(history: list[tuple[int, dict[str, float]]]):
  for step, scalars in history:
    for k, v in scalars.items():
      if not math.isfinite(v):
        return step, k, v
  return None


def _make_step(method, traces: list | None = None):
  def step_fn(state, batch):
    if traces is not None:
      traces.append(1)  # runs once per trace: a second trace is a second compile
    # Step keys derive from (base key, step): the same draws after a resume.
    return method.train_step(state, batch, jax.random.fold_in(state.rng, state.step))
  return step_fn


def create_state(method, config, train_data, previous=None) -> base.TrainState:
  """The method's initial state on one device's share of the first batch. ``previous`` (a
  finished stage's state) is an argument of the jitted init, not a constant baked into it."""
  example = jax.tree_util.tree_map(lambda x: x[0], train_data.batch(0))
  return jax.jit(method.init)(jax.random.PRNGKey(config.seed), example, previous)


def check_config(method, config, num_devices: int | None = None) -> None:
  """What can be checked before any work: counters and sizes, and the metrics the method
  can support. Each problem is one line naming the key and the fix."""
  tc = config.train
  for key, low in (("steps", 1), ("batch_size", 1), ("log_every", 1), ("save_every", 1),
                   ("keep_checkpoints", 1), ("eval_every", 0)):
    value = tc.get(key, low)
    if key == "keep_checkpoints" and value is None:  # None: keep every checkpoint
      continue
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"config.train.{key} is {value!r}; it must be an integer >= {low} "
                       f"(--config.train.{key}=...)")
  total = (num_devices or 1) * jax.process_count()
  if tc.batch_size % total:
    raise ValueError(f"config.train.batch_size={tc.batch_size} does not split over {total} "
                     f"devices; use a multiple of {total} or set --config.num_devices")
  factor = tc.get("divergence_factor", 0) or 0
  if factor and factor <= 1:
    raise ValueError(f"config.train.divergence_factor={factor}: use a factor > 1 (e.g. 100) "
                     f"or 0 to turn the divergence guard off")
  evaluation.check_metrics(method, config.eval.get("metrics", ()) or ())
  if config.eval.get("track_every", 0):
    evaluation.check_metrics(method, _Tracker.metric_names(config))


def _truncate_metrics(path: str, last_step: int, write: bool = True
                      ) -> list[tuple[int, dict[str, float]]]:
  """metrics.jsonl keeps each step once: rows past the restored step (written before the
  run was stopped, and replayed now) are dropped, atomically (``write``: process 0 only).
  Returns the losses of the rows kept."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.readlines()
  keep, rows = [], []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:  # a half-written last row of a killed run
      continue
    if row.get("step", 0) <= last_step:
      keep.append(line if line.endswith("\n") else line + "\n")
      rows.append((int(row["step"]), {k: v for k, v in row.items()
                                       if k.startswith("loss") and isinstance(v, (int, float))}))
  if write and len(keep) != len(lines):
    from djax import fileio
    fileio.write_text(path, "".join(keep))
  return rows


class DivergenceError(FloatingPointError):
  pass


def diverged(history: list[tuple[int, dict[str, float]]], factor: float, window: int = 20):
  """(step, key, value, median) of the first loss in the last log row that exceeds
  ``factor`` times the median of its previous ``window`` rows' magnitudes, else None."""
  if not factor or len(history) < 6:
    return None
  step, last = history[-1]
  for k, v in last.items():
    if not k.startswith("loss"):
      continue
    past = [abs(r[k]) for _, r in history[-window - 1:-1] if k in r]
    med = float(np.median(past)) if past else 0.0
    if med > 0 and abs(v) > factor * med:
      return step, k, v, med
  return None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       previous=None) -> dict[str, Any]:
  """Trains ``config.method`` for ``config.train.steps`` steps in ``workdir``, resuming from
  the newest intact checkpoint there; evaluates at the end. ``previous``: the previous
  stage's final state, for a method whose ``init`` starts from it. One run per workdir (a
  lock). Returns the last metrics and eval."""
  initialize_distributed(config)
  devices = local_devices(config)
  method = methods.create(config)
  check_config(method, config, len(devices))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file; choose a directory")
  os.makedirs(workdir, exist_ok=True)
  if not is_main_process():
    return _train(method, config, workdir, devices, previous)
  from djax.workdir_lock import WorkdirLock
  with WorkdirLock(workdir):
    return _train(method, config, workdir, devices, previous)


def _train(method, config, workdir, devices, previous) -> dict[str, Any]:
  main = is_main_process()
  tc = config.train
  train_data = pipeline.get_dataset(config.data, "train", batch_size=tc.batch_size,
                                    num_devices=len(devices), seed=config.seed,
                                    pairing=config.data.get("pairing"),
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  state = create_state(method, config, train_data, previous)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, _, step, quarantined = ckpt.restore_latest_good(state, quarantine=main)
    if main:
      moved = (f"; {len(quarantined)} damaged checkpoint(s) moved to {ckpt.directory}/corrupt"
               if quarantined else "")
      print(f"resumed from step {step} in {workdir}{moved}", flush=True)
  start = int(state.step)
  if main:
    from djax import fileio
    fileio.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  logged = _truncate_metrics(os.path.join(workdir, "metrics.jsonl"), start, write=main)
  untrained_path = os.path.join(workdir, UNTRAINED)
  if (main and start == 0 and previous is None and config.eval.metrics
      and config.eval.get("at_end", True) and config.eval.get("untrained", False)):
    # The same evaluation on the initial parameters: what training adds is measured against
    # it (a random network already retrieves some attributes above chance).
    evaluation.evaluate_and_write(method, state, config, workdir, step=0, out=untrained_path,
                                  verbose=False)

  # pmap spans every process's devices; ``devices`` is given only to use fewer than all
  # local devices of a single process (it must list every device when there are several).
  traces: list = []
  p_step = jax.pmap(_make_step(method, traces), axis_name=base.AXIS,
                    devices=devices if jax.process_count() == 1 else None, donate_argnums=(0,))
  rstate = replicate(state, devices)
  writer = MetricWriter(workdir, tensorboard=config.get("tensorboard", True)) if main else None
  # The divergence guard's running median continues across a resume.
  history: list[tuple[int, dict[str, float]]] = logged
  pending: list[tuple[int, Any]] = []
  summary: dict[str, Any] = {"start_step": start}
  sound = {"ok": True}  # False once a metric went non-finite or diverged (nothing marked good)
  # Dispatch runs ahead of the device; waiting on the step ``in_flight`` back keeps a stop
  # (and the progress bar) within a few steps of the real work.
  in_flight = max(1, int(tc.get("max_steps_in_flight", 2)))
  factor = float(tc.get("divergence_factor", 0) or 0)
  track_every = int(config.eval.get("track_every", 0) or 0)
  tracked = _Tracker(method, config) if track_every and main else None
  if tracked and start == 0:
    writer.write(0, tracked(state))

  def last_good() -> str:
    return f"step {ckpt.good_step() if ckpt.good_step() is not None else ckpt.latest_step()}"

  def flush() -> dict[str, float]:
    """Fetches pending metrics (the only regular host sync), logs their mean, checks them."""
    if not pending:
      return {}
    fetched = [unreplicate(m) for _, m in pending]
    rows = [(s, {k: float(v) for k, v in m.items()}) for (s, _), m in zip(pending, fetched)]
    pending.clear()
    bad = first_nonfinite(rows)
    if bad:
      sound["ok"] = False
      if tc.get("halt_on_nonfinite", True):
        s, k, v = bad
        raise NonFiniteLossError(
            f"{k} became {v} at step {s}; stopped without saving, the last good checkpoint in "
            f"{ckpt.directory} is {last_good()}. Lower the learning rate or set "
            f"--config.train.halt_on_nonfinite=False to keep going")
    mean = {k: float(np.mean([r[k] for _, r in rows])) for k in rows[-1][1]}
    history.append((rows[-1][0], mean))
    div = diverged(history, factor)
    if div:
      sound["ok"] = False
      s, k, v, med = div
      raise DivergenceError(
          f"{k} became {v:.4g} at step {s}, over {factor:g} x its running median {med:.4g}; "
          f"stopped without saving, the last good checkpoint in {ckpt.directory} is "
          f"{last_good()}. Lower the learning rate or raise/disable "
          f"--config.train.divergence_factor")
    return mean

  from tqdm.auto import tqdm
  bar = tqdm(total=tc.steps, initial=start, desc=config.method, unit="step", dynamic_ncols=True,
             disable=not (config.get("progress_bar", True) and main))
  t_last, step_last = time.time(), start
  finished = start
  try:
    with _StopRequest() as stop:
      it = train_data.iterate(start)
      for step in range(start, tc.steps):
        batch = next(it)
        if jax.process_count() > 1:
          batch = to_device_axis(batch, devices)
        rstate, metrics = p_step(rstate, batch)
        pending.append((step + 1, metrics))
        done = step + 1
        if len(pending) > in_flight:
          jax.block_until_ready(pending[-in_flight - 1][1])
          bar.update(pending[-in_flight - 1][0] - finished)
          finished = pending[-in_flight - 1][0]
        # Read once: a signal that lands later in this step (typically while the log step
        # waits for the device) is handled at the next one, never by a break without a save.
        stopping = stop.requested
        last = done == tc.steps or bool(stopping)
        if done % tc.log_every == 0 or last:
          scalars = flush()
          now = time.time()
          scalars["steps_per_second"] = (done - step_last) / max(now - t_last, 1e-9)
          scalars["epoch"] = train_data.epoch_of(step)
          t_last, step_last = now, done
          if writer:
            writer.write(done, scalars)
          bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items()
                           if (k.startswith("loss") and _shown(config, k))
                           or k == "steps_per_second"}, refresh=False)
          bar.update(done - finished)
          finished = done
          summary["metrics"] = scalars
        if done % tc.save_every == 0 or last:
          flush()
          ckpt.save(done, unreplicate(rstate), config.to_dict())
          if sound["ok"]:
            ckpt.mark_good(done)
        if tc.eval_every and done % tc.eval_every == 0 and not last and main:
          write_samples(method, unreplicate(rstate), config, workdir, done, writer)
        if tracked and (done % track_every == 0 or last):
          t_track = time.time()
          writer.write(done, tracked(unreplicate(rstate)))
          t_last += time.time() - t_track  # steps_per_second counts training only
        if stopping:
          summary["stopped_by"] = stopping
          break
    state = unreplicate(rstate)
    summary["end_step"] = int(state.step)
    summary["train_step_traces"] = len(traces)
    if "stopped_by" not in summary and int(state.step) >= tc.steps and main:
      write_samples(method, state, config, workdir, int(state.step), writer)
      if config.eval.get("at_end", True) and config.eval.metrics:
        from djax import fileio
        summary["eval"] = evaluation.evaluate_and_write(
            method, state, config, workdir, step=int(state.step),
            untrained=fileio.read_json(untrained_path))
  finally:
    # Also when the run raises: an open TensorBoard writer's thread fails at interpreter exit.
    bar.close()
    if writer:
      writer.close()
    ckpt.close()
  return summary


UNTRAINED = "eval_untrained.json"  # eval.json's untrained row, kept from step 0 across resumes


class _Subset:
  """The first ``n`` examples (in a fixed random order) of a split, read like the split."""

  def __init__(self, source, n: int, seed: int):
    self.source = source
    self.index = np.sort(np.random.default_rng(seed).choice(len(source), n, replace=False))

  def __len__(self):
    return len(self.index)

  def take(self, i):
    return self.source.take(self.index[np.asarray(i)])


class _Tracker:
  """``eval.track_metrics`` (default: the first of ``eval.metrics``) on ``eval.split``, or on
  ``eval.track_examples`` of its examples, every ``eval.track_every`` steps: their headline
  numbers as ``eval/<key>`` rows of metrics.jsonl, so that curves.png draws a score against
  the step beside the losses."""

  def __init__(self, method, config):
    self.method, self.config = method, config
    self.names = self.metric_names(config)
    source, meta = pipeline.load_split(config.data, config.eval.split)
    n = int(config.eval.get("track_examples", 0) or 0)
    self.source = _Subset(source, n, config.seed) if 0 < n < len(source) else source

  @staticmethod
  def metric_names(config) -> list[str]:
    names = list(config.eval.get("track_metrics", ()) or tuple(config.eval.metrics)[:1])
    if not names:
      raise ValueError("config.eval.track_every is set but there is nothing to track: set "
                       "config.eval.track_metrics (or eval.metrics), or track_every=0")
    return names

  def __call__(self, state) -> dict[str, float]:
    t0 = time.time()
    results = evaluation.evaluate_representation(self.method, state.params, state.batch_stats,
                                                 self.config, self.source, metrics=self.names)
    out = {f"eval/{k}": v for k, v in evaluation.headline(results).items()}
    out["eval_seconds"] = time.time() - t0
    return out


def _shown(config, loss_key: str) -> bool:
  """A loss whose weight is zero (``loss.lambda_<name>`` = 0) is left out of the progress
  line; metrics.jsonl keeps it."""
  name = loss_key[len("loss_"):]
  lam = config.get("loss", {}).get(f"lambda_{name}", None) if "loss" in config else None
  return lam is None or lam != 0


def write_samples(method, state, config, workdir: str, step: int, writer=None) -> list[str]:
  """Sample grids from a fixed set of validation inputs (the same at every eval), for a
  method that declares ``eval_images``."""
  if "eval_images" not in base.capabilities(method):
    return []
  source, meta = pipeline.load_split(config.data, config.eval.sample_split)
  if not meta.is_image:  # grids are of images; a toy's pictures are the method's own
    return []
  n = 2 * config.eval.num_grid_images
  idx = np.random.default_rng(config.seed).choice(len(source), size=min(n, len(source)),
                                                  replace=False)
  images = pipeline.model_inputs(source.take(np.sort(idx)), meta, config.data)
  grids = evaluation.eval_images(method, state.params, state.batch_stats, images)
  paths, tiles = [], []
  for name, grid in grids.items():
    path = os.path.join(workdir, "samples", f"{name}_{step:07d}.png")
    paths.append(viz.save_grid(path, grid, tuple(config.data.value_range)))
    tiles.append(viz.tile(viz.to_uint8(grid, tuple(config.data.value_range))))
  # The overview puts the largest family of equally shaped grids (e.g. one per chunk) together.
  shapes = [t.shape for t in tiles]
  same = [t for t in tiles if t.shape == max(set(shapes), key=shapes.count)]
  if len(same) > 1:
    overview = viz.upscale(viz.side_by_side(same, cols=4), 512)
    paths.append(viz.save_png(os.path.join(workdir, "samples", f"overview_{step:07d}.png"),
                              overview))
    if writer:
      writer.image("samples/overview", overview, step)
  return paths
