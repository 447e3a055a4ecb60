"""Datasets by name: djax's own tfds builders and any prepared tfds dataset.

A name is ``dataset`` or ``dataset/config`` as in tfds (``sprites/small``). djax's own
builders generate their data locally and are prepared automatically on first use; other
tfds datasets must already be prepared under ``data_dir`` (this machine cannot download).
"""

from __future__ import annotations

import importlib

from djax.data import pipeline

# name -> module path and class of djax's own (offline) builders
BUILDERS = {
    "sprites": ("djax.data.sprites", "Sprites"),
}


# name -> {split: ArraySource}, factors: datasets a user (or a test) hands over as arrays
_IN_MEMORY: dict[str, tuple[dict, dict[str, int]]] = {}


def register_arrays(name: str, splits: dict[str, dict], factors: dict[str, int]) -> None:
  """Makes in-memory arrays (``image`` uint8 [N, H, W, C] plus integer factors) a dataset."""
  _IN_MEMORY[name] = ({k: pipeline.ArraySource(v) for k, v in splits.items()}, dict(factors))


def known_names() -> list[str]:
  return sorted(BUILDERS) + sorted(_IN_MEMORY)


def _split_name(name: str) -> tuple[str, str | None]:
  base, _, config = name.partition("/")
  return base, config or None


def builder(data_cfg):
  """The tfds builder for ``data_cfg.name`` under ``data_cfg.data_dir``."""
  import tensorflow_datasets as tfds
  data_dir = data_cfg.get("data_dir") or pipeline.default_data_dir()
  base, config = _split_name(data_cfg.name)
  if base in BUILDERS:
    module, cls = BUILDERS[base]
    builder_cls = getattr(importlib.import_module(module), cls)
    kwargs = {"data_dir": data_dir, "file_format": "array_record"}
    if config:
      known = [c.name for c in builder_cls.BUILDER_CONFIGS]
      if config not in known:
        raise ValueError(f"unknown config {config!r} of dataset {base!r}; known: {known}")
      kwargs["config"] = config
    return builder_cls(**kwargs)
  try:
    return tfds.builder(data_cfg.name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise ValueError(f"unknown dataset {data_cfg.name!r}: not a djax builder ({known_names()}) "
                     f"and tfds says: {e}") from e


def open_split(data_cfg, split: str):
  if data_cfg.name in _IN_MEMORY:
    splits, factors = _IN_MEMORY[data_cfg.name]
    if split not in splits:
      raise ValueError(f"dataset {data_cfg.name!r} has no split {split!r}; splits: {sorted(splits)}")
    source = splits[split]
    return source, pipeline.DatasetMeta(
        name=data_cfg.name, split=split, size=len(source),
        image_shape=tuple(source.arrays["image"].shape[1:]),
        value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))), factors=factors)
  b = builder(data_cfg)
  base, _ = _split_name(data_cfg.name)
  if base in BUILDERS:
    if not b.is_prepared():
      manual_dir = data_cfg.get("manual_dir") or None
      import tensorflow_datasets as tfds
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  elif not b.is_prepared():
    raise FileNotFoundError(
        f"dataset {data_cfg.name!r} is not prepared under {b.data_dir_root!r} and cannot be "
        f"downloaded here. On a machine with a network run\n"
        f"  pip install 'djax[tf]' && python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{data_cfg.name}', data_dir='DIR', file_format='array_record')"
        f".download_and_prepare()\"\n"
        f"then copy DIR here and pass --config.data.data_dir=DIR")
  if split not in b.info.splits:
    raise ValueError(f"dataset {data_cfg.name!r} has no split {split!r}; "
                     f"splits: {sorted(b.info.splits)}")
  source = pipeline.TfdsSource(b.as_data_source(split=split))
  meta = _meta(b, data_cfg, split, len(source))
  return source, meta


def _meta(b, data_cfg, split, size):
  import tensorflow_datasets as tfds
  features = b.info.features
  image_shape = tuple(features["image"].shape)
  factors = {k: f.num_classes for k, f in features.items()
             if isinstance(f, tfds.features.ClassLabel)}
  return pipeline.DatasetMeta(name=data_cfg.name, split=split, size=size,
                              image_shape=image_shape,
                              value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))),
                              factors=factors)
