"""Benchmark: batches/s of the input pipeline, next to the train-step rate it must keep up with.

Run from the repo root::

    python -m benchmarks.input_pipeline [--batch 64] [--steps 100]
        [--datasets sprites/small,styled_mnist] [--train_config experiments/mixing_sprites.py:small]
        [--train_steps 5] [--train_data sprites/small] [--no_train] [--out res.json]

For each dataset (64x64 images, batch 64, one device) it times

* ``batch``    -- ``Pipeline.batch(step)`` called in a loop (what one step costs the host);
* ``iterate``  -- consuming ``Pipeline.iterate()`` (batches prepared in a background thread,
  prefetch 2), with no work between batches: the most the pipeline can deliver;

after the split has been read into memory (timed separately as ``load_s``). Sprites uses
the mixing method's ``pairing='random'`` (two images per example), styled_mnist Ruiz et
al.'s ``pairing='reference'`` (an unlabelled and a reference batch per step).

With ``--train_config`` it then measures the train-step rate of that config (compiled and
run once first, excluded; the median over ``--train_steps`` steps), i.e. the rate the
pipeline must beat; ``--no_train`` skips it (pass ``--train_rate`` to print a known rate).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time



def _data_cfg(name: str, data_dir: str):
  import ml_collections
  return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, manual_dir="",
                                        image_size=64, value_range=(-1.0, 1.0),
                                        in_memory_max_gb=4.0))


PAIRING = {"sprites": "random", "styled_mnist": "reference"}


def bench_pipeline(name: str, data_dir: str, batch: int, steps: int) -> dict:
  from djax.data import pipeline
  pairing = PAIRING.get(name.split("/")[0])
  t = time.perf_counter()
  p = pipeline.get_dataset(_data_cfg(name, data_dir), "train", batch_size=batch, num_devices=1,
                           seed=0, pairing=pairing)
  load_s = time.perf_counter() - t
  p.batch(0)  # warm caches
  t = time.perf_counter()
  for s in range(steps):
    p.batch(s)
  batch_rate = steps / (time.perf_counter() - t)
  it = p.iterate(0, prefetch=2)
  next(it)
  t = time.perf_counter()
  for _ in range(steps):
    b = next(it)
  iterate_rate = steps / (time.perf_counter() - t)
  it.close()
  shapes = {k: list(v.shape) for k, v in b.items() if hasattr(v, "shape")}
  return {"dataset": name, "split": p.meta.split, "size": p.meta.size, "pairing": pairing,
          "batch": batch, "load_s": round(load_s, 2), "batch_per_s": round(batch_rate, 1),
          "iterate_per_s": round(iterate_rate, 1), "shapes": shapes}


def bench_train(config_arg: str, steps: int, data_dir: str, data_name: str = "") -> dict:
  import jax
  from djax import methods, train
  from djax.data import pipeline
  path, _, variant = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant or None)
  if data_dir:
    config.data.data_dir = data_dir
  if data_name:  # the step costs the same on any split of the same image size
    config.data.name = data_name
  devices = jax.local_devices()[:1]
  method = methods.create(config)
  data = pipeline.get_dataset(config.data, "train", batch_size=config.train.batch_size,
                              num_devices=1, seed=0, pairing=config.data.get("pairing"))
  state = train.create_state(method, config, data)
  p_step = jax.pmap(train._make_step(method), axis_name="batch", devices=devices,
                    donate_argnums=(0,))
  rstate = train.replicate(state, devices)
  batches = [data.batch(s) for s in range(steps + 1)]
  t = time.perf_counter()
  rstate, m = p_step(rstate, batches[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for b in batches[1:]:
    t = time.perf_counter()
    rstate, m = p_step(rstate, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"config": config_arg, "data": config.data.name, "image_size": config.data.image_size,
          "batch": config.train.batch_size, "compile_s": round(compile_s, 1),
          "step_s_median": round(med, 3), "steps_per_s": round(1.0 / med, 2)}


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--datasets", default="sprites/small,styled_mnist")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--data_dir", default="")
  ap.add_argument("--train_config", default="experiments/mixing_sprites.py:small")
  ap.add_argument("--train_steps", type=int, default=5)
  ap.add_argument("--train_data", default="",
                  help="dataset for the train-step timing instead of the config's (e.g. "
                  "sprites/small for the full config, whose sprites/full takes minutes to make)")
  ap.add_argument("--no_train", action="store_true")
  ap.add_argument("--train_rate", type=float, default=None,
                  help="a known train-step rate (steps/s) to compare with, instead of measuring")
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)

  res = {"host": platform.node(), "cpus": os.cpu_count(), "pipeline": [], "train": None}
  for name in args.datasets.split(","):
    r = bench_pipeline(name, args.data_dir, args.batch, args.steps)
    res["pipeline"].append(r)
    print(f"{r['dataset']:<16} {r['split']:<11} {r['size']:>7} examples  pairing={r['pairing']}"
          f"  load {r['load_s']:6.1f} s   batch() {r['batch_per_s']:7.1f} batches/s   "
          f"iterate() {r['iterate_per_s']:7.1f} batches/s", flush=True)
  rate = args.train_rate
  if not args.no_train and rate is None:
    t = bench_train(args.train_config, args.train_steps, args.data_dir, args.train_data)
    res["train"] = t
    rate = t["steps_per_s"]
    print(f"train step {t['config']} ({t['image_size']}x{t['image_size']}, batch {t['batch']}): "
          f"{t['steps_per_s']:.2f} steps/s (median {t['step_s_median']} s; compile "
          f"{t['compile_s']} s)", flush=True)
  if rate:
    slowest = min(r["batch_per_s"] for r in res["pipeline"])
    print(f"slowest pipeline / train step: {slowest / rate:.1f}x "
          f"({'pipeline is not the bottleneck' if slowest > rate else 'PIPELINE IS THE BOTTLENECK'})")
    res["train_rate"] = rate
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
