"""Lezama 2019 Appendix A.5: unsupervised progressive learning on SVHN with Jacobian
supervision (the §3 procedure of ``jacobian_mnist.py`` with a conv autoencoder).

    python -m djax.main --config=experiments/jacobian_svhn.py          # the paper's setting
    python -m djax.main --config=experiments/jacobian_svhn.py:small    # narrow nets, 4 students
    python -m djax.main --config=experiments/jacobian_svhn.py:nojac    # without Jacobian terms

Needs tfds ``svhn_cropped`` prepared (``python -m djax.data.tfds_datasets prepare
svhn_cropped --data_dir=DIR`` on a connected machine, then ``--config.data.data_dir=DIR``).

Networks (``djax/methods/jacobian_nets.py``, ``model.arch='svhn_conv'``): encoder
C(64) → C(128) → C(256) → C(k+d) → BatchNorm, C(n) = 3×3 conv, ReLU, average pooling
(C(k+d): global average pooling, no ReLU); decoder D(256) → D(128) → D(64) → D(3) with 4×4
transposed convolutions (D(256) projects 1×1 → 4×4, the others ×2), ReLU, tanh output.
The code starts at k=2, d=0 and grows one unit per stage to d=16; 25 epochs per stage;
λ_y = 0.025, λ_diff = 0.01; Adam 3e-4, batch 128, weight decay 1e-6 (A.5). The paper reports
reconstruction MSE only: teacher (k=2, d=0) 1.94e-2, final student (d=16) 4.06e-3;
WORKDIR/table.md gives djax's per stage (test split, [0, 1] scale).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import defaults  # noqa: E402  (experiments/defaults.py: what every experiment shares)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = defaults.get_config()
  c.method = "jacobian_supervision"
  c.num_devices = 1
  c.tensorboard = False

  c.data.name = "svhn_cropped"
  c.data.image_size = 32
  c.data.channels = 3
  # As for MNIST: images in [0, 1] into a decoder ending in tanh; MSEs on that scale.
  c.data.value_range = (0.0, 1.0)
  c.data.pairing = "random_other"  # x_j of eq. 9

  c.model = ml_collections.ConfigDict()
  c.model.arch = "svhn_conv"
  c.model.encoder_channels = (64, 128, 256)  # C(64) → C(128) → C(256) → C(k+d)
  c.model.decoder_channels = (256, 128, 64)  # D(256) → D(128) → D(64) → D(3)
  # Set per stage by JacobianSupervision.stages (stage 0 = teacher, code 2).
  c.model.stage = 0
  c.model.code_size = 2
  c.model.new_units = 1

  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_y = 0.025
  c.loss.lambda_diff = 0.01
  # A.5 gives no λ_xcov for SVHN; §3 uses the cross-covariance term with 1e-3 (MNIST).
  c.loss.lambda_xcov = 1e-3
  c.loss.estimator = "finite_difference"  # paper eq. 9; 'jvp' exact; 'full' all k directions
  c.loss.xcov_form = "squared"

  c.optim = ml_collections.ConfigDict()
  c.optim.ae = ml_collections.ConfigDict(dict(learning_rate=3e-4, b1=0.9, b2=0.999,
                                              weight_decay=1e-6, decay_every=0, clip_norm=0.0))

  c.stages = ml_collections.ConfigDict()
  c.stages.first_code_size = 2  # k=2, d=0
  c.stages.num_students = 16  # grown to d=16
  c.stages.teacher_epochs = 25
  c.stages.epochs_per_stage = 25
  # The paper reports only MSE for SVHN (computed for every stage); no swap metric.
  c.stages.eval_stages = ()
  c.stages.swap_dims = "0:2"
  c.stages.metrics = ()

  c.train.batch_size = 128
  c.train.steps = 0  # set per stage from the epochs above
  c.train.log_every = 100
  c.train.save_every = 2000
  c.train.keep_checkpoints = 2

  c.eval.metrics = ()
  c.eval.factors = ("label",)
  c.eval.swap_dims = "0:2"
  c.eval.sample_split = "test"
  c.eval.num_grid_images = 8
  c.eval.classifier_dir = ""
  c.eval.classifier_steps = 1500

  for v in (variant or "").split(","):
    if v in ("", "full"):
      continue
    if v == "small":
      # Quarter-width nets, 4 students, 3 epochs per stage: a CPU-sized look at the method.
      c.model.encoder_channels = (16, 32, 64)
      c.model.decoder_channels = (64, 32, 16)
      c.stages.num_students = 4
      c.stages.teacher_epochs = 3
      c.stages.epochs_per_stage = 3
    elif v == "tiny":
      # Tests: a few channels, one student, one epoch of whatever the data has.
      c.model.encoder_channels = (4, 4, 8)
      c.model.decoder_channels = (8, 4, 4)
      c.stages.num_students = 1
      c.stages.teacher_epochs = 1
      c.stages.epochs_per_stage = 1
      c.train.batch_size = 8
      c.train.log_every = 1
      c.train.save_every = 1000
      c.eval.num_grid_images = 2
      c.progress_bar = False
    elif v == "nojac":
      c.loss.lambda_y = 0.0
      c.loss.lambda_diff = 0.0
    elif v in ("jvp", "finite_difference"):
      c.loss.estimator = v
    elif v == "fulljac":
      c.loss.estimator = "full"
    else:
      raise ValueError(f"unknown variant {v!r} of jacobian_svhn; use small, tiny, nojac, jvp, "
                       f"finite_difference, fulljac (comma-separated)")
  return c
