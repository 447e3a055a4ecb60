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
  try:
    config = _CONFIG.value
    config.get("method")  # a file that failed to load raises here, at first use
  except Exception as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f"djax: error: {_config_error(e, sys.argv)}\n(--traceback shows where it came "
             f"from)")
  workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
  logging.info("workdir: %s", workdir)
  print(f"djax: training {config.method} on {config.data.name}; workdir {workdir}", flush=True)
  from djax import checkpoint, workdir_lock
  try:
    summary = stages.main(config, workdir)  # one run, its stages, or its variants
  except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint stays as it was
    print("djax: aborted; the last checkpoint is intact, rerun to resume", file=sys.stderr,
          flush=True)
    os._exit(130)  # no teardown of loader and writer threads mid-flight
  except (ValueError, FileNotFoundError, train.NonFiniteLossError, train.DivergenceError,
          checkpoint.CheckpointError, workdir_lock.WorkdirError, OSError) as e:
    if _TRACEBACK.value:
      raise
    sys.exit(f"djax: error: {_one_line(e)}\n(--traceback shows where it came from)")
  if summary.get("stopped_by"):
    how = ("the same command" if _WORKDIR.value
           else f"the same command with --workdir={workdir}")  # the default is a new directory
    print(f"stopped by {summary['stopped_by']} at step {summary['end_step']}; rerun {how} "
          f"to resume", flush=True)


def _one_line(e: BaseException) -> str:
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
    text += f": {e.filename}"
  return " ".join(text.replace("\\n", " ").split())


def _config_error(e: BaseException, argv) -> str:
  """One line for an error raised while loading the config file or applying an override."""
  import re
  chain = []
  while e is not None:
    chain.append(e)
    e = e.__cause__ or e.__context__
  text = " ".join(str(c) for c in chain)
  key = next((c for c in reversed(chain) if isinstance(c, KeyError)), None)
  if key is not None:
    name = str(key.args[0]).strip("'\"").split("\n")[0].strip("'\"") if key.args else "?"
    arg = next((a for a in argv if a.startswith("--config.") and name in a), None)
    hint = re.search(r'Did you mean \\?"([^"\\]+)\\?"', text)
    return (f"unknown config key {name!r}" + (f" in {arg.split('=')[0]}" if arg else "")
            + (f"; did you mean {hint.group(1)!r}?" if hint else "; check the spelling"))
  syntax = next((c for c in chain if isinstance(c, SyntaxError)), None)
  if syntax is not None:
    return (f"the config file {syntax.filename} has a syntax error at line {syntax.lineno}: "
            f"{syntax.msg}")
  missing = next((c for c in chain if isinstance(c, FileNotFoundError)), None)
  if missing is not None or "Failed loading config file" in text:
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
    return (f"config file {path.split(':')[0]!r} not found; pass a python file with "
            f"get_config, e.g. --config=experiments/mixing_sprites.py:small")
  # An exception the config file's get_config raised (e.g. an unknown variant): ml_collections
  # folds its traceback into the flag error; what the file said is the last line of it.
  raised = re.search(r"Error whilst parsing config file:.*\b([A-Z]\w*(?:Error|Exception)): (.+)$",
                     str(chain[0]), re.S)
  if raised is not None:
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
    return f"{path}: {' '.join(raised.group(2).split())}"
  return _one_line(chain[0])


def parse_flags(argv):
  """absl's flag parsing, with a bad config (a misspelt or ill-typed override) reported in
  one line that names the problem."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if "--traceback" in argv:
      raise
    sys.exit(f"djax: error: {_config_error(e, argv)}\n(python -m djax.main --help lists the "
             f"flags)")
  except Exception as e:  # raised while loading the config file or applying an override
    if "--traceback" in argv:
      raise
    sys.exit(f"djax: error: {_config_error(e, argv)}\n(--traceback shows where it came from)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
