"""Datasets by name: djax's own tfds builders and any prepared tfds dataset.

A name is ``dataset`` or ``dataset/config`` as in tfds (``sprites/small``). djax's own
builders generate their data locally and are prepared automatically on first use; other
tfds datasets must already be prepared under ``data_dir`` (this machine cannot download).
``djax.data.tfds_datasets.SPECS`` holds the per-dataset crops, sizes and factor specs of the
tfds datasets the papers use; ``check_config`` validates a data config (name, image size)
before anything is read or generated.
"""

from __future__ import annotations

import importlib

from djax.data import sources

# name -> module path and class of djax's own (offline) builders
BUILDERS = {
    "sprites": ("djax.data.sprites", "Sprites"),
    "mnist_5k": ("djax.data.mnist_5k", "Mnist5k"),
    "mnist_5k_elastic": ("djax.data.mnist_5k_elastic", "Mnist5kElastic"),
    "styled_mnist": ("djax.data.styled_mnist", "StyledMnist"),
    "three_moons": ("djax.data.three_moons", "ThreeMoons"),
    # read from files you download yourself (--config.data.manual_dir)
    "facescrub": ("djax.data.facescrub", "Facescrub"),
    "cub": ("djax.data.cub", "Cub"),
    "yaleb": ("djax.data.yaleb", "YaleB"),
}

# The class label of builders that do not name one (what 'same_label' pairs share).
DEFAULT_LABEL_KEYS = {"sprites": "character"}


# name -> {split: ArraySource}, factors: datasets a user (or a test) hands over as arrays
_IN_MEMORY: dict[str, tuple[dict, dict[str, int]]] = {}


def register_arrays(name: str, splits: dict[str, dict], factors: dict[str, int],
                    data_key: str = "image") -> None:
  """Makes in-memory arrays a dataset: ``data_key`` (``image``: uint8 [N, H, W, C]; or e.g.
  ``point``: float [N, D]) plus integer factors."""
  _IN_MEMORY[name] = ({k: sources.ArraySource(v) for k, v in splits.items()}, dict(factors),
                      data_key)


def known_names() -> list[str]:
  from djax.data import tfds_datasets
  tfds_names = [n for n in tfds_datasets.SPECS if n not in BUILDERS]
  return sorted(BUILDERS) + sorted(tfds_names) + sorted(_IN_MEMORY)


def _split_name(name: str) -> tuple[str, str | None]:
  base, _, config = name.partition("/")
  return base, config or None


def builder(data_cfg):
  """The tfds builder for ``data_cfg.name`` under ``data_cfg.data_dir``."""
  import tensorflow_datasets as tfds
  data_dir = data_cfg.get("data_dir") or sources.default_data_dir()
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
    msg = str(e).split("\n")[0]
    raise ValueError(f"unknown dataset {data_cfg.name!r}; known: {known_names()} (djax's "
                     f"offline builders, the tfds datasets of the papers, in-memory arrays), or "
                     f"any tfds name prepared under data_dir. tfds says: {msg}") from e


def _spec(data_cfg):
  from djax.data import tfds_datasets
  return tfds_datasets.SPECS.get(_split_name(data_cfg.name)[0])


def _data_key(b) -> str:
  return getattr(type(b), "DATA_KEY", "image")


def stored_shape(data_cfg, b=None) -> tuple[int, ...]:
  """Shape of what a split stores under its data key, after the spec's crop / resize."""
  spec = _spec(data_cfg)
  if spec is not None:
    return spec.image_shape(data_cfg.get("image_size"))
  b = b or builder(data_cfg)
  return tuple(b.info.features[_data_key(b)].shape)


def check_config(data_cfg) -> None:
  """Errors a user can act on, before any data is read: an unknown name lists the known
  ones; an image size the dataset cannot give names both sizes."""
  from djax.data import tfds_datasets
  if data_cfg.name in _IN_MEMORY:
    splits, _, data_key = _IN_MEMORY[data_cfg.name]
    if data_key != "image":
      return
    shape = tuple(next(iter(splits.values())).arrays["image"].shape[1:])
    err = tfds_datasets.size_error(data_cfg.name, None, shape, data_cfg.get("image_size"))
  else:
    b = builder(data_cfg)
    if _data_key(b) != "image":
      return
    err = tfds_datasets.size_error(data_cfg.name, _spec(data_cfg), stored_shape(data_cfg, b),
                                   data_cfg.get("image_size"))
  if err:
    raise ValueError(err)


def check_image_size(data_cfg, model_image_size: int, what: str = "the model") -> None:
  """Raises, naming both sizes, when ``what`` is built for another image size than the data
  config gives. Methods call it from their constructors (config time)."""
  size = data_cfg.get("image_size")
  if size != model_image_size:
    raise ValueError(f"{what} is built for {model_image_size}x{model_image_size} images, but "
                     f"config.data.image_size is {size} ({data_cfg.name}): make them agree")


def _not_prepared_error(data_cfg, b) -> FileNotFoundError:
  from djax.data import tfds_datasets
  root = b.data_dir_root if hasattr(b, "data_dir_root") else data_cfg.get("data_dir")
  manual = ""
  spec = _spec(data_cfg)
  if spec is not None and spec.manual:
    manual = f"\n{spec.manual}"
  return FileNotFoundError(
      f"dataset {data_cfg.name!r} is not prepared under data_dir={str(root)!r} (looked in "
      f"{b.data_dir}) and cannot be downloaded here. Preparing tfds image datasets needs "
      f"TensorFlow and a network: on a connected machine run\n"
      f"  {tfds_datasets.prepare_command(data_cfg.name)}\n"
      f"then copy DIR here and pass --config.data.data_dir=DIR (or set TFDS_DATA_DIR). "
      f"Datasets that need files you download yourself read them from "
      f"--config.data.manual_dir.{manual}\n"
      f"Offline alternatives: {sorted(BUILDERS)} (e.g. mnist_5k for MNIST).")


def open_split(data_cfg, split: str):
  if data_cfg.name in _IN_MEMORY:
    splits, factors, data_key = _IN_MEMORY[data_cfg.name]
    if split not in splits:
      raise ValueError(f"dataset {data_cfg.name!r} has no split {split!r}; splits: {sorted(splits)}")
    source = splits[split]
    return source, sources.DatasetMeta(
        name=data_cfg.name, split=split, size=len(source),
        image_shape=tuple(source.arrays[data_key].shape[1:]),
        value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))), factors=factors,
        data_key=data_key, source="in-memory arrays (registry.register_arrays)")
  b = builder(data_cfg)
  base, _ = _split_name(data_cfg.name)
  if base in BUILDERS and not b.is_prepared():
    manual_dir = data_cfg.get("manual_dir") or None
    # Builders that read a manual_dir check it first: a one-line error naming the
    # directory, rather than tfds's assertion from inside the preparation.
    check = getattr(type(b), "check_manual_dir", None)
    if check is not None:
      check(manual_dir)
    if not _prepare_once(b, manual_dir):
      b = builder(data_cfg)  # another process prepared it: read the info it wrote
  split = getattr(type(b), "SPLIT_ALIASES", {}).get(split, split)
  known_splits = b.info.splits
  split_base = split.split("[")[0]
  if known_splits and split_base not in known_splits:
    raise ValueError(f"dataset {data_cfg.name!r} has no split {split!r}; "
                     f"splits: {sorted(known_splits)}")
  try:
    data_source = b.as_data_source(split=split)
  except Exception as e:  # tfds raises NotImplementedError / ValueError when nothing is there
    if base not in BUILDERS and not b.is_prepared():
      raise _not_prepared_error(data_cfg, b) from e
    raise
  meta = _meta(b, data_cfg, split, len(data_source))
  source = sources.TfdsSource(data_source, transform=_transform(b, data_cfg))
  return source, meta


def _prepare_once(b, manual_dir) -> bool:
  """Prepares ``b`` under an exclusive lock beside its data directory, unless another
  process prepared it meanwhile (then False). Two runs started together on a fresh
  data_dir would otherwise both generate the data, and the second one's final rename
  fails on the directory the first one left."""
  import fcntl
  import os

  import tensorflow_datasets as tfds
  parent, version = os.path.split(os.fspath(b.data_dir).rstrip("/"))
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, f".{version}.djax-prepare.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if b.is_prepared():
        return False
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
      return True
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _transform(b, data_cfg):
  spec = _spec(data_cfg)
  if spec is not None:
    return spec.transform(b.info.features, data_cfg.get("image_size"))
  if _split_name(data_cfg.name)[0] in BUILDERS:
    return None
  # Another tfds dataset: keep the flat features (nested dicts do not stack).
  return lambda r: {k: v for k, v in r.items() if not isinstance(v, dict)}


def _meta(b, data_cfg, split, size):
  import tensorflow_datasets as tfds
  features = b.info.features
  base, _ = _split_name(data_cfg.name)
  spec = _spec(data_cfg)
  cls = type(b)
  if spec is not None:
    _, factors, names = spec.keys(features)
    continuous = dict(spec.continuous)
    label_key = spec.label_key
    source = spec.source
  else:
    factors, names = {}, {}
    for k, f in features.items():
      if isinstance(f, tfds.features.ClassLabel):
        factors[k] = f.num_classes
        names[k] = tuple(f.names)
    continuous = dict(getattr(cls, "CONTINUOUS_FACTORS", {}))
    label_key = getattr(cls, "LABEL_KEY", None) or DEFAULT_LABEL_KEYS.get(base)
    if label_key is None and "label" in factors:
      label_key = "label"
    source = getattr(cls, "SOURCE", "") or f"tfds {base}: {b.info.homepage}"
  return sources.DatasetMeta(name=data_cfg.name, split=split, size=size,
                              image_shape=tuple(stored_shape(data_cfg, b)),
                              value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))),
                              factors=factors, continuous_factors=continuous,
                              factor_values=names, label_key=label_key,
                              class_names=tuple(names.get(label_key, ())) if label_key else (),
                              data_key=_data_key(b), source=source,
                              description=str(b.info.description or "").strip())
