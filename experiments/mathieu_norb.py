"""Mathieu et al. 2016 on smallNORB (tfds ``smallnorb``; prepare it first, see
djax/data/tfds_datasets.py): s = the object instance, z = pose and lighting.

    python -m djax.main --config=experiments/mathieu_norb.py

§1: six 3x3 convs, stride 2 every other layer; s = 64, z = 512. The resolution is not
stated; 64x64 is the size of the disentanglement literature (and of djax's smallnorb
variants). tfds's ``instance`` numbers the objects within a category (0-9) and the train and
test splits hold different instances, so the probes score the category, azimuth, elevation
and lighting. Yale-B: experiments/mathieu_yaleb.py (read from manual_dir).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mathieu_mnist  # noqa: E402


def get_config(variant: str | None = None):
  if variant not in (None, "", "full"):
    raise ValueError(f"unknown variant {variant!r} of mathieu_norb; it has none")
  c = mathieu_mnist.get_config("full")
  c.data.name = "smallnorb"
  c.data.image_size = 64
  c.data.channels = 1
  c.data.label_key = "instance"
  c.model.num_classes = 10
  c.model.s_dim, c.model.z_dim = 64, 512
  c.model.trunk_spec = "c64k3-c64k3s2-c128k3-c128k3s2-c256k3-c256k3s2"
  c.model.adversary_spec = "c64k5s2-c128k5s2-c256k5s2"  # §1: the DCGAN adversary throughout
  c.loss.lambda_kl = 0.1 * 6 / (1 * 64 * 64)
  c.eval.factors = ("label_category", "label_azimuth", "label_elevation", "label_lighting")
  c.eval.probe_split = "train"
  return c
