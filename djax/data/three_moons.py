"""three_moons: Zheng & Sun's toy data (tfds builder ``three_moons``).

Zheng & Sun 2019, "Disentangling latent space for VAE by label relevant/irrelevant
dimensions", Appendix B.1: "a modification of the two-moon dataset, which contains three
half circles instead of two ... sample data points from three half unit circles with a
horizontal interval of 2.2. Then, add Gaussian noises with std=0.15 to all of them."

Points, not images: every example is ``point`` float32 [2] and ``label`` (which circle:
left, middle, right), plus the ground truth ``angle`` (the position along the half circle,
in [0, pi]) as a continuous factor. Choices where the paper is silent (written down here):

* the half circles are upper halves, centred at x = -2.2, 0, 2.2 (y = 0): all three open
  the same way, so x carries the label and y does not (the paper's "x label-relevant, y
  irrelevant"); before the noise a point is (c_k + cos a, sin a), a ~ U[0, pi];
* classes are balanced; train 9,000 points (3,000 per circle), test 3,000;
* noise N(0, 0.15^2) on both coordinates; draws from ``djax.data.stable_random``, so every
  machine gets the same points.

The pipeline serves batches ``{'point': float32 [devices, per_device, 2], 'labels':
{'label', 'angle'}}`` (``DatasetMeta.data_key == 'point'``); the samplers (pairs, labelled
fraction for eq. 11) work on it as on images.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow_datasets as tfds

from djax.data import stable_random
from djax.data.local_builder import LocalBuilder

CENTERS = (-2.2, 0.0, 2.2)
NOISE_STD = 0.15
CLASS_NAMES = ("left", "middle", "right")
SPLIT_SIZES = {"train": 9000, "test": 3000}
SEED = 2019
_SPLIT_ID = {"train": 0, "test": 1}


def sample(n: int, seed) -> dict[str, np.ndarray]:
  """n points, balanced over the three circles (label = i % 3): point, label, angle."""
  label = np.arange(n) % 3
  angle = math.pi * stable_random.uniform([SEED, *np.atleast_1d(seed), 0], n)
  noise = NOISE_STD * stable_random.normal([SEED, *np.atleast_1d(seed), 1], 2 * n).reshape(n, 2)
  x = np.asarray(CENTERS)[label] + np.cos(angle) + noise[:, 0]
  y = np.sin(angle) + noise[:, 1]
  return {"point": np.stack([x, y], -1).astype(np.float32), "label": label.astype(np.int64),
          "angle": angle.astype(np.float32)}


def split_arrays(split: str) -> dict[str, np.ndarray]:
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown split {split!r}; splits: {list(SPLIT_SIZES)}")
  return sample(SPLIT_SIZES[split], _SPLIT_ID[split])


class ThreeMoons(LocalBuilder):
  """Three noisy half circles (Zheng & Sun 2019, App. B.1); see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Upper half circles at x = -2.2, 0, 2.2; noise std 0.15."}
  DATA_KEY = "point"
  LABEL_KEY = "label"
  CONTINUOUS_FACTORS = {"angle": (0.0, math.pi)}
  SOURCE = ("djax builder three_moons: Zheng & Sun 2019, Appendix B.1 (three half unit "
            "circles 2.2 apart, Gaussian noise std 0.15)")


  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Three half unit circles 2.2 apart with Gaussian noise (std 0.15); the "
        "label says which circle (Zheng & Sun 2019, Appendix B.1).",
        features=tfds.features.FeaturesDict({
            "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            "angle": tfds.features.Tensor(shape=(), dtype=np.float32),
        }),
        supervised_keys=("point", "label"),
        homepage="https://openaccess.thecvf.com/CVPR2019",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    a = split_arrays(split)
    for i in range(len(a["label"])):
      yield i, {"point": a["point"][i], "label": int(a["label"][i]), "angle": a["angle"][i]}


_CITATION = """\
@inproceedings{zheng2019disentangling,
  title={Disentangling Latent Space for VAE by Label Relevant/Irrelevant Dimensions},
  author={Zheng, Zhilin and Sun, Li},
  booktitle={CVPR},
  year={2019}
}"""
