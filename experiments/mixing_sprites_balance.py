"""The GAN-balancing options of the mixing recipe on Sprites, each measured, in one command.

    python -m djax.main --config=experiments/mixing_sprites_balance.py --workdir=runs/mix-balance

Trains ``mixing_sprites.py:small`` (or ``:VARIANT``) once per row with the same seed, schedule
and networks and writes WORKDIR/variants.md (best-chunk retrieval mAP per attribute, the
untrained network's average, seconds per step); each row's metrics.jsonl holds d_real,
d_fake and mask_accuracy against the step. None of the options is in the paper or the
authors' code, which let the discriminator win from the first hundred steps (README):

* base: the recipe as it is (= Table 2's MIX+C+G row);
* spectral_norm: every discriminator weight spectrally normalised (Miyato et al. 2018);
* r1: R1 on the real images, γ = 10 (Mescheder et al. 2018; their default for small images);
* slow_d: the discriminator's Adam at 5e-5, a quarter of the rest (a two time-scale rule,
  Heusel et al. 2017, run the other way).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixing_sprites  # noqa: E402  (the Sprites recipe these configs derive from)


def balance_variants() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "base": {},
      "spectral_norm": {"model": {"discriminator_spectral_norm": True}},
      "r1": {"loss": {"r1_gamma": 10.0}},
      "slow_d": {"optim": {"dsc": {"learning_rate": 5e-5}}},
  })


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = mixing_sprites.get_config(variant or "small")
  c.progress_bar = False
  c.eval.metrics = ("chunk_retrieval_map",)  # Table 2's one number; faster per row
  c.variants = balance_variants()
  return c
