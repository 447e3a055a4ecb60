"""Hu et al. 2018 Table 2's ablation on Sprites in one command, at one budget.

    python -m djax.main --config=experiments/mixing_sprites_ablation.py --workdir=runs/mix-table2

Trains the recipe of ``mixing_sprites.py:small`` (or ``:VARIANT``, the part after the colon,
e.g. ``:authors`` or ``:full``) once per row of Table 2 with the same seed, schedule and
networks, and writes WORKDIR/variants.md: each row's best-chunk retrieval mAP per attribute
beside the paper's, the untrained network's average, and seconds per step
(``Mixing.variant_table``). Rows (the paper's names, §4 and Table 2's caption):

* AE: a vanilla autoencoder, one chunk of the same total size (n·d), reconstruction only;
* AE+C+G: the autoencoder's reconstruction in place of the mixing cycle, with the
  classifier and the GAN on the mixed images;
* MIX, MIX+C, MIX+G, MIX+C+G: the mixing cycle with neither, one or both of them.

(Table 2's C+G row, no reconstruction at all, is left out: it is the paper's lower bound.)

"Reconstruction only" weighs the reconstruction as the recipe weighs its mixing loss
(λ_rec = λ_M where the recipe has no reconstruction term of its own); a recipe with the
authors' reconstruction term (λ_rec > 0) keeps it in every MIX row.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixing_sprites  # noqa: E402  (the Sprites recipe these configs derive from)


def table2_variants(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Table 2's rows as ``config.variants`` overrides of the recipe ``c``."""
  lam = c.loss
  rec = lam.lambda_rec or lam.lambda_mix
  ae_loss = {"lambda_mix": 0.0, "lambda_rec": rec}
  one_chunk = {"n_chunks": 1, "chunk_size": c.model.n_chunks * c.model.chunk_size}
  return ml_collections.ConfigDict({
      "ae": {"model": one_chunk, "loss": {**ae_loss, "lambda_gan": 0.0, "lambda_cls": 0.0}},
      "ae_c_g": {"loss": ae_loss},
      "mix": {"loss": {"lambda_gan": 0.0, "lambda_cls": 0.0}},
      "mix_c": {"loss": {"lambda_gan": 0.0}},
      "mix_g": {"loss": {"lambda_cls": 0.0}},
      "mix_c_g": {},
  })


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = mixing_sprites.get_config(variant or "small")
  c.progress_bar = False
  c.eval.metrics = ("chunk_retrieval_map",)  # Table 2's one number; faster per row
  c.variants = table2_variants(c)
  return c
