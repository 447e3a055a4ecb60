"""Zheng & Sun 2019 on CIFAR-10 (tfds ``cifar10``, 32x32x3): Table 3's networks (App. B.3).

    python -m djax.main --config=experiments/label_relevant_cifar10.py          # the code's weights
    python -m djax.main --config=experiments/label_relevant_cifar10.py:paper    # Algorithm 1's weights
    python -m djax.main --config=experiments/label_relevant_cifar10.py:tiny     # 2 steps, tests

Table 3: z_s 100, z_u 200 (also the authors' datas.py); encoders 5x5 conv 32 s2, 5x5 64 s2,
3x3 128 s2, 3x3 256 s2 (batchnorm, relu), fc 1024, fc to the code; the decoder fc 1024, then
5x5 layers 256 s2, 256 s1, 128 s2, 64 s2, 32 s2 and a 5x5 stride-1 conv to RGB with tanh; the
discriminator 5x5 conv 32 s1, 128 s2, 256 s2, 256 s2, fc 512 (leaky relu), fc 1, spectral
norm and the label by projection (B.3). The adversary on z_u: fc 256, fc 10 (B.3). Adam 5e-4,
β (0, 0.9) for every group; 3 GM steps per iteration; the authors' batch 96.

djax's reading of the table, where its grammar or the table is terse:
* the decoder's "conv, stride 2" rows are transposed convolutions (the only way from fc 1024,
  read as a 2x2x256 map, to 32x32 through the table's four stride-2 layers);
* djax's dense hidden layers have no normalisation (SpecNet's rule), so the table's
  "fc, 1024, batchnorm, relu" runs without the batchnorm;
* the authors' datas.py also flips CIFAR images left-right at random; djax's pipeline has no
  augmentation, so this config trains without it.
Evaluation: classifier_score (the Inception-Score formula with a djax-trained CIFAR-10
classifier: not Table 1's Inception Score), ms_ssim_diversity (Table 2), linear probes.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label_relevant_mnist  # noqa: E402  (the shared settings of the image configs)

N_GM = label_relevant_mnist.N_GM
BATCH = 96  # the authors' batch, per GM step and per main update
TRAIN_SIZE = 50_000


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, "", "code", "paper", "tiny"):
    raise ValueError(f"unknown variant {variant!r} of label_relevant_cifar10; use 'paper', "
                     f"'tiny' or none")
  c = label_relevant_mnist.get_config("paper" if variant == "paper" else None)
  c.data.name = "cifar10"
  c.data.image_size = 32

  c.model.num_classes = 10
  c.model.zs_dim, c.model.zu_dim = 100, 200
  c.model.negative_slope = 0.0  # Table 3: relu in the encoders and decoder
  enc = "c32k5s2-c64k5s2-c128k3s2-c256k3s2-f1024-f"
  c.model.encoder_s_spec = c.model.encoder_u_spec = enc
  c.model.decoder_spec = "f1024-r(2,2,256)-d256k5s2-c256k5-d128k5s2-d64k5s2-d32k5s2-c3k5"
  c.model.discriminator_spec = "c32k5-c128k5s2-c256k5s2-c256k5s2-f512"
  c.model.adversary_spec = "f256-f"
  label_relevant_mnist.set_loss_weights(c, variant, 32 * 32 * 3, c.model.zu_dim)

  c.optim.precision_decay_steps = 2 * TRAIN_SIZE // BATCH  # B.4: after 2 epochs
  c.train.batch_size = (N_GM + 1) * BATCH
  c.train.steps = 100_000  # the authors' code runs 320k iterations
  c.train.save_every = 5000
  c.train.eval_every = 5000
  c.eval.num_generated = 5000  # §4.2: 500 per class

  if variant == "tiny":  # the same layers, few channels: a 2-step run for tests
    c.model.zs_dim, c.model.zu_dim = 4, 6
    c.model.encoder_s_spec = c.model.encoder_u_spec = "c4k5s2-c4k5s2-c4k3s2-c4k3s2-f16-f"
    c.model.decoder_spec = "f16-r(2,2,4)-d4k5s2-c4k5-d4k5s2-d4k5s2-d4k5s2-c3k5"
    c.model.discriminator_spec = "c4k5-c4k5s2-c4k5s2-c4k5s2-f8"
    c.model.adversary_spec = "f8-f"
    label_relevant_mnist.set_loss_weights(c, None, 32 * 32 * 3, c.model.zu_dim)
    c.train.batch_size = (N_GM + 1) * 2
    c.train.steps = 2
    c.train.log_every = 1
    c.train.save_every = 2
    c.train.eval_every = 0
    c.eval.metrics = ("linear_probe",)
    c.eval.num_generated = 20
    c.eval.num_grid_images = 2
    c.progress_bar = False
    c.tensorboard = False
  return c
