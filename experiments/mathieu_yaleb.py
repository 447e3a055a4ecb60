"""Mathieu et al. 2016 on Extended Yale B (djax builder ``yaleb``, read from manual_dir; layout
in djax/data/yaleb.py): s = the subject (38), z = the light direction.

    python -m djax.main --config=experiments/mathieu_yaleb.py --config.data.manual_dir=M

where M/CroppedYale/yaleB01/yaleB01_P00A+000E+00.pgm exists (CroppedYale.zip unzipped into M);
the first run prepares the dataset under data_dir, later runs need no manual_dir.

§1: six 3x3 convs, stride 2 every other layer; s = 64, z = 512 ("For sprites, NORB and
Extended-YaleB"); Fig. 9 shows interpolations on this dataset. The resolution is not stated:
64x64 grayscale, the central 168x168 of the 192x168 cropped faces area-resized (djax's
``yaleb`` variant 64; see djax/data/tfds_datasets.py). The split is djax's (the paper states
none): one image in five of every subject in test, so s is probed on subjects it has seen
and z on the light directions (azimuth, elevation) it should carry.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mathieu_mnist  # noqa: E402  (the MNIST config: the model and the authors' loss weights)


def get_config(variant: str | None = None):
  if variant not in (None, "", "full"):
    raise ValueError(f"unknown variant {variant!r} of mathieu_yaleb; it has none")
  c = mathieu_mnist.get_config("full")
  c.data.name = "yaleb"
  c.data.image_size = 64
  c.data.channels = 1
  c.data.label_key = "subject"
  c.model.num_classes = 38  # yaleB01..yaleB39 without yaleB14
  c.model.s_dim, c.model.z_dim = 64, 512  # §1
  c.model.trunk_spec = "c64k3-c64k3s2-c128k3-c128k3s2-c256k3-c256k3s2"  # §1: NORB and YaleB
  c.model.adversary_spec = "c64k5s2-c128k5s2-c256k5s2"  # §1: the DCGAN adversary throughout
  c.loss.lambda_kl = 0.1 * 6 / (1 * 64 * 64)  # authors' code: 0.1 x 6 / (C·H·W)
  c.eval.factors = ("subject", "azimuth", "elevation")
  c.eval.probe_split = "train"  # yaleb has train and test only
  c.eval.sample_split = "test"  # Fig. 9: "real faces from the test set"
  return c
