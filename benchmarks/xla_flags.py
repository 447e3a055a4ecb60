"""XLA:CPU flags and thread settings against the train step, each in a fresh process.

    python -m benchmarks.xla_flags --config=experiments/mixing_sprites.py:small [--steps=5]

Runs ``benchmarks.train_step`` once per setting below (XLA_FLAGS and thread environment
variables are read when jax starts, hence the subprocesses) and prints ms/step median and
compile time per setting, the default first, so a flag is kept only if it measurably helps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

_CONFIG = flags.DEFINE_string("config", "experiments/mixing_sprites.py:small", "config[:variant]")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per setting")
_ONLY = flags.DEFINE_list("only", [], "names of the settings to run (default: all)")

SETTINGS = {
    "default": {},
    "onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"},
    "xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
    "fast_math": {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"},
    "concurrency_scheduler": {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"},
    "single_thread_eigen": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "omp_1_thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def run_one(name: str, extra_env: dict, config: str, steps: int) -> dict:
  env = dict(os.environ, **extra_env)
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  cmd = [sys.executable, "-m", "benchmarks.train_step", f"--config={config}",
         f"--steps={steps}", f"--out={out}", "--notorch"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    return {"setting": name, "error": proc.stderr.strip().splitlines()[-1:]}
  with open(out) as f:
    res = json.load(f)
  os.unlink(out)
  res["setting"] = name
  return res


def main(argv):
  del argv
  names = _ONLY.value or list(SETTINGS)
  rows = []
  for name in names:
    r = run_one(name, SETTINGS[name], _CONFIG.value, _STEPS.value)
    rows.append(r)
    if "error" in r:
      print(f"{name:24s} failed: {r['error']}", flush=True)
      continue
    base = rows[0].get("ms_per_step_median")
    rel = f"{r['ms_per_step_median'] / base:.2f}x default" if base else ""
    print(f"{name:24s} {r['ms_per_step_median']:9.1f} ms/step (min {r['ms_per_step_min']:.1f}, "
          f"max {r['ms_per_step_max']:.1f})  compile+first {r['compile_plus_first_step_s']:.1f} s"
          f"  {rel}", flush=True)


if __name__ == "__main__":
  app.run(main)
