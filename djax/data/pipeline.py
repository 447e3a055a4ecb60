"""The input pipeline: one place where every method gets its batches.

A split is read once through ``tfds.data_source`` (array_record, no TensorFlow) into host
memory when it fits, otherwise read by random access per batch. Batches are a pure
function of (seed, step): the order of epoch e is a permutation seeded by (seed, e), so a
resumed run sees exactly the batches an uninterrupted run would, with no iterator state in
the checkpoint. The last partial batch of an epoch is dropped (every step sees a full,
evenly shardable batch). Batches come out shaped [devices, per_device_batch, ...].
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Any, Iterator, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What a method and the evaluator need to know about a split."""
  name: str
  split: str
  size: int
  image_shape: tuple[int, int, int]
  value_range: tuple[float, float]
  factors: Mapping[str, int]  # discrete ground-truth factors: name -> cardinality


class ArraySource:
  """Random access over in-memory arrays, the same interface as a tfds data source."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
      raise ValueError(f"arrays have different lengths: { {k: len(v) for k, v in arrays.items()} }")
    self.arrays = dict(arrays)
    self._len = sizes.pop()

  def __len__(self) -> int:
    return self._len

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}


def _stack_records(records: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


class TfdsSource:
  """Random access to a tfds array_record split, decoded to numpy."""

  def __init__(self, data_source):
    self.data_source = data_source

  def __len__(self) -> int:
    return len(self.data_source)

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return _stack_records(self.data_source.__getitems__([int(i) for i in indices]))

  def load_all(self, chunk: int = 2048, desc: str = "") -> ArraySource:
    from tqdm.auto import tqdm
    parts = [self.take(np.arange(i, min(i + chunk, len(self))))
             for i in tqdm(range(0, len(self), chunk), desc=desc or "loading", unit="chunk",
                           leave=False)]
    return ArraySource({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def to_model_images(images: np.ndarray, image_size: int, value_range=(-1.0, 1.0)) -> np.ndarray:
  """uint8 [N, H, W, C] -> float32 in ``value_range``, area-downsampled to ``image_size``."""
  x = images.astype(np.float32)
  h = x.shape[1]
  if h != image_size:
    if h % image_size:
      raise ValueError(f"the data is {h}x{h} but the config asks for {image_size}x{image_size}; "
                       f"use an image_size that divides {h}")
    f = h // image_size
    x = x.reshape(x.shape[0], image_size, f, image_size, f, x.shape[-1]).mean(axis=(2, 4))
  lo, hi = value_range
  return x * ((hi - lo) / 255.0) + lo


class Pipeline:
  """Deterministic, resumable batches for data-parallel training.

  ``pairing='random'`` adds ``image2``: a second, independently shuffled stream, so each
  example is paired with a random other example (Hu et al.'s independent x1, x2).
  """

  def __init__(self, source, meta: DatasetMeta, *, batch_size: int, num_devices: int, seed: int,
               image_size: int, value_range=(-1.0, 1.0), pairing: str | None = None,
               label_keys: tuple[str, ...] | None = None):
    if batch_size % num_devices:
      raise ValueError(f"batch size {batch_size} does not split over {num_devices} devices; "
                       f"use a multiple of {num_devices}")
    if len(source) < batch_size:
      raise ValueError(f"split {meta.split!r} of {meta.name!r} has {len(source)} examples, fewer "
                       f"than one batch of {batch_size}")
    if pairing not in (None, "random"):
      raise ValueError(f"unknown pairing {pairing!r}; use None or 'random'")
    self.source, self.meta = source, meta
    self.batch_size, self.num_devices, self.seed = batch_size, num_devices, seed
    self.image_size, self.value_range, self.pairing = image_size, tuple(value_range), pairing
    self.label_keys = tuple(meta.factors) if label_keys is None else label_keys
    self.steps_per_epoch = len(source) // batch_size

  def _order(self, epoch: int, stream: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch, stream]).permutation(len(self.source))

  def _indices(self, step: int, stream: int) -> np.ndarray:
    epoch, pos = divmod(step, self.steps_per_epoch)
    return self._order(epoch, stream)[pos * self.batch_size:(pos + 1) * self.batch_size]

  def epoch_of(self, step: int) -> int:
    return step // self.steps_per_epoch

  def batch(self, step: int) -> dict[str, np.ndarray]:
    ex = self.source.take(self._indices(step, 0))
    out = {"image": to_model_images(ex["image"], self.image_size, self.value_range)}
    out["labels"] = {k: ex[k].astype(np.int32) for k in self.label_keys if k in ex}
    if self.pairing == "random":
      ex2 = self.source.take(self._indices(step, 1))
      out["image2"] = to_model_images(ex2["image"], self.image_size, self.value_range)
    return shard(out, self.num_devices)

  def iterate(self, start_step: int = 0, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Batches from ``start_step`` on, prepared ``prefetch`` ahead in a background thread."""
    if prefetch <= 0:
      step = start_step
      while True:
        yield self.batch(step)
        step += 1
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work():
      step = start_step
      while not stop.is_set():
        try:
          item = self.batch(step)
        except Exception as e:  # surface loader errors in the consumer, not a silent hang
          item = e
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        step += 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
      while True:
        item = q.get()
        if isinstance(item, Exception):
          raise item
        yield item
    finally:
      stop.set()


def shard(tree, num_devices: int):
  """[B, ...] -> [devices, B / devices, ...] for every array in a nested dict."""
  if isinstance(tree, dict):
    return {k: shard(v, num_devices) for k, v in tree.items()}
  return tree.reshape((num_devices, tree.shape[0] // num_devices) + tree.shape[1:])


def unshard(tree):
  if isinstance(tree, dict):
    return {k: unshard(v) for k, v in tree.items()}
  return tree.reshape((-1,) + tree.shape[2:])


def load_split(data_cfg, split: str) -> tuple[ArraySource | TfdsSource, DatasetMeta]:
  """Opens a split by dataset name, preparing the dataset first if it is a djax builder."""
  from djax.data import registry  # registry builds on this module's sources
  source, meta = registry.open_split(data_cfg, split)
  limit = float(data_cfg.get("in_memory_max_gb", 4.0))
  if isinstance(source, TfdsSource):
    nbytes = len(source) * int(np.prod(meta.image_shape))
    if nbytes <= limit * 2**30:
      source = source.load_all(desc=f"{meta.name}:{split} into memory")
  return source, meta


def get_dataset(data_cfg, split: str, *, batch_size: int, num_devices: int, seed: int,
                pairing: str | None = None) -> Pipeline:
  source, meta = load_split(data_cfg, split)
  return Pipeline(source, meta, batch_size=batch_size, num_devices=num_devices, seed=seed,
                  image_size=data_cfg.image_size, value_range=tuple(data_cfg.value_range),
                  pairing=pairing)


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
