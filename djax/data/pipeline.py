"""The input pipeline: one place where every method gets its batches.

A split is read once through ``tfds.data_source`` (array_record, no TensorFlow) into host
memory when it fits, otherwise read by random access per batch. Batches are a pure
function of (seed, step): the order of epoch e is a permutation seeded by (seed, e), so a
resumed run sees exactly the batches an uninterrupted run would, with no iterator state in
the checkpoint. The last partial batch of an epoch is dropped (every step sees a full,
evenly shardable batch); ``Pipeline.sequential`` (one ordered pass, for evaluation) pads it
instead and marks the padding in ``valid``. Batches come out shaped
[devices, per_device_batch, ...].

Beyond the example itself a batch can carry partners drawn by a sampler
(``pairing``, see ``djax.data.samplers``): a random other example, one sharing or not
sharing its label, Mathieu et al.'s triplets, or Ruiz et al.'s reference batch; and, for
semi-supervised training, ``label_mask`` with the labels of unlabelled examples masked.
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
  image_shape: tuple[int, ...]  # of what the source stores under ``data_key`` (after crops)
  value_range: tuple[float, float]
  factors: Mapping[str, int]  # discrete ground-truth factors: name -> cardinality
  # continuous ground-truth factors: name -> (low, high) of their values
  continuous_factors: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  # names of the values of discrete factors, where the dataset names them
  factor_values: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  label_key: str | None = None  # the class label (what 'same_label' pairs share), if any
  class_names: tuple[str, ...] = ()  # names of the values of ``label_key``
  data_key: str = "image"  # 'image' (uint8 [H, W, C]) or e.g. 'point' (float [D]) for toys
  source: str = ""  # where the data comes from (builder, paper, homepage)
  description: str = ""

  @property
  def is_image(self) -> bool:
    return self.data_key == "image"


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
  """Random access to a tfds array_record split, decoded to numpy.

  ``transform`` (optional) maps each decoded record before stacking: the per-dataset crop,
  resize and flattening of nested features (``djax.data.tfds_datasets``).
  """

  def __init__(self, data_source, transform=None):
    self.data_source = data_source
    self.transform = transform

  def __len__(self) -> int:
    return len(self.data_source)

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    records = self.data_source.__getitems__([int(i) for i in indices])
    if self.transform is not None:
      records = [self.transform(r) for r in records]
    return _stack_records(records)

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

  A batch is ``{'image': float32 [devices, per_device, H, W, C], 'labels': {factor: ...}}``
  (``'point'`` instead of ``'image'`` for non-image datasets), plus what ``pairing`` adds
  (``djax.data.samplers.PAIRINGS``):

  * ``'random'``: ``image2``, a second, independently shuffled stream, so each example is
    paired with a random other example (Hu et al.'s independent x1, x2);
  * ``'random_other'``: ``image2``/``labels2``, a uniformly drawn *different* example
    (Lezama's pairs (x, x_j) for the Jacobian term);
  * ``'same_label'`` / ``'different_label'``: ``image2``/``labels2`` sharing / not sharing
    the label ``label_key``; ``'same_or_different'``: either, with probability 1/2, and
    ``same`` (bool) saying which (Mathieu et al., Hu et al.);
  * ``'triplet'``: ``image_same`` (x1', same label) and ``image_other`` (x2, another label)
    with ``labels_same``/``labels_other`` (Mathieu et al.'s Algorithm 1);
  * ``'reference'``: ``image_ref``/``labels_ref``, a batch of the reference split drawn
    from its own shuffled stream (Ruiz et al.'s two streams; pass ``reference``).

  ``labelled_fraction=p`` keeps the labels of a fixed, class-stratified p-fraction of the
  split (seeded by ``seed``) and masks the others: ``label_mask`` (bool) says which examples
  are labelled; masked integer labels read -1, masked continuous ones 0.
  """

  def __init__(self, source, meta: DatasetMeta, *, batch_size: int, num_devices: int, seed: int,
               image_size: int, value_range=(-1.0, 1.0), pairing: str | None = None,
               label_keys: tuple[str, ...] | None = None, label_key: str | None = None,
               reference=None, labelled_fraction: float | None = None):
    from djax.data import samplers
    if batch_size % num_devices:
      raise ValueError(f"batch size {batch_size} does not split over {num_devices} devices; "
                       f"use a multiple of {num_devices}")
    if len(source) < batch_size:
      raise ValueError(f"split {meta.split!r} of {meta.name!r} has {len(source)} examples, fewer "
                       f"than one batch of {batch_size}")
    if pairing not in samplers.PAIRINGS:
      raise ValueError(f"unknown pairing {pairing!r}; known: {list(samplers.PAIRINGS)}")
    self.source, self.meta = source, meta
    self.batch_size, self.num_devices, self.seed = batch_size, num_devices, seed
    self.image_size, self.value_range, self.pairing = image_size, tuple(value_range), pairing
    if label_keys is None:
      label_keys = tuple(meta.factors) + tuple(meta.continuous_factors)
      if meta.label_key and meta.label_key not in label_keys:
        label_keys += (meta.label_key,)
    self.label_keys = label_keys
    self.continuous = frozenset(meta.continuous_factors)
    self.steps_per_epoch = len(source) // batch_size
    self.label_key = label_key or meta.label_key
    self._index = None
    if pairing in samplers.LABEL_PAIRINGS or labelled_fraction is not None:
      if not self.label_key:
        raise ValueError(f"pairing {pairing!r} / labelled_fraction need a class label; "
                         f"{meta.name!r} has none: set --config.data.label_key to one of "
                         f"{sorted(meta.factors)}")
      labels = column(source, self.label_key)
      self._index = samplers.LabelIndex(labels)
    self.reference = reference
    if pairing == "reference":
      if reference is None:
        raise ValueError("pairing='reference' needs the reference split (reference=source)")
      if len(reference) < batch_size:
        raise ValueError(f"the reference split has {len(reference)} examples, fewer than one "
                         f"batch of {batch_size}")
    self.labelled_fraction = labelled_fraction
    self.labelled = None
    if labelled_fraction is not None:
      self.labelled = samplers.labelled_mask(self._index.labels, labelled_fraction, seed)

  def _order(self, epoch: int, stream: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch, stream]).permutation(len(self.source))

  def _indices(self, step: int, stream: int) -> np.ndarray:
    epoch, pos = divmod(step, self.steps_per_epoch)
    return self._order(epoch, stream)[pos * self.batch_size:(pos + 1) * self.batch_size]

  def epoch_of(self, step: int) -> int:
    return step // self.steps_per_epoch

  def _inputs(self, ex) -> np.ndarray:
    if self.meta.is_image:
      return to_model_images(ex["image"], self.image_size, self.value_range)
    return np.asarray(ex[self.meta.data_key], np.float32)

  def _labels(self, ex) -> dict[str, np.ndarray]:
    return {k: ex[k].astype(np.float32 if k in self.continuous else np.int32)
            for k in self.label_keys if k in ex}

  def _partner(self, out, suffix, source, indices):
    ex = source.take(indices)
    key = "image" if self.meta.is_image else self.meta.data_key
    out[key + suffix] = self._inputs(ex)
    out["labels" + suffix] = self._labels(ex)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    from djax.data import samplers
    idx = self._indices(step, 0)
    ex = self.source.take(idx)
    out = {self.meta.data_key: self._inputs(ex)}
    out["labels"] = self._labels(ex)
    if self.pairing == "random":
      ex2 = self.source.take(self._indices(step, 1))
      out[self.meta.data_key + "2"] = self._inputs(ex2)
    elif self.pairing is not None:
      rng = samplers.step_rng(self.seed, step)
      if self.pairing == "random_other":
        self._partner(out, "2", self.source, samplers.random_other(len(self.source), idx, rng))
      elif self.pairing == "same_label":
        self._partner(out, "2", self.source, self._index.same(idx, rng))
      elif self.pairing == "different_label":
        self._partner(out, "2", self.source, self._index.different(idx, rng))
      elif self.pairing == "same_or_different":
        partner, same = self._index.same_or_different(idx, rng)
        self._partner(out, "2", self.source, partner)
        out["same"] = same
      elif self.pairing == "triplet":
        same, other = samplers.triplets(self._index, idx, rng)
        self._partner(out, "_same", self.source, same)
        self._partner(out, "_other", self.source, other)
      elif self.pairing == "reference":
        ref = samplers.epoch_batch_indices(len(self.reference), self.batch_size, self.seed,
                                           step, stream=2)
        self._partner(out, "_ref", self.reference, ref)
    if self.labelled is not None:
      mask = self.labelled[idx]
      out["label_mask"] = mask
      out["labels"] = {k: np.where(mask, v, np.asarray(0 if k in self.continuous else -1,
                                                       v.dtype))
                       for k, v in out["labels"].items()}
    return shard(out, self.num_devices)

  def sequential(self, batch_size: int | None = None):
    """One pass over the split in stored order (evaluation): the last batch is padded by
    repeating the split's last example, and ``valid`` (bool) marks the real examples."""
    b = batch_size or self.batch_size
    if b % self.num_devices:
      raise ValueError(f"batch size {b} does not split over {self.num_devices} devices")
    n = len(self.source)
    for start in range(0, n, b):
      idx = np.arange(start, start + b)
      valid = idx < n
      ex = self.source.take(np.minimum(idx, n - 1))
      out = {self.meta.data_key: self._inputs(ex), "labels": self._labels(ex), "valid": valid}
      yield shard(out, self.num_devices)

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


def column(source, key: str, chunk: int = 4096) -> np.ndarray:
  """All values of one feature of a source (labels for the samplers)."""
  if isinstance(source, ArraySource):
    return np.asarray(source.arrays[key])
  n = len(source)
  return np.concatenate([source.take(np.arange(i, min(i + chunk, n)))[key]
                         for i in range(0, n, chunk)])


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
                pairing: str | None = None, labelled_fraction: float | None = None) -> Pipeline:
  """The one entry point: batches of ``split`` of ``data_cfg.name`` (see ``Pipeline``).

  Reads from ``data_cfg``: ``name``, ``image_size``, ``value_range``, ``data_dir``,
  ``manual_dir``, ``in_memory_max_gb`` and, optionally, ``label_key`` (the label pairs
  share), ``reference_split`` (for ``pairing='reference'``, default 'reference') and
  ``labelled_fraction`` (semi-supervised; the argument wins over the config). The name and
  the image size are checked before any data is read or generated.
  """
  from djax.data import registry
  registry.check_config(data_cfg)
  source, meta = load_split(data_cfg, split)
  reference = None
  if pairing == "reference":
    reference, _ = load_split(data_cfg, data_cfg.get("reference_split") or "reference")
  if labelled_fraction is None:
    labelled_fraction = data_cfg.get("labelled_fraction")
  return Pipeline(source, meta, batch_size=batch_size, num_devices=num_devices, seed=seed,
                  image_size=data_cfg.get("image_size"),
                  value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))),
                  pairing=pairing, label_key=data_cfg.get("label_key") or None,
                  reference=reference, labelled_fraction=labelled_fraction)


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
