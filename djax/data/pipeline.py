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

import queue
import threading
from typing import Iterator

import numpy as np

from djax.data import registry, samplers
# The sources are part of the pipeline's interface (pipeline.ArraySource, ...).
from djax.data.sources import (ArraySource, DatasetMeta, TfdsSource,  # noqa: F401
                               default_data_dir)


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
               reference=None, labelled_fraction: float | None = None,
               process_index: int = 0, process_count: int = 1):
    total = num_devices * process_count
    if batch_size % total:
      raise ValueError(f"batch size {batch_size} does not split over {total} devices; "
                       f"use a multiple of {total}")
    if len(source) < batch_size:
      raise ValueError(f"split {meta.split!r} of {meta.name!r} has {len(source)} examples, fewer "
                       f"than one batch of {batch_size}")
    if pairing not in samplers.PAIRINGS:
      raise ValueError(f"unknown pairing {pairing!r}; known: {list(samplers.PAIRINGS)}")
    self.source, self.meta = source, meta
    self.batch_size, self.num_devices, self.seed = batch_size, num_devices, seed
    # Several processes: process p reads rows [p B/P, (p+1) B/P) of every global batch.
    self.process_index, self.process_count = process_index, process_count
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
    if samplers.PAIRINGS[pairing].needs_labels or labelled_fraction is not None:
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

  @property
  def label_index(self):
    return self._index

  def local(self, global_rows: np.ndarray) -> np.ndarray:
    """This process's slice of a global batch's rows."""
    n = len(global_rows) // self.process_count
    return global_rows[self.process_index * n:(self.process_index + 1) * n]

  def global_indices(self, step: int, stream: int) -> np.ndarray:
    """Indices of global batch ``step`` of a shuffled stream (every process's rows)."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    return self._order(epoch, stream)[pos * self.batch_size:(pos + 1) * self.batch_size]

  def epoch_of(self, step: int) -> int:
    return step // self.steps_per_epoch

  def _inputs(self, ex) -> np.ndarray:
    return _model_inputs(ex, self.meta, self.image_size, self.value_range)

  def _labels(self, ex) -> dict[str, np.ndarray]:
    return {k: ex[k].astype(np.float32 if k in self.continuous else np.int32)
            for k in self.label_keys if k in ex}

  def _partner(self, out, suffix, source, indices, labels: bool = True):
    ex = source.take(indices)
    out[self.meta.data_key + suffix] = self._inputs(ex)
    if labels:
      out["labels" + suffix] = self._labels(ex)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of global batch ``step``: [local devices, per device, ...]."""
    gidx = self.global_indices(step, 0)
    # Partners are drawn for the whole global batch (seeded by (seed, step)) and each
    # process keeps its rows: the batch is the same however many processes share it.
    pairing = samplers.PAIRINGS[self.pairing]
    partners, extras = pairing.partners(self, gidx, step, samplers.step_rng(self.seed, step))
    idx = self.local(gidx)
    ex = self.source.take(idx)
    out = {self.meta.data_key: self._inputs(ex)}
    out["labels"] = self._labels(ex)
    for suffix, (source, indices) in partners.items():
      self._partner(out, suffix, source, self.local(indices), pairing.partner_labels)
    out.update({k: self.local(v) for k, v in extras.items()})
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


def _model_inputs(ex, meta: DatasetMeta, image_size, value_range) -> np.ndarray:
  if meta.is_image:
    return to_model_images(ex["image"], image_size, value_range)
  return np.asarray(ex[meta.data_key], np.float32)


def model_inputs(ex, meta: DatasetMeta, data_cfg) -> np.ndarray:
  """A split's records as model inputs: images scaled to the config's size and value range,
  other inputs (e.g. ``point``) as float32. The key is the dataset's ``meta.data_key``."""
  return _model_inputs(ex, meta, data_cfg.get("image_size"),
                       tuple(data_cfg.get("value_range", (-1.0, 1.0))))


def load_split(data_cfg, split: str) -> tuple[ArraySource | TfdsSource, DatasetMeta]:
  """Opens a split by dataset name, preparing the dataset first if it is a djax builder."""
  source, meta = registry.open_split(data_cfg, split)
  limit = float(data_cfg.get("in_memory_max_gb", 4.0))
  if isinstance(source, TfdsSource):
    nbytes = len(source) * int(np.prod(meta.image_shape))
    if nbytes <= limit * 2**30:
      source = source.load_all(desc=f"{meta.name}:{split} into memory")
  return source, meta


def get_dataset(data_cfg, split: str, *, batch_size: int, num_devices: int, seed: int,
                pairing: str | None = None, labelled_fraction: float | None = None,
                process_index: int = 0, process_count: int = 1) -> Pipeline:
  """The one entry point: batches of ``split`` of ``data_cfg.name`` (see ``Pipeline``).

  Reads from ``data_cfg``: ``name``, ``image_size``, ``value_range``, ``data_dir``,
  ``manual_dir``, ``in_memory_max_gb`` and, optionally, ``label_key`` (the label pairs
  share), ``reference_split`` (for ``pairing='reference'``, default 'reference') and
  ``labelled_fraction`` (semi-supervised; the argument wins over the config). The name and
  the image size are checked before any data is read or generated.
  """
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
                  reference=reference, labelled_fraction=labelled_fraction,
                  process_index=process_index, process_count=process_count)
