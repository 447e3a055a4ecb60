"""Hu et al. 2018, mixing on MNIST (Fig. 2): 8 chunks of 8 (§3.2), λ_M = λ_G = λ_C = 1.

    python -m djax.main --config=experiments/mixing_mnist.py             # tfds mnist, Table 1
    python -m djax.main --config=experiments/mixing_mnist.py:small       # mnist_5k, narrow: CPU

The paper shows MNIST qualitatively (attribute transfer: class, rotation, stroke width);
djax also scores each chunk's nearest-neighbour retrieval of the digit label (Table 2's
protocol) and writes one transfer grid per chunk. Everything not set here is the Sprites
recipe (``mixing_sprites.py``: optimisers, losses, norms, the authors' code's choices).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixing_sprites  # noqa: E402  (the Sprites recipe these configs derive from)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = mixing_sprites.get_config()
  c.data.name = "mnist"  # tfds mnist: 60,000 / 10,000
  # 28x28 zero-padded to 32x32: Table 1's MNIST decoder (d512k4-d256k4s2-d128k4s2-d3k2)
  # gives 32x32 in the stride-2 reading of its last layer, the reading the Sprites decoder
  # needs too (mixing_sprites.py); one channel, not 3.
  c.data.image_size = 32
  c.data.channels = 1
  c.model.n_chunks = 8
  c.model.chunk_size = 8  # §3.2: "chunk size 8 for MNIST"
  c.model.encoder_spec = "c64k3s2-c128k3s2-c256k3s2-f"
  c.model.decoder_spec = "d512k4-d256k4s2-d128k4s2-d1k2s2"
  c.model.discriminator_spec = "c64k3s2-c128k3s2-c256k3s2-c512-f"
  c.model.classifier_spec = "c96k8s2-p-c256k5-p-c384k3-c384k3-c256k3-p-f4096-f4096-f"
  c.train.steps = 50_000
  c.eval.metrics = ("chunk_retrieval_map",)
  c.eval.factors = ("label",)
  c.eval.split = "test"
  c.eval.sample_split = "test"
  c.eval.track_every = 1000
  c.eval.untrained = True  # eval.json always carries the initial parameters' row

  if variant == "small":
    # mnist_5k (4,000 training digits, offline), narrow networks: ~10 minutes on 2 cores.
    c.data.name = "mnist_5k"
    c.model.encoder_spec = "c32k3s2-c64k3s2-c128k3s2-f"
    c.model.decoder_spec = "d128k4-d64k4s2-d32k4s2-d1k2s2"
    c.model.discriminator_spec = "c32k3s2-c64k3s2-c128k3s2-f"
    c.model.classifier_spec = "c48k4s2-p-c96k3-p-c128k3-p-f256-f"
    c.train.steps = 3000
    c.train.log_every = 50
    c.train.save_every = 500
    c.train.eval_every = 1000
    c.eval.track_every = 500
  elif variant not in (None, "", "full"):
    raise ValueError(f"unknown variant {variant!r} of mixing_mnist; use 'small' or none")
  return c
