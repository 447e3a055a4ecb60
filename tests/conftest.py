"""Four forced CPU devices for every test, so data-parallel code runs as on a multi-device host.

XLA reads the flag when jax initialises its backend: it must be set before jax is imported.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()

import sys  # noqa: E402
import tempfile  # noqa: E402
import weakref  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Many tests compile the same tiny networks; a persistent cache turns repeats into hits.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="djax-xla-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def mock_tfds_data(monkeypatch, num_examples: int):
  """``tfds.testing.mock_data`` read the way djax reads (``__getitems__``): a context manager.

  tfds 4.9's mock sets ``__getitems__`` on a MagicMock instance, where Python does not pass
  ``self``; the replacement below is the same function without it.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  def getitems(record_keys, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in record_keys]
  monkeypatch.setattr(mocking, "_getitems", getitems)
  return tfds.testing.mock_data(num_examples=num_examples)


def load_experiment(name: str):
  """The module of experiments/<name>.py (experiments/ is not a package)."""
  import importlib.util
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_mixing_config(steps: int = 4, batch_size: int = 8):
  """The mixing config shrunk to 16x16 images and a few channels: seconds to compile."""
  c = load_experiment("mixing_sprites").get_config("small")
  c.data.name = "tiny_shapes"
  c.data.image_size = 16
  c.model.n_chunks = 4
  c.model.chunk_size = 4
  c.model.encoder_spec = "c8k3s2-c16k3s2-f"
  c.model.decoder_spec = "d16k4-d8k4s2-d3k4s2"
  c.model.discriminator_spec = "c8k3s2-f"
  c.model.classifier_spec = "c8k3s2-p-f16-f"
  c.train.batch_size = batch_size
  c.train.steps = steps
  c.train.log_every = 1
  c.train.save_every = 2
  c.train.eval_every = 0
  c.eval.factors = ("colour", "size")
  c.eval.track_every = 0  # no retrieval curve: metrics.jsonl has one row per step
  c.eval.untrained = False  # a second evaluation; the tests of that row turn it on
  c.eval.num_grid_images = 2
  c.progress_bar = False
  c.tensorboard = True
  return c


def make_tiny_shapes(n: int, seed: int):
  """Squares with two known factors (colour, size) on 16x16 images."""
  rng = np.random.default_rng(seed)
  colour = rng.integers(0, 3, n)
  size = rng.integers(0, 3, n)
  palette = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220]], np.uint8)
  images = np.full((n, 16, 16, 3), 245, np.uint8)
  for i in range(n):
    s = 4 + 3 * size[i]
    y, x = rng.integers(0, 16 - s + 1, 2)
    images[i, y:y + s, x:x + s] = palette[colour[i]]
  return {"image": images, "colour": colour, "size": size}


# XLA:CPU maps each compiled executable's code into a few memory regions of its own, freed
# only when the executable is. jax's caches keep every executable a test compiled alive, so
# the whole suite in one process reached Linux's vm.max_map_count (65,530 regions) near its
# end and jaxlib 0.10 crashed in the next compile (a segfault in tests/test_train.py on
# 2 cores). Dropping the caches after each test file keeps the count at one file's worth;
# repeats across files are persistent-cache hits.
@pytest.fixture(scope="module", autouse=True)
def free_compiled_executables():
  yield
  import gc
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope="session", autouse=True)
def tiny_shapes_dataset():
  from djax.data import registry
  registry.register_arrays(
      "tiny_shapes",
      {"train": make_tiny_shapes(256, 0), "validation": make_tiny_shapes(32, 1),
       "test": make_tiny_shapes(96, 2)},
      {"colour": 3, "size": 3})
  return "tiny_shapes"


# tensorboardX event writers that a test left open. djax.train closes its writer on the
# normal path only, so a run that raises (NonFiniteLossError) leaves one open; then, at
# exit, the writer's atexit hook puts its stop signal on a multiprocessing queue whose
# feeder thread never started, and Python 3.12+ refuses to start a thread at interpreter
# shutdown: "RuntimeError: can't create new thread at interpreter shutdown" after the last
# test. Each test's open writers are closed after it (closing twice is a no-op). Tracking
# starts once a test has imported tensorboardX (importing it here would import torch).
_OPEN_WRITERS: "weakref.WeakSet" = weakref.WeakSet()
_TRACKING: list = []


def _track_file_writers(writer_module) -> None:
  cls = writer_module.FileWriter
  original = cls.__init__

  def __init__(self, *args, **kwargs):
    original(self, *args, **kwargs)
    _OPEN_WRITERS.add(self)
  cls.__init__ = __init__
  _TRACKING.append(cls)
  import gc
  for obj in gc.get_objects():  # made before tracking started (kept alive by atexit)
    if type(obj) is cls:  # not isinstance: it reads __class__, which warns on some objects
      _OPEN_WRITERS.add(obj)


@pytest.fixture(autouse=True)
def close_tensorboard_writers():
  yield
  module = sys.modules.get("tensorboardX.writer")
  if module is None:
    return
  if not _TRACKING:
    _track_file_writers(module)
  for writer in list(_OPEN_WRITERS):
    writer.close()
  _OPEN_WRITERS.clear()
