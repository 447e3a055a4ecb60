"""Lezama 2019 §4 / Table 2: facial attribute manipulation on CelebA with Jacobian
supervision: the attribute teacher (d = 2048), then students with z doubled twice
(d = 4096, 8192), in one run.

    python -m djax.main --config=experiments/jacobian_celeba.py          # paper: 256×256
    python -m djax.main --config=experiments/jacobian_celeba.py:128      # djax's celeb_a default size
    python -m djax.main --config=experiments/jacobian_celeba.py:small    # 64×64, narrow, short
    python -m djax.main --config=experiments/jacobian_celeba.py:cycle_student   # Table 2 row 3

Needs tfds ``celeb_a`` prepared (``python -m djax.data.tfds_datasets prepare celeb_a
--data_dir=DIR`` on a connected machine, then ``--config.data.data_dir=DIR``).

WORKDIR/stage_00 is the teacher, stage_01 / stage_02 the students, each trained against the
previous stage (frozen; ``djax/methods/jacobian_attributes.py``, ``main``); a rerun skips
finished stages and resumes the current one. WORKDIR/table.md has Table 2's columns per
evaluated stage: successful attribute flips (y_i ← −40 sign(y_i), judged by djax's CelebA
attribute classifier, where the paper used Fader Networks' classifier) and the test
reconstruction MSE on [0, 1].

Paper values (§4.2, A.2, A.2.1): encoder C(16) → C(32) → C(64) → C(128) → C(256) → C(512) →
C(512+k), decoder D(512+k) → D(512+k) → D(256+k) → … → D(16+k), 4×4 kernels, stride 2,
padding 1, LeakyReLU 0.2; k = 40 attributes; z = 512 × 2 × 2 (d = 2048), students 1024 and
2048 channels (d = 4096, 8192); λ1..λ5 = 1e2, 1e-1, 1e-1, 1e-4, 1e-5; the teacher trains
100 epochs without the cycle losses, then 100 with them; students λ_y = 1, λ_diff = 50,
λ2 = λ4 = λ5 = 0, d doubled at epochs 200 and 400; Adam 2e-3, β = (0.5, 0.999), batch 128.
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import defaults  # noqa: E402  (experiments/defaults.py: what every experiment shares)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = defaults.get_config()
  c.method = "jacobian_attributes"
  c.tensorboard = False

  c.data.name = "celeb_a"
  c.data.image_size = 256  # rows 20..198 (178×178) resized, as Lample et al.
  c.data.channels = 3
  c.data.value_range = (-1.0, 1.0)  # tanh decoder (Fader Networks' normalisation)
  # x_2 of the cycle losses and x_j of eq. 9: "randomly sampled", a different image.
  c.data.pairing = "random_other"

  c.model = ml_collections.ConfigDict()
  c.model.attributes = ()  # () = all 40 of celeb_a in tfds order: k = 40, y_i = attribute i
  # C(16) … C(512): the hidden encoder blocks; C(z + k) follows. The decoder mirrors them:
  # hidden block outputs 512 … 16, then the 3 image channels.
  c.model.encoder_channels = (16, 32, 64, 128, 256, 512)
  c.model.decoder_channels = ()  # () = the encoder's, reversed
  c.model.z_channels_per_stage = (512, 1024, 2048)  # d = 4 × this at 256×256 (2×2 maps)
  # The paper's D blocks have BatchNorm; djax's decoder has none so that it is a per-sample
  # function (the jvp estimator differentiates it per sample). 'layer' is a per-sample option.
  c.model.decoder_norm = "none"
  c.model.stage = 0  # set per stage by the runner

  c.loss = ml_collections.ConfigDict()
  # Eq. 14 (the teacher): λ1 L_rec + λ2 L_pred + λ3 L_xcov + λ4 L_cyc1 + λ5 L_cyc2.
  c.loss.lambda_rec = 1e2
  c.loss.lambda_pred = 1e-1
  c.loss.lambda_xcov = 1e-1
  c.loss.lambda_cyc1 = 1e-4
  c.loss.lambda_cyc2 = 1e-5
  c.loss.cycle_start_step = 0  # set by the runner from stages.cycle_start_epoch
  c.loss.cyc1_target = "prediction"  # eq. 12; 'sign' = the authors' code
  c.loss.xcov_form = "squared"  # eq. 10
  # Eq. 9 (students); 0 for the teacher.
  c.loss.lambda_y = 0.0
  c.loss.lambda_diff = 0.0
  c.loss.estimator = "finite_difference"  # paper eq. 9; 'jvp' exact; 'full' all 40 directions

  c.optim = ml_collections.ConfigDict()
  # Adam 2e-3, β1 = 0.5 (A.2), one per network as the authors' code; gradient clipping at
  # norm 10 is the authors' code's (the paper is silent).
  for g in ("enc", "dec"):
    c.optim[g] = ml_collections.ConfigDict(dict(learning_rate=2e-3, b1=0.5, b2=0.999,
                                                weight_decay=0.0, decay_every=0, clip_norm=10.0))

  c.stages = ml_collections.ConfigDict()
  c.stages.num_students = 2  # d = 2048 → 4096 → 8192
  c.stages.teacher_epochs = 200
  c.stages.cycle_start_epoch = 100
  c.stages.epochs_per_stage = 200
  # §4.2.2: "λ_y = 1, λ_diff = 50, and no prediction nor cycle-consistency loss
  # (λ2 = λ4 = λ5 = 0)". λ1 and λ3 are not named there and keep the teacher's values (the
  # authors' student command keeps its reconstruction and xcov weights too).
  c.stages.student_loss = ml_collections.ConfigDict(dict(
      lambda_pred=0.0, lambda_cyc1=0.0, lambda_cyc2=0.0, lambda_y=1.0, lambda_diff=50.0))
  c.stages.eval_stages = (0, -1)  # Table 2: the teacher and the last student
  c.stages.metrics = ("attribute_flip", "reconstruction_mse")

  c.train.batch_size = 128
  c.train.steps = 0  # set per stage from the epochs above
  c.train.log_every = 100
  c.train.save_every = 2000
  c.train.keep_checkpoints = 2

  c.eval.metrics = ("attribute_flip", "reconstruction_mse")  # for djax.evaluate
  c.eval.factors = ()  # attribute_flip takes the 40 attributes from the method
  c.eval.flip_alpha = 40.0
  c.eval.sample_split = "test"
  c.eval.num_grid_images = 8
  c.eval.grid_attributes = ("Eyeglasses", "Smiling", "Male", "Young", "Blond_Hair",
                            "Mustache", "Pale_Skin", "Bangs")
  c.eval.classifier_dir = ""
  c.eval.classifier_steps = 1500
  c.eval.classifier_batch_size = 128

  for v in (variant or "").split(","):
    if v in ("", "full", "256"):
      continue
    if v == "128":
      # djax's celeb_a default size; drop C(16) so z stays a 2×2×512 map (d = 2048).
      c.data.image_size = 128
      c.model.encoder_channels = (32, 64, 128, 256, 512)
    elif v == "small":
      # 64×64, a quarter of the widths, z 2×2×(64, 128, 256), a few epochs: CPU-sized.
      c.data.image_size = 64
      c.model.encoder_channels = (16, 32, 64, 128)
      c.model.z_channels_per_stage = (64, 128, 256)
      c.stages.num_students = 1
      c.stages.teacher_epochs = 2
      c.stages.cycle_start_epoch = 1
      c.stages.epochs_per_stage = 2
      c.train.batch_size = 64
      c.eval.classifier_steps = 800
    elif v == "tiny":
      # Tests on tfds mock data: 64×64 and one block each way (z a 32×32×2 map, d = 2048):
      # XLA:CPU compiles it in seconds.
      c.data.image_size = 64
      c.model.encoder_channels = ()
      c.model.z_channels_per_stage = (2, 4)
      c.stages.num_students = 1
      c.stages.teacher_epochs = 1
      c.stages.cycle_start_epoch = 0
      c.stages.epochs_per_stage = 1
      c.num_devices = 1
      c.train.batch_size = 8
      c.train.log_every = 1
      c.train.save_every = 1000
      c.eval.num_grid_images = 2
      c.eval.grid_attributes = ("Eyeglasses", "Smiling")
      c.eval.classifier_steps = 5
      c.eval.classifier_batch_size = 8
      c.progress_bar = False
    elif v == "cycle_student":
      # Table 2 "Student, cycle-consistency": students trained with the cycle losses
      # instead of the Jacobian terms (Table 5's row λ4 = 1e-4, λ5 = 1e-5, λ_diff = λ_y = 0).
      c.stages.student_loss = ml_collections.ConfigDict(dict(
          lambda_pred=0.0, lambda_cyc1=1e-4, lambda_cyc2=1e-5, lambda_y=0.0, lambda_diff=0.0))
    elif v in ("jvp", "finite_difference"):
      c.loss.estimator = v
    elif v == "fulljac":
      c.loss.estimator = "full"
    else:
      raise ValueError(f"unknown variant {v!r} of jacobian_celeba; use 128, small, tiny, "
                       f"cycle_student, jvp, finite_difference, fulljac (comma-separated)")
  return c
