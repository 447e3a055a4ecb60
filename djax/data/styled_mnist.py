"""styled_mnist: Ruiz et al.'s digit-style data (tfds builder ``styled_mnist``).

Ruiz, Martinez, Binefa, Verbeek 2019, "Learning disentangled representations with
reference-based variational autoencoders", §5.1 and Appendix A.3.1: MNIST digits enlarged
to 64x64 with only their edges kept; a *reference* set of untransformed digits (the target
factors are constant there) and an *unlabelled* set where every digit of the other half is
transformed twice, each time with

  width   a dilation with a square k x k kernel, k ~ U{1, ..., 10}       (factor ``width``)
  colour  RGB multiplied by c / ||c||_1, c ~ U[0, 1]^3                  (``R``, ``G``, ``B``)
  size    a downscale by s ~ U[0.5, 1], then zero padding back to 64x64  (``scale``)

The transform parameters are stored per example as continuous factors (reference digits:
R = G = B = 1, scale = 1, width = 1, i.e. nothing applied), with the digit's ``label``.

Pipeline (a choice where the paper is silent): the 28x28 digit is resized bilinearly to
64x64, thresholded at 128, and its edge is the 1-pixel inner boundary of that mask
(mask minus its 4-neighbour erosion). Width, then size (area resize of the grey image to
round(64 s) pixels, centred in a zero 64x64 frame), then colour (the grey image times 255 c)
are applied in float and rounded once; colour is linear, so its order does not matter.

Splits (``SPLIT_ALIASES`` map the generic names train / validation / test onto them):

  reference   the first half of the source training digits (a seeded permutation), as is
  unlabelled  the other half, each digit transformed twice (2x as many examples)
  test_fit    half of the source test digits, transformed once (to fit the regressors of
              Ruiz et al.'s Table 1)
  test_eval   the other half, transformed once (to score them)

Configs: ``mnist_5k`` (default; offline: 2,000 reference / 4,000 unlabelled / 500 / 500),
``mnist`` (the paper's sizes, 30k / 60k / 5k / 5k; reads tfds ``mnist`` from data_dir,
which must be prepared), ``tiny`` (the first 80 train and 40 test digits of mnist_5k).

Transform parameters come from ``djax.data.stable_random`` seeded by (split, digit, copy), so
they are the same on every machine, and a digit gets the same transforms in every config
that contains it under the same index.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from djax.data import stable_random
from djax.data.local_builder import LocalBuilder

IMAGE_SIZE = 64
SEED = 2019
FACTORS = ("R", "G", "B", "scale", "width")
FACTOR_RANGES = {"R": (0.0, 1.0), "G": (0.0, 1.0), "B": (0.0, 1.0), "scale": (0.5, 1.0),
                 "width": (1.0, 10.0)}
MAX_WIDTH = 10
SPLITS = ("reference", "unlabelled", "test_fit", "test_eval")
_SOURCE_SPLIT_ID = {"train": 0, "test": 1}


# --------------------------------------------------------------------------------------
# The transforms
# --------------------------------------------------------------------------------------

def edges(digit: np.ndarray) -> np.ndarray:
  """uint8 [28, 28(, 1)] digit -> bool [64, 64] edge map (1-pixel inner boundary)."""
  from PIL import Image
  d = np.asarray(digit)
  d = d[..., 0] if d.ndim == 3 else d
  big = np.asarray(Image.fromarray(d.astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE),
                                                              Image.Resampling.BILINEAR))
  mask = big >= 128
  inner = mask.copy()  # erosion by the 4-neighbour cross, outside the frame counts as 0
  inner[1:] &= mask[:-1]
  inner[:-1] &= mask[1:]
  inner[:, 1:] &= mask[:, :-1]
  inner[:, :-1] &= mask[:, 1:]
  inner[0] = inner[-1] = False
  inner[:, 0] = inner[:, -1] = False
  return mask & ~inner


def dilate(m: np.ndarray, k: int) -> np.ndarray:
  """Binary dilation by a k x k square (separable): pixel (y, x) is set when any pixel in
  rows y - (k-1)//2 .. y + k//2 and the same columns is (scipy.ndimage.binary_dilation
  with np.ones((k, k))); k = 1 is the identity."""
  lo, hi = (k - 1) // 2, k // 2
  for axis in (0, 1):
    out = m.copy()
    for d in range(1, lo + 1):  # from pixels before (y - d)
      if axis == 0:
        out[d:] |= m[:-d]
      else:
        out[:, d:] |= m[:, :-d]
    for d in range(1, hi + 1):  # from pixels after (y + d)
      if axis == 0:
        out[:-d] |= m[d:]
      else:
        out[:, :-d] |= m[:, d:]
    m = out
  return m


def draw_params(split_id: int, digit: int, copy: int) -> dict[str, float]:
  """The transform of one (source split, digit, copy): width, colour, scale."""
  u = stable_random.uniform([SEED, split_id, digit, copy], 5)
  c = u[1:4]
  c = c / max(c.sum(), 1e-12)
  return {"R": float(c[0]), "G": float(c[1]), "B": float(c[2]),
          "scale": float(0.5 + 0.5 * u[4]), "width": float(1 + min(int(u[0] * MAX_WIDTH),
                                                                   MAX_WIDTH - 1))}


def style(edge: np.ndarray, params: dict[str, float]) -> np.ndarray:
  """bool [64, 64] edge map -> uint8 [64, 64, 3]: dilate by ``width``, downscale by
  ``scale`` and zero-pad, multiply RGB by (R, G, B)."""
  from PIL import Image
  m = dilate(edge, int(params["width"]))
  grey = m.astype(np.float32) * 255.0
  size = int(round(IMAGE_SIZE * params["scale"]))
  if size != IMAGE_SIZE:
    small = np.asarray(Image.fromarray(grey, mode="F").resize((size, size),
                                                              Image.Resampling.BOX))
    grey = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    top = (IMAGE_SIZE - size) // 2
    grey[top:top + size, top:top + size] = small
  rgb = grey[..., None] * np.array([params["R"], params["G"], params["B"]], np.float32)
  return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


REFERENCE_PARAMS = {"R": 1.0, "G": 1.0, "B": 1.0, "scale": 1.0, "width": 1.0}


def reference_image(digit: np.ndarray) -> np.ndarray:
  """The untransformed (reference) 64x64 RGB edge image of a digit."""
  return style(edges(digit), REFERENCE_PARAMS)


def transformed_image(digit: np.ndarray, split_id: int, index: int, copy: int):
  """(image, params) of copy ``copy`` of digit ``index`` of source split ``split_id``."""
  params = draw_params(split_id, index, copy)
  return style(edges(digit), params), params


# --------------------------------------------------------------------------------------
# Source digits
# --------------------------------------------------------------------------------------

def source_digits(source: str, split: str, data_dir=None, limit: int | None = None):
  """(images uint8 [N, 28, 28, 1], labels [N], ids [N]) of a source split: 'mnist_5k' or
  tfds 'mnist' (which must be prepared under data_dir; read without TensorFlow). ``ids`` are
  the digits' positions in the whole source split; ``limit`` keeps that many digits (for
  mnist_5k, whose file is sorted by class, a seeded sample so that every class is there)."""
  if source == "mnist_5k":
    from djax.data import mnist_5k
    images, labels = mnist_5k.split_arrays(split)
    ids = np.arange(len(labels))
    if limit is not None and limit < len(ids):
      ids = np.sort(stable_random.permutation([SEED, 7, _SOURCE_SPLIT_ID[split]], len(ids))[:limit])
    return images[ids], labels[ids], ids
  if source == "mnist":
    b = tfds.builder("mnist", data_dir=data_dir)
    try:
      ds = b.as_data_source(split=split)
    except Exception as e:
      from djax.data import tfds_datasets
      raise FileNotFoundError(
          f"styled_mnist/mnist reads tfds 'mnist', which is not prepared under "
          f"data_dir={data_dir!r}. On a machine with a network run\n"
          f"  {tfds_datasets.prepare_command('mnist')}\n"
          f"and copy DIR here (--config.data.data_dir=DIR); or use the offline "
          f"styled_mnist/mnist_5k") from e
    n = len(ds) if limit is None else min(limit, len(ds))
    records = [ds[i] for i in range(n)]
    images = np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8)
    labels = np.array([int(r["label"]) for r in records], np.int64)
    return images, labels, np.arange(n)
  raise ValueError(f"unknown source {source!r}; use 'mnist_5k' or 'mnist'")


def split_plan(n_train: int, n_test: int) -> dict[str, np.ndarray]:
  """Positions of the digits behind each split: train digits halved by a seeded permutation into
  reference / unlabelled; test digits halved into test_fit / test_eval."""
  p = stable_random.permutation([SEED, 100, n_train], n_train)
  q = stable_random.permutation([SEED, 101, n_test], n_test)
  h, g = n_train // 2, n_test // 2
  return {"reference": np.sort(p[:h]), "unlabelled": np.sort(p[h:]),
          "test_fit": np.sort(q[:g]), "test_eval": np.sort(q[g:])}


# --------------------------------------------------------------------------------------
# tfds builder
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class StyledMnistConfig(tfds.core.BuilderConfig):
  """``source``: 'mnist_5k' or 'mnist'; ``limit_*``: use only the first N digits."""
  source: str = "mnist_5k"
  limit_train: int | None = None
  limit_test: int | None = None


class StyledMnist(LocalBuilder):
  """Ruiz et al.'s styled MNIST (reference / unlabelled); see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Edges at 64x64; width, colour, size transforms (App. A.3.1)."}
  BUILDER_CONFIGS = [
      StyledMnistConfig(name="mnist_5k", source="mnist_5k",
                        description="From the offline mnist_5k: 2,000 / 4,000 / 500 / 500."),
      StyledMnistConfig(name="mnist", source="mnist",
                        description="From tfds mnist (prepared): 30k / 60k / 5k / 5k."),
      StyledMnistConfig(name="tiny", source="mnist_5k", limit_train=80, limit_test=40,
                        description="80 train and 40 test digits of mnist_5k, for tests."),
  ]
  DEFAULT_CONFIG_NAME = "mnist_5k"
  SPLIT_ALIASES = {"train": "unlabelled", "validation": "test_fit", "test": "test_eval"}
  LABEL_KEY = "label"
  CONTINUOUS_FACTORS = FACTOR_RANGES
  SOURCE = ("djax builder styled_mnist: Ruiz et al. 2019, Appendix A.3.1 (edges at 64x64; "
            "width, colour, size transforms) applied to MNIST digits")


  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.float32)  # noqa: E731
    return tfds.core.DatasetInfo(
        builder=self,
        description="MNIST edges at 64x64; reference digits as they are, unlabelled digits "
        "transformed twice in width, colour and size (Ruiz et al. 2019, App. A.3.1).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                                          encoding="zlib"),
            "label": tfds.features.ClassLabel(num_classes=10),
            **{k: scalar() for k in FACTORS},
            "digit": tfds.features.Tensor(shape=(), dtype=np.int64),
            "copy": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        homepage="https://inria.hal.science/hal-01896007v2",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    data_dir = getattr(self, "data_dir_root", None)
    train = source_digits(cfg.source, "train", data_dir, cfg.limit_train)
    test = source_digits(cfg.source, "test", data_dir, cfg.limit_test)
    plan = split_plan(len(train[0]), len(test[0]))
    return {s: self._generate_examples(s, train if s in ("reference", "unlabelled") else test,
                                       plan[s]) for s in SPLITS}

  def _generate_examples(self, split, digits, positions):
    yield from generate(split, digits, positions)


def generate(split: str, digits, positions):
  """(key, example) of ``split`` for the digits at ``positions`` of ``digits`` (images,
  labels, ids as from ``source_digits``)."""
  images, labels, ids = digits
  split_id = _SOURCE_SPLIT_ID["train" if split in ("reference", "unlabelled") else "test"]
  for p in positions:
    p = int(p)
    i = int(ids[p])
    e = edges(images[p])
    if split == "reference":
      yield i, _example(style(e, REFERENCE_PARAMS), labels[p], REFERENCE_PARAMS, i, -1)
      continue
    for c in ((0, 1) if split == "unlabelled" else (0,)):
      params = draw_params(split_id, i, c)
      yield 2 * i + c, _example(style(e, params), labels[p], params, i, c)


def _example(image, label, params, digit, copy):
  return {"image": image, "label": int(label), **{k: np.float32(params[k]) for k in FACTORS},
          "digit": digit, "copy": copy}


_CITATION = """\
@article{ruiz2019learning,
  title={Learning Disentangled Representations with Reference-Based Variational Autoencoders},
  author={Ruiz, Adria and Martinez, Oriol and Binefa, Xavier and Verbeek, Jakob},
  booktitle={ICLR Workshop on Learning from Limited Labeled Data},
  year={2019}
}"""
