"""Train and evaluate a method: ``python -m djax.main --config=experiments/NAME.py[:variant]``.

Any config value can be overridden with ``--config.key=value``; unknown keys are rejected.
A rerun with the same ``--workdir`` resumes from its latest checkpoint.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (a python "
                                          "file with get_config), e.g. experiments/mixing_sprites.py:small")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, "
                               "TensorBoard events, samples/ and eval.json. Default: "
                               "./runs/<config name>-<time>.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of a configuration "
                                "or data error instead of its one-line message.")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", os.environ.get("DJAX_COMPILE_CACHE",
                                    os.path.join(os.path.expanduser("~"), ".cache", "djax", "xla")),
    "XLA's persistent compilation cache: a resumed run, the next stage of a progressive run "
    "and every evaluation of the same shapes reuse compiled programs instead of compiling "
    "again ('' turns it off; env DJAX_COMPILE_CACHE sets the default).")
_RETAIN_HOST_MEMORY = flags.DEFINE_bool(
    "retain_host_memory", True, "On the CPU backend, let glibc keep the memory XLA frees "
    "after a step for the next one instead of returning it to the OS (djax/host_memory.py; "
    "measured on XLA:CPU only, so never applied on GPU or TPU).")
flags.mark_flags_as_required(["config"])


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  variant = config_path.split(":")[1] if ":" in config_path else ""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", "-".join(p for p in (name, variant, stamp) if p))


_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu", "jax_plugins.xla_cuda12",
                        "jax_plugins.xla_cuda13")


def cpu_backend_expected() -> bool:
  """Whether jax will run on its CPU backend, decided before the backend starts (glibc's
  settings must be made before XLA allocates): JAX_PLATFORMS if set, else no accelerator
  plugin installed."""
  import importlib.util
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  for name in _ACCELERATOR_PLUGINS:
    try:
      if importlib.util.find_spec(name) is not None:
        return False
    except (ImportError, ValueError):
      continue
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # orbax and tfds log every save and load at INFO; --verbosity=0 brings them back.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if _RETAIN_HOST_MEMORY.value and cpu_backend_expected():  # before the backend starts
    from djax import host_memory
    logging.info(host_memory.retain())
  if _COMPILE_CACHE.value:
    import jax
    jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  from djax import stages, train  # after flag parsing: keeps --help fast
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
  logging.info("workdir: %s", workdir)
  print(f"djax: training {config.method} on {config.data.name}; workdir {workdir}", flush=True)
  try:
    summary = stages.main(config, workdir)  # one run, its stages, or its variants
  except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f"djax: error: {e}\n(--traceback shows where it came from)")
  if summary.get("stopped_by"):
    how = ("the same command" if _WORKDIR.value
           else f"the same command with --workdir={workdir}")  # the default is a new directory
    print(f"stopped by {summary['stopped_by']} at step {summary['end_step']}; rerun {how} "
          f"to resume", flush=True)


if __name__ == "__main__":
  app.run(main)
