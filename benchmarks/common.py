"""What the benchmarks share: synthetic batches shaped as the input pipeline shapes them,
per-op times read from a ``jax.profiler`` trace, and XLA's FLOP count of a compiled step."""

from __future__ import annotations

import collections
import glob
import os
import re

import numpy as np

# pairing -> the extra images the pipeline puts in a batch (djax.data.samplers.PAIRINGS)
_PAIRED_IMAGES = {
    None: (), "": (), "random": ("image2",), "random_other": ("image2",),
    "same_label": ("image2",), "different_label": ("image2",), "same_or_different": ("image2",),
    "triplet": ("image_same", "image_other"), "reference": ("image_ref",),
}


def _stored_channels(data_cfg) -> int:
  """The channels of the config's dataset as stored (mnist_5k: 1), read from its spec or
  tfds features without reading or preparing any data; 3 for a name djax does not know."""
  from djax.data import registry
  try:
    shape = registry.stored_shape(data_cfg)
  except (ValueError, FileNotFoundError):
    return 3
  return int(shape[-1]) if len(shape) == 3 else 3


def synthetic_batch(config, num_devices: int, seed: int = 0) -> dict:
  """A batch shaped as the pipeline shapes it for ``config``: images
  [devices, B / devices, H, W, C] uniform in ``data.value_range`` (C = ``data.channels``,
  else the dataset's stored channels, else 3), plus the images (and label dicts: ``data.label_key`` if the config sets it and
  ``model.num_classes``, else empty) the config's pairing adds."""
  b, s = config.train.batch_size, config.data.image_size
  c = int(config.data.get("channels", 0) or _stored_channels(config.data))
  lo, hi = config.data.get("value_range", (-1.0, 1.0))
  rng = np.random.default_rng(seed)
  images = lambda: rng.uniform(lo, hi, (num_devices, b // num_devices, s, s, c)).astype(np.float32)
  pairing = config.data.get("pairing")
  if pairing not in _PAIRED_IMAGES:
    raise ValueError(f"synthetic_batch: unknown pairing {pairing!r}")
  # A method that reads its class label (Mathieu's adversary) gets model.num_classes classes.
  key, classes = config.data.get("label_key"), config.get("model", {}).get("num_classes")
  labels = lambda: ({key: rng.integers(0, classes, (num_devices, b // num_devices)).astype(
      np.int32)} if key and classes else {})
  batch = {"image": images(), "labels": labels()}
  for key_ in _PAIRED_IMAGES[pairing]:
    batch[key_] = images()
    batch["labels" + key_[len("image"):]] = labels()
  if pairing == "same_or_different":
    batch["same"] = np.zeros((num_devices, b // num_devices), bool)
  return batch


# Events that are containers (the whole executable, thread pools, dispatch), not ops.
_CONTAINER = re.compile(r"^(PjitFunction|PmapFunction|Thunk|ThunkExecutor|XlaModule|"
                        r"TfrtCpuExecutable|ExecuteHelper|\$)|::")


def op_kind(name: str) -> str:
  """'convolution.12' -> 'convolution', 'fusion.3' -> 'fusion', 'select-and-scatter' ..."""
  return re.sub(r"(\.\d+)+$", "", name.split(":")[0]).strip()


def _events(trace_dir: str):
  from jax.profiler import ProfileData
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no .xplane.pb under {trace_dir}")
  data = ProfileData.from_file(max(paths, key=os.path.getmtime))
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        yield plane.name, line.name, ev.name, ev.duration_ns


def op_times(trace_dir: str) -> dict[str, float]:
  """Total nanoseconds per XLA op name over a trace (containers left out)."""
  by_op: dict[str, float] = collections.defaultdict(float)
  for _, _, name, ns in _events(trace_dir):
    if name and not _CONTAINER.search(name):
      by_op[name] += ns
  return dict(by_op)


def step_flops(p_step, rstate, batch) -> float | None:
  """XLA's own count of one device's floating-point operations in the compiled step, for
  this backend's choice of ops (on CPU djax/nn's own convolutions, Winograd among them,
  count differently from the native ones an accelerator runs), or None where the backend
  gives no cost analysis. A step on any device takes at least this count over its peak."""
  try:
    cost = p_step.lower(rstate, batch).compile().cost_analysis()
  except Exception:  # noqa: BLE001  (cost analysis is optional per backend and jax version)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None
