"""Zheng & Sun 2019 on CUB-200-2011 (djax builder ``cub``, 200 classes; App. C.2).

    python -m djax.main --config=experiments/label_relevant_cub.py \\
        --config.data.manual_dir=DIR           # DIR: the unpacked CUB_200_2011 folder
    python -m djax.main --config=experiments/label_relevant_cub.py:paper64 ...  # the paper's 64x64
    python -m djax.main --config=experiments/label_relevant_cub.py:tiny ...     # 2 steps, tests

The data: ``djax/data/cub.py`` (the files it reads, the bounding-box crop, the official
train / test split).

C.2: "The network structure is just same as it used in FaceScrub", the images cropped to their
bounding boxes and resized to 64x64. The authors' datas.py reads CUB at 128x128 with z 512, and
this config follows it (the VGG encoders then end in a 4x4 map; Table 4's global average
pooling makes the discriminator size-agnostic). ``:paper64`` is the paper's 64x64 (the stored
128 area-downsampled by the pipeline). ``:paper`` / ``:paper64`` take Algorithm 1's loss
weights, the default the authors' solvers (see label_relevant_mnist.py).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label_relevant_facescrub  # noqa: E402  (FaceScrub's networks, B.2)
import label_relevant_mnist  # noqa: E402  (the shared settings of the image configs)

TRAIN_SIZE = 5994  # train_test_split.txt's training images


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, "", "code", "paper", "paper64", "tiny"):
    raise ValueError(f"unknown variant {variant!r} of label_relevant_cub; use 'paper', "
                     f"'paper64', 'tiny' or none")
  weights = "paper" if variant in ("paper", "paper64") else None
  c = label_relevant_mnist.get_config(weights)
  c.data.name = "cub"
  size = 64 if variant == "paper64" else 128
  label_relevant_facescrub.vgg_config(c, weights, size, 200, TRAIN_SIZE)
  if variant == "tiny":
    label_relevant_facescrub.tiny(c, 128)
  return c
