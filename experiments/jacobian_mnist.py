"""Lezama 2019 §3 / Table 1: unsupervised progressive learning on MNIST with Jacobian
supervision.

    python -m djax.main --config=experiments/jacobian_mnist.py          # the paper's setting
    python -m djax.main --config=experiments/jacobian_mnist.py:small    # mnist_5k, 2 CPU cores
    python -m djax.main --config=experiments/jacobian_mnist.py:nojac    # Table 1 "without"
    python -m djax.main --config=experiments/jacobian_mnist.py:small,elastic  # 60k digits, offline

One run trains every stage (``djax/stages.py``): WORKDIR/stage_00 is the teacher
(k=2, d=0, reconstruction only), stage_s a student with code size 2 + s trained against
stage_{s-1}; a rerun skips finished stages and resumes the current one. WORKDIR/table.json
and table.md hold Table 1 (swap success of units 0:2, test MSE) per evaluated stage.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import defaults  # noqa: E402  (experiments/defaults.py: what every experiment shares)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = defaults.get_config()
  c.method = "jacobian_supervision"
  c.num_devices = 1  # a 784-256-128-64 MLP: one device is plenty
  c.tensorboard = False

  c.data.name = "mnist"
  c.data.image_size = 28
  c.data.channels = 1
  # The authors feed ToTensor() images in [0, 1] to a decoder ending in tanh; MSEs in
  # Table 1 are on that scale.
  c.data.value_range = (0.0, 1.0)
  c.data.pairing = "random_other"  # x_j of eq. 9: a random other training image

  c.model = ml_collections.ConfigDict()
  c.model.encoder_hidden = (256, 128, 64)
  c.model.decoder_hidden = (64, 128, 256)
  # Set per stage by JacobianSupervision.stages (stage 0 = teacher, code 2, encoder BatchNorm).
  c.model.stage = 0
  c.model.code_size = 2
  c.model.new_units = 1
  # How a student starts from its teacher (djax.methods.jacobian_supervision.grow_params):
  # 'authors' = the authors' code (BatchNorm dropped unfolded, random new unit),
  # 'function_preserving' = exactly the teacher's function at the start.
  c.model.growth = "function_preserving"

  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_y = 0.25
  c.loss.lambda_diff = 0.1
  c.loss.lambda_xcov = 1e-3
  c.loss.estimator = "finite_difference"  # paper eq. 9; 'jvp' exact; 'full' all k directions
  c.loss.xcov_form = "squared"  # eq. 10; 'norm' = the authors' code (its square root)

  c.optim = ml_collections.ConfigDict()
  # Adam 3e-4, weight decay 1e-6 (A.1). optax adamw decouples the decay; torch's Adam adds
  # it to the gradient: at 1e-6 both are negligible.
  c.optim.ae = ml_collections.ConfigDict(dict(learning_rate=3e-4, b1=0.9, b2=0.999,
                                              weight_decay=1e-6, decay_every=0, clip_norm=0.0))

  c.stages = ml_collections.ConfigDict()
  c.stages.first_code_size = 2  # the teacher: k=2, d=0
  c.stages.num_students = 14  # grown to d=14 (Table 1)
  c.stages.teacher_epochs = 100
  c.stages.epochs_per_stage = 100
  c.stages.eval_stages = (0, -1)  # Table 1 rows: the teacher and the last student
  c.stages.swap_dims = "0:2"  # the first teacher's two units

  c.train.batch_size = 128
  c.train.steps = 0  # set per stage from the epochs above
  c.train.log_every = 100
  c.train.save_every = 2000
  c.train.keep_checkpoints = 2

  c.eval.metrics = ("swap_success",)  # per stage: JacobianSupervision.stages
  c.eval.factors = ("label",)
  c.eval.swap_dims = "0:2"
  c.eval.sample_split = "test"
  c.eval.num_grid_images = 8
  c.eval.classifier_dir = ""
  c.eval.classifier_steps = 1500

  variants = (variant or "").split(",")
  for v in variants:
    if v in ("", "full"):
      continue
    if v == "small":
      # mnist_5k (4,000 training digits, 31 steps/epoch) on 2 CPU cores in ~20 minutes.
      c.data.name = "mnist_5k"
      c.stages.num_students = 14
      c.stages.teacher_epochs = 60
      c.stages.epochs_per_stage = 15
      c.train.log_every = 31
      c.train.save_every = 310
    elif v == "elastic":
      # After "small": mnist_5k_elastic, mnist_5k's training digits and 14 elastic
      # distortions of each (60,000, as many as the paper's MNIST), the same test digits,
      # and as many steps per stage as :small (1 epoch = 468 steps).
      c.data.name = "mnist_5k_elastic"
      c.stages.teacher_epochs = 4
      c.stages.epochs_per_stage = 1
      c.train.log_every = 117
      c.train.save_every = 468
    elif v == "nojac":
      # Table 1 "student without Jacobian supervision": the same schedule, λ_y = λ_diff = 0,
      # only the cross-covariance loss (λ_xcov = 1e-3 was the best in Table 4).
      c.loss.lambda_y = 0.0
      c.loss.lambda_diff = 0.0
    elif v in ("jvp", "finite_difference"):
      c.loss.estimator = v
    elif v == "fulljac":
      c.loss.estimator = "full"
    else:
      raise ValueError(f"unknown variant {v!r} of jacobian_mnist; use small, elastic, nojac, "
                       f"jvp, finite_difference, fulljac (comma-separated)")
  return c
