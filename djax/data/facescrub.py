"""facescrub: FaceScrub face crops read from a ``manual_dir`` (tfds builder ``facescrub``).

FaceScrub (Ng & Winkler 2014) is distributed as lists of image URLs; Zheng & Sun (§4.2) use
its 530 identities, ~92k images, faces detected, aligned and cropped, resized to 64x64.
djax downloads nothing: put the face crops in ``manual_dir``, one folder per person::

    DIR/
      Aaron_Eckhart/
        Aaron_Eckhart_1.jpg
        ...
      Adam_Brody/
        ...

Any image format PIL reads; every image is made RGB and area-resized to 64x64 (crop and
align them before: djax does no face detection). The class label is the person: class k
is the k-th folder in sorted name order (``label``, ClassLabel(530), the paper's and the
authors' identity count; fewer folders leave the last classes empty). The
paper states no split; djax holds out a seeded 10 % of each person's images as ``test``
(``djax.data.manual_images.stratified_test``), so every machine gets the same split.

    python -m djax.main --config=experiments/label_relevant_facescrub.py \\
        --config.data.manual_dir=DIR

The first use prepares the tfds dataset under ``data_dir`` (no TensorFlow needed); later
runs read it from there.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from djax.data import manual_images
from djax.data.local_builder import LocalBuilder

SIZE = 64  # §4.2: "resized to the fixed size 64x64"
NUM_CLASSES = 530  # §4.2 and the authors' code; the label's cardinality, whatever DIR holds
TEST_FRACTION = 0.1
SEED = 530
LAYOUT = "one folder per person of face crops (DIR/<person>/<image>.jpg)"


def scan(manual_dir) -> tuple[list[str], list[tuple[str, int]]]:
  """(person names in class order, [(image path, class)]) of a FaceScrub manual_dir."""
  root = manual_images.require_dir(manual_dir, "facescrub", LAYOUT)
  people = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  files = []
  for c, person in enumerate(people):
    folder = os.path.join(root, person)
    for f in sorted(os.listdir(folder)):
      if f.lower().endswith(manual_images.IMAGE_EXTENSIONS):
        files.append((os.path.join(folder, f), c))
  if not files:
    raise FileNotFoundError(f"dataset 'facescrub': manual_dir {root!r} holds no images in "
                            f"person folders; it must hold {LAYOUT}")
  if len(people) > NUM_CLASSES:
    raise ValueError(f"dataset 'facescrub': manual_dir {root!r} holds {len(people)} person "
                     f"folders, more than FaceScrub's {NUM_CLASSES}; keep one per identity")
  return people, files


class Facescrub(LocalBuilder):
  """FaceScrub face crops from a manual_dir; see the module docstring."""

  name = "facescrub"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Face crops from manual_dir, 64x64, 10 % per person held out."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  LABEL_KEY = "label"
  SOURCE = ("djax builder facescrub: FaceScrub (Ng & Winkler 2014) face crops read from "
            "manual_dir, one folder per person, resized to 64x64")
  CITATION = """\
@inproceedings{ng2014data,
  title={A data-driven approach to cleaning large face datasets},
  author={Ng, Hong-Wei and Winkler, Stefan},
  booktitle={ICIP}, pages={343--347}, year={2014}
}"""

  @classmethod
  def check_manual_dir(cls, manual_dir) -> None:
    scan(manual_dir)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="FaceScrub face crops (one class per person) read from manual_dir.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(SIZE, SIZE, 3), dtype=np.uint8,
                                          encoding="zlib"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        homepage="http://vintage.winklerbros.net/facescrub.html",
        citation=self.CITATION,
    )

  def _split_generators(self, dl_manager):
    _, files = scan(dl_manager.manual_dir)
    test = manual_images.stratified_test(np.array([c for _, c in files]), TEST_FRACTION, SEED)
    return {"train": self._generate_examples(files, ~test),
            "test": self._generate_examples(files, test)}

  def _generate_examples(self, files, keep):
    for i, ((path, c), k) in enumerate(zip(files, keep)):
      if k:
        yield i, {"image": manual_images.load_rgb(path, SIZE), "label": c}
