"""Hu et al. 2018, mixing on CelebA (DCGAN networks of Table 1), Table 3's metric.

    python -m djax.main --config=experiments/mixing_celeba.py --config.data.data_dir=DIR

Needs tfds ``celeb_a`` prepared (``python -m djax.data.tfds_datasets prepare celeb_a
--data_dir=DIR`` on a connected machine). §3.2: 8 chunks of 64, λ_M = 30, λ_G = λ_C = 1.
Table 3: a linear classifier per attribute on the whole code, fitted on the validation
split and scored on the test split (djax's ``linear_probe``), for Table 3's 12 attributes.
Everything not set here is the Sprites recipe (``mixing_sprites.py``).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixing_sprites  # noqa: E402  (the Sprites recipe these configs derive from)

# Table 3's columns (Eyebr., Attr., Bangs, Black, Blond, Makeup, Male, Mouth, Beard, Wavy,
# Hat, Lips) as CelebA names them; "Beard" is CelebA's No_Beard, its only beard attribute.
TABLE3_ATTRIBUTES = ("Arched_Eyebrows", "Attractive", "Bangs", "Black_Hair", "Blond_Hair",
                     "Heavy_Makeup", "Male", "Mouth_Slightly_Open", "No_Beard", "Wavy_Hair",
                     "Wearing_Hat", "Wearing_Lipstick")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  # Table 1's CelebA (DCGAN) networks are the Sprites ones, 64x64.
  c = mixing_sprites.get_config()
  c.data.name = "celeb_a"
  c.data.image_size = 64  # the aligned 218x178 images, centre-cropped and area-resized
  c.data.channels = 3
  c.loss.lambda_mix = 30.0  # §3.2: "For CelebA, we increase the weight ... to λ_M = 30"
  c.train.steps = 100_000
  c.eval.metrics = ("linear_probe",)
  c.eval.factors = TABLE3_ATTRIBUTES
  c.eval.split = "test"
  c.eval.probe_split = "validation"
  c.eval.sample_split = "test"
  c.eval.track_every = 0  # a probe fit per point: set it when wanted
  c.eval.untrained = True  # eval.json always carries the initial parameters' row

  if variant == "tiny":
    # Tests on tfds mock data: narrow networks that compile in seconds.
    c.model.chunk_size = 4
    c.model.encoder_spec = "c8k3s2-c16k3s2-f"
    c.model.decoder_spec = "d16k4-d8k4s2-d8k4s2-d8k4s2-d3k4s2"
    c.model.discriminator_spec = "c8k3s2-f"
    c.model.classifier_spec = "c8k3s2-p-f16-f"
    c.num_devices = 1
    c.train.batch_size = 8
    c.train.steps = 2
    c.train.log_every = 1
    c.train.save_every = 1000
    c.eval.num_grid_images = 2
    c.progress_bar = False
  elif variant not in (None, "", "full"):
    raise ValueError(f"unknown variant {variant!r} of mixing_celeba; use 'tiny' or none")
  return c
