"""Zheng & Sun 2019 on FaceScrub (djax builder ``facescrub``, 64x64, 530 identities; App. B.2).

    python -m djax.main --config=experiments/label_relevant_facescrub.py \\
        --config.data.manual_dir=DIR           # DIR: one folder of face crops per person
    python -m djax.main --config=experiments/label_relevant_facescrub.py:paper ...   # Algorithm 1's weights
    python -m djax.main --config=experiments/label_relevant_facescrub.py:tiny ...    # 2 steps, tests

The data: ``djax/data/facescrub.py`` (the directory layout, the 90 / 10 split per person).

B.2: both encoders are VGG (VGG-16 here, the authors' nets.py) with batchnorm after every
conv, the last three fc layers replaced by fc 1024 and fc 512; the decoder is the inverse.
The paper gives no code sizes for FaceScrub; the authors' code uses 512 for z_u and, having no
separate z_s size for FaceScrub, 512 for z_s too: the fc 512 is the code. The adversary on z_u:
fc 256, fc 530 (B.2). The discriminator is Table 4: 3x3 convs 64 s2, 128 s2, 256, 256 s2, 512,
512 s2, 512 s2 (leaky relu), global average pooling, fc 1024, fc 1; spectral norm, the label by
projection. Adam 5e-4, β (0, 0.9); 3 GM steps per iteration; §4.2: λ_lkd 0.1, λ_kl 10 /
N_pixel, λ_rec 1 / N_zu (':paper'; the default is the authors' solvers, as for MNIST).

djax's reading where its grammar or the paper is terse:
* VGG's 2x2 max pools are djax's 'p' (3x3, stride 2, SAME): the same output sizes;
* the decoder inverts the encoder with a stride-2 transposed 3x3 conv in place of each pool;
* dense hidden layers have no batchnorm (SpecNet's rule);
* relu in the encoders and decoder (VGG's), leaky relu 0.2 in the discriminator (Table 4);
* the authors' datas.py flips faces left-right at random; djax trains without augmentation.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import label_relevant_mnist  # noqa: E402  (the shared settings of the image configs)

N_GM = label_relevant_mnist.N_GM
BATCH = 96  # the authors' batch, per GM step and per main update
TRAIN_SIZE = 83_000  # ~90 % of FaceScrub's ~92k images (the precision decay's 2 epochs)

# VGG-16's convolutions, five blocks, each closed by a pool.
VGG16 = ("c64k3-c64k3-p-c128k3-c128k3-p-c256k3-c256k3-c256k3-p-"
         "c512k3-c512k3-c512k3-p-c512k3-c512k3-c512k3-p")
TABLE4 = "c64k3s2-c128k3s2-c256k3-c256k3s2-c512k3-c512k3s2-c512k3s2-f1024"


def vgg_decoder(size: int) -> str:
  """The encoder reversed: fc 1024, fc to the last map (size / 32, 512 channels), then per
  block its convs with the pool replaced by a stride-2 transposed conv, ending in RGB."""
  s = size // 32
  return (f"f1024-f{s * s * 512}-r({s},{s},512)-"
          "d512k3s2-c512k3-c512k3-d512k3s2-c512k3-c256k3-d256k3s2-c256k3-c128k3-"
          "d128k3s2-c64k3-d64k3s2-c64k3-c3k3")


def vgg_config(c, variant, size: int, num_classes: int, train_size: int):
  """FaceScrub's networks (B.2) at ``size`` (a multiple of 32), shared with the CUB config."""
  c.data.image_size = size
  c.model.num_classes = num_classes
  c.model.zs_dim = c.model.zu_dim = 512
  c.model.negative_slope = 0.0  # VGG's relu
  c.model.encoder_s_spec = c.model.encoder_u_spec = f"{VGG16}-f1024-f"
  c.model.decoder_spec = vgg_decoder(size)
  c.model.discriminator_spec = TABLE4
  c.model.discriminator_global_pool = True  # Table 4
  c.model.adversary_spec = "f256-f"
  label_relevant_mnist.set_loss_weights(c, variant, size * size * 3, c.model.zu_dim)
  c.optim.precision_decay_steps = 2 * train_size // BATCH  # B.4: after 2 epochs
  c.train.batch_size = (N_GM + 1) * BATCH
  c.train.steps = 320_000  # the authors' code
  c.train.save_every = 5000
  c.train.eval_every = 5000
  c.eval.num_generated = 100 * num_classes  # §4.2: 100 per class


def tiny(c, size: int):
  """The same kind of layers with few channels: a 2-step run for tests."""
  c.model.zs_dim, c.model.zu_dim = 4, 6
  c.model.encoder_s_spec = c.model.encoder_u_spec = "c4k3-p-c4k3-p-c4k3-p-c4k3-p-c4k3-p-f16-f"
  s = size // 32
  c.model.decoder_spec = (f"f16-f{s * s * 4}-r({s},{s},4)-d4k3s2-d4k3s2-d4k3s2-d4k3s2-d4k3s2-"
                          "c3k3")
  c.model.discriminator_spec = "c4k3s2-c4k3s2-c4k3-c4k3s2-c4k3-c4k3s2-c4k3s2-f8"
  c.model.adversary_spec = "f8-f"
  label_relevant_mnist.set_loss_weights(c, None, size * size * 3, c.model.zu_dim)
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


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, "", "code", "paper", "tiny"):
    raise ValueError(f"unknown variant {variant!r} of label_relevant_facescrub; use 'paper', "
                     f"'tiny' or none")
  c = label_relevant_mnist.get_config("paper" if variant == "paper" else None)
  c.data.name = "facescrub"
  vgg_config(c, variant, 64, 530, TRAIN_SIZE)  # §4.2: 64x64; 530 identities
  if variant == "tiny":
    tiny(c, 64)
  return c
