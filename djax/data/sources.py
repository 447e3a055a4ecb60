"""Where examples come from: a split's metadata and random access to its records.

The bottom of the data package: the registry opens splits as these sources and the
pipeline batches them; neither is imported here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

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


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
