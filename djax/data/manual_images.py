"""What the image datasets read from a ``manual_dir`` share (``facescrub``, ``cub``): the
one-line check that the directory holds what the builder needs, square resizing with PIL,
and a seeded, class-stratified train / test split that is the same on every machine.
"""

from __future__ import annotations

import os

import numpy as np

from djax.data import stable_random

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".webp")


def require_dir(manual_dir, dataset: str, layout: str) -> str:
  """``manual_dir`` as a str, or a one-line FileNotFoundError naming it and the fix."""
  if not manual_dir:
    raise FileNotFoundError(f"dataset {dataset!r} is read from files you download yourself: "
                            f"pass --config.data.manual_dir=DIR, DIR holding {layout}")
  path = os.fspath(manual_dir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"dataset {dataset!r}: manual_dir {path!r} does not exist; it "
                            f"must hold {layout}")
  return path


def load_rgb(path: str, size: int, box: tuple[float, float, float, float] | None = None
             ) -> np.ndarray:
  """uint8 [size, size, 3]: the image at ``path`` (any mode, made RGB), cropped to ``box``
  (left, top, width, height in pixels) if given, area-resized to size x size."""
  from PIL import Image
  with Image.open(path) as im:
    im = im.convert("RGB")
    if box is not None:
      left, top, w, h = box
      im = im.crop((int(round(left)), int(round(top)), int(round(left + w)),
                    int(round(top + h))))
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def stratified_test(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """bool [N]: per class, the first ceil(fraction · n_c) examples of a seeded permutation
  (at least one when the class has two or more examples) are the test set."""
  labels = np.asarray(labels)
  test = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    k = int(np.ceil(fraction * len(members))) if len(members) > 1 else 0
    perm = members[stable_random.permutation([seed, int(c)], len(members))]
    test[perm[:k]] = True
  return test
