"""Hu et al. 2018, mixing autoencoders + discriminator + chunk classifier on Sprites.

    python -m djax.main --config=experiments/mixing_sprites.py          # the paper's setting
    python -m djax.main --config=experiments/mixing_sprites.py:small    # 32x32, narrow nets: CPU
    python -m djax.main --config=experiments/mixing_sprites.py:small,authors  # + authors' code

Paper: 8 chunks of 64 (§3.2), λ_M = λ_G = λ_C = 1 for Sprites, networks of Table 1.
Where the paper is silent the authors' code decides (noted below).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import defaults  # noqa: E402  (experiments/defaults.py: what every experiment shares)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = defaults.get_config()
  c.method = "mixing"

  c.data.name = "sprites/full"  # procedural Sprites, all 178 poses (djax/data/sprites.py)
  c.data.image_size = 64
  c.data.value_range = (-1.0, 1.0)  # the decoder ends in tanh
  c.data.pairing = "random"  # x1, x2 sampled independently (§3.1 step 1)

  c.model = ml_collections.ConfigDict()
  c.model.n_chunks = 8
  c.model.chunk_size = 64
  c.model.encoder_spec = "c64k3s2-c128k3s2-c256k3s2-c512k2s2-c512k2-f"
  # Table 1 ends the Sprites decoder in 'd3k2', which at stride 1 cannot turn the 32x32 map
  # of the layer before into a 64x64 image; the stride-2 reading 'd3k2s2' does.
  c.model.decoder_spec = "d512k4-d512k4s2-d256k4s2-d128k4s2-d3k2s2"
  c.model.discriminator_spec = "c64k3s2-c128k3s2-c256k3s2-c512-f"
  c.model.classifier_spec = "c96k8s2-p-c256k5-p-c384k3-c384k3-c256k3-p-f4096-f4096-f"
  # "normalization" (Table 1 caption) is unnamed: the authors' encoder uses instance norm;
  # DCGAN-style BatchNorm elsewhere; the classifier is "AlexNet with batch normalization".
  c.model.encoder_norm = "instance"
  c.model.decoder_norm = "batch"
  c.model.discriminator_norm = "batch"
  c.model.classifier_norm = "batch"
  # GAN balancing, off in the paper and the authors' code: spectral normalisation of every
  # discriminator weight (Miyato et al. 2018); see also loss.r1_gamma, optim.dsc.learning_rate.
  c.model.discriminator_spectral_norm = False

  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_mix = 1.0
  c.loss.lambda_gan = 1.0
  c.loss.lambda_cls = 1.0
  c.loss.lambda_rec = 0.0  # not in eq. 4; the authors' code adds 10 x reconstruction
  c.loss.gan = "non_saturating"
  c.loss.mask_per_example = True  # the authors' code shares one mask per batch
  # γ of the R1 penalty γ/2 E||∇_x Dsc(x1)||² on the discriminator's real images (Mescheder
  # et al. 2018, eq. 9); 0: off (not in the paper or the authors' code).
  c.loss.r1_gamma = 0.0

  c.optim = ml_collections.ConfigDict()
  for group in ("ae", "dsc", "cls"):
    # Paper silent; authors' code: Adam 2e-4, β1 0.5, learning rate x0.9 every 20k steps.
    c.optim[group] = ml_collections.ConfigDict(dict(
        learning_rate=2e-4, b1=0.5, b2=0.999, decay_every=20000, decay_rate=0.9,
        weight_decay=0.0, clip_norm=0.0))
  # A discriminator learning rate of its own (--config.optim.dsc.learning_rate=5e-5) is the
  # third GAN-balancing option (two time-scale rules, Heusel et al. 2017, run it the other
  # way: a slower D); the paper and the authors' code use one rate for all.

  c.train.batch_size = 64  # authors' code
  c.train.steps = 100_000
  c.train.log_every = 50
  c.train.save_every = 1000
  c.train.eval_every = 5000
  c.train.keep_checkpoints = 3

  # Table 2's retrieval mAP, then the standard disentanglement scores (djax.metrics,
  # disentanglement_lib's definitions; each code dimension is one latent).
  c.eval.metrics = ("chunk_retrieval_map", "mig", "sap", "dci", "factor_vae", "beta_vae")
  # Table 2 leaves out the weapon: "only visible in a small subset of poses".
  c.eval.factors = ("body", "skin", "vest", "hair", "arm", "leg", "pose")
  c.eval.sample_split = "validation"
  c.eval.num_grid_images = 8

  # Retrieval mAP against the step (metrics.jsonl's eval/nn_map/*, djax.report's curves.png):
  # Table 2's number alone on the test characters, a few seconds per point.
  c.eval.track_every = 5000
  c.eval.untrained = True  # eval.json always carries the initial parameters' row
  c.eval.track_metrics = ("chunk_retrieval_map",)

  for v in (variant or "").split(","):
    if v in ("", "full"):
      continue
    if v in ("small", "medium"):
      c.data.name = "sprites/small"
      c.data.image_size = 32
      c.model.chunk_size = 16
      c.model.encoder_spec = "c32k3s2-c64k3s2-c128k3s2-c128k2-f"
      c.model.decoder_spec = "d128k4-d64k4s2-d32k4s2-d3k4s2"
      c.model.discriminator_spec = "c32k3s2-c64k3s2-c128k3s2-f"
      c.model.classifier_spec = "c48k4s2-p-c96k3-p-c128k3-p-f256-f"
      c.train.steps = 1200  # 7-25 minutes on 2 CPU cores (README)
      c.train.log_every = 25
      c.train.save_every = 200
      c.train.eval_every = 400
      c.eval.track_every = 400
      if v == "medium":
        # :small's networks and data trained ~1 hour on 2 CPU cores (the budget):
        # 25,000 steps, retrieval mAP tracked every 2,500. Measured (68 min, README): best-chunk
        # mAP 0.426 untrained -> 0.581 at 10k -> 0.594 at 25k (flat from 12.5k).
        c.train.steps = 25_000
        c.train.save_every = 2500
        c.train.eval_every = 5000
        c.eval.track_every = 2500
    elif v == "authors":
      # The authors' code where it departs from the paper (shared/papers.md): generator
      # loss 10 x reconstruction + 10 x mix/unmix cycle + GAN + classifier, one mask per batch.
      c.loss.lambda_mix = 10.0
      c.loss.lambda_rec = 10.0
      c.loss.mask_per_example = False
    else:
      raise ValueError(f"unknown variant {v!r} of mixing_sprites; use small, medium, authors "
                       f"(comma-separated) or none")
  return c
