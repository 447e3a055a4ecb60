"""Lezama 2019 §4: facial attribute manipulation with Jacobian supervision
(``shared/papers/lezama2019_jacobian_supervision.md``, §4.1–4.3, Appendix A.2).

**Teacher** (stage 0, z of 512 channels × 2 × 2 = 2048 at 256×256): the encoder predicts
the k = 40 CelebA attributes in y (eq. 11), the autoencoder reconstructs (eq. 8) and
decorrelates y from z (eq. 10); after ``loss.cycle_start_step`` steps (100 epochs in the
paper) a second, decoder-only update per iteration adds the cycle-consistency losses with
the encoder frozen (eq. 12, 13). Eq. 14 weighs the five terms with
λ1..λ5 = 1e2, 1e-1, 1e-1, 1e-4, 1e-5 (§4.2):

    update 1 (encoder + decoder):  L1 = λ1 L_rec + λ2 L_pred + λ3 L_xcov
    update 2 (decoder only):       L2 = λ4 L_cyc1 + λ5 L_cyc2

**Student** (stage s ≥ 1; z doubled to 1024 then 2048 channels, d = 4096, 8192; §4.2.2):
initialised from the previous stage (:func:`djax.methods.jacobian_nets.grow_face`), trained
with reconstruction and the Jacobian supervision of eq. 9 against the frozen previous stage,
λ_y = 1, λ_diff = 50, λ2 = λ4 = λ5 = 0 (λ1 and λ3 stay: see ``experiments/jacobian_celeba.py``).
The difference term of eq. 9 holds each model's own z fixed:
Δ_T = D_T(y_j^T, z^T) − D_T(y^T, z^T), Δ_S = D_S(y_j^S, z^S) − D_S(y^S, z^S), by any of the
three estimators of :mod:`djax.methods.jacobian_supervision` (``loss.estimator``).

Losses (pure functions; tests/test_jacobian_conv.py checks each against a direct
computation). Squared norms are means over elements, the convention of
:mod:`djax.methods.jacobian_supervision` (the authors' ``MSELoss``) at which λ1 = 100 is
set; the hinge losses are as printed (mean over the k attributes, then over the batch).

* eq. 11 :func:`prediction_loss`       1/k Σ_i max(1 − y_i ȳ_i, 0), ȳ ∈ {−1, 1}^k
* eq. 12 :func:`cycle_attribute_loss`  1/k Σ_i max(1 − y_2i y'_2i, 0), y'_2 = E(D(y_2, z_1))
* eq. 13 :func:`cycle_code_loss`       ||z_1 − z'_1||²
* eq. 14 :func:`teacher_loss`          λ1 L_rec + λ2 L_pred + λ3 L_xcov + λ4 L_cyc1 + λ5 L_cyc2

The authors' code differs in scale and in one target: the attribute hinge is summed over
attributes, L_cyc1 uses sign(y_2) as target (``loss.cyc1_target='sign'``), L_cyc2 and L_xcov
are norms divided by the batch size; djax follows the paper.

Pairs (x_1, x_2): ``batch['image2']`` (pairing 'random_other', "randomly sampled"), or the
batch rolled by one when the pipeline gives none (the authors' in-batch permutation).

Evaluation (Table 2): ``attribute_flip`` (unit i = attribute i, :attr:`attribute_units`,
``y_i ← −40 sign(y_i)``) and ``reconstruction_mse`` in ``config.eval.metrics``; one run of
all stages with a Table-2 style summary: :meth:`AttributeJacobianSupervision.stages`, run by
``djax.stages``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from djax.methods import base, jacobian_nets
from djax.methods import jacobian_supervision as js

# tfds celeb_a's 40 attributes in their stored order (the order of list_attr_celeba.txt).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")


# ----------------------------------------------------------------------------- losses

def attribute_targets(labels: dict[str, jax.Array], names: Sequence[str]) -> jax.Array:
  """ȳ ∈ {−1, 1}^k from the pipeline's 0/1 labels, in the order of ``names``: [B, k]."""
  return jnp.stack([2.0 * jnp.asarray(labels[n], jnp.float32) - 1.0 for n in names], axis=-1)


def prediction_loss(y: jax.Array, y_bar: jax.Array) -> jax.Array:
  """Eq. (11): L_pred = 1/k Σ_i max(1 − y_i ȳ_i, 0), hinge with margin 1; batch mean."""
  return jnp.mean(jnp.maximum(1.0 - y * y_bar, 0.0))


def cycle_attribute_loss(y2: jax.Array, y2_prime: jax.Array, target: str = "prediction"
                         ) -> jax.Array:
  """Eq. (12): L_cyc1 = 1/k Σ_i max(1 − y_2i y'_2i, 0), batch mean. y_2 (the encoder's
  prediction for x_2, the decoder's input) is a constant: the encoder is frozen.
  ``target='sign'``: sign(y_2) instead, as the authors' code."""
  t = jax.lax.stop_gradient(y2)
  if target == "sign":
    t = jnp.sign(t)
  elif target != "prediction":
    raise ValueError(f"unknown cyc1 target {target!r}; use 'prediction' (eq. 12) or 'sign'")
  return jnp.mean(jnp.maximum(1.0 - t * y2_prime, 0.0))


def cycle_code_loss(z1: jax.Array, z1_prime: jax.Array) -> jax.Array:
  """Eq. (13): L_cyc2 = ||z_1 − z'_1||², as a mean over units and batch; z_1 is a constant."""
  return jnp.mean(jnp.square(jax.lax.stop_gradient(z1) - z1_prime))


def teacher_loss(terms: dict[str, jax.Array], lambdas: Sequence[float]) -> jax.Array:
  """Eq. (14): λ1 L_rec + λ2 L_pred + λ3 L_xcov + λ4 L_cyc1 + λ5 L_cyc2."""
  l1, l2, l3, l4, l5 = lambdas
  return (l1 * terms["loss_rec"] + l2 * terms["loss_pred"] + l3 * terms["loss_xcov"]
          + l4 * terms["loss_cyc1"] + l5 * terms["loss_cyc2"])


# ----------------------------------------------------------------------------- method

def z_channels_of(model_cfg, stage: int) -> int:
  per = tuple(model_cfg.z_channels_per_stage)
  if stage >= len(per):
    raise ValueError(f"model.stage={stage} but model.z_channels_per_stage={per} has "
                     f"{len(per)} entries")
  return int(per[stage])


class AttributeJacobianSupervision(base.Method):
  """CelebA attribute teacher (stage 0) or Jacobian-supervised student (stage ≥ 1), §4."""

  groups = ("enc", "dec")  # one Adam per network (the authors' code); update 2 uses 'dec'

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m, lo = config.model, config.loss
    self.loss = lo
    self.attributes = tuple(m.get("attributes", None) or CELEBA_ATTRIBUTES)
    self.k = len(self.attributes)
    self.stage = int(m.get("stage", 0))
    self.is_student = self.stage > 0
    self.z_channels = z_channels_of(m, self.stage)
    self.estimator = lo.get("estimator", "finite_difference")
    if self.estimator not in js.ESTIMATORS:
      raise ValueError(f"unknown loss.estimator {self.estimator!r}; known: {js.ESTIMATORS}")
    size = int(config.data.image_size)
    self.image_shape = (size, size, int(config.data.get("channels", 3)))
    enc_ch = tuple(m.encoder_channels)
    dec_ch = tuple(m.get("decoder_channels", None) or enc_ch[::-1])
    self.num_blocks = len(enc_ch) + 1
    if len(dec_ch) + 1 != self.num_blocks:
      raise ValueError(f"model.decoder_channels {dec_ch} must have as many blocks as "
                       f"model.encoder_channels {enc_ch}")
    jacobian_nets.face_code_shape(size, self.num_blocks, self.z_channels)  # checks the size
    norm = m.get("decoder_norm", "none")
    jacobian_nets.check_decoder_norm(norm)

    def nets(zc, axis):
      return (jacobian_nets.FaceEncoder(enc_ch, zc, self.k, axis_name=axis),
              jacobian_nets.FaceDecoder(self.image_shape, dec_ch, zc, self.k, norm=norm))

    self.encoder, self.decoder = nets(self.z_channels, axis_name)
    self.t_z_channels = z_channels_of(m, self.stage - 1) if self.is_student else 0
    self.t_encoder, self.t_decoder = nets(self.t_z_channels or self.z_channels, None)
    self.code_size = self.k + int(np.prod(jacobian_nets.face_code_shape(
        size, self.num_blocks, self.z_channels)))
    self.lambdas = tuple(float(lo[f"lambda_{n}"]) for n in
                         ("rec", "pred", "xcov", "cyc1", "cyc2"))
    self.has_cycle = bool(self.lambdas[3] or self.lambdas[4])
    self.tx = {g: base.make_optimizer(config.optim[g]) for g in self.groups}

  def attribute_units(self) -> dict[str, int]:
    """Attribute name -> code unit (y_i is unit i): what ``attribute_flip`` flips."""
    return {a: i for i, a in enumerate(self.attributes)}

  def _t_code_size(self):
    return self.k + int(np.prod(jacobian_nets.face_code_shape(
        self.image_shape[0], self.num_blocks, self.t_z_channels or self.z_channels)))

  def init(self, rng: jax.Array, batch: Mapping[str, Any], previous=None) -> base.TrainState:
    x = batch["image"]
    k_enc, k_dec, k_grow, k_state = jax.random.split(rng, 4)
    if self.is_student:
      if previous is None:
        raise ValueError(f"stage {self.stage} is a student: it starts from the previous "
                         f"stage's state; run the whole config through python -m djax.main, "
                         f"whose stage runner hands it over")
      ae = previous["params"]["ae"]
      teacher = {"encoder": ae["encoder"], "decoder": ae["decoder"]}
      t_stats = previous["batch_stats"]["encoder"]
      got = int(np.shape(ae["decoder"]["deconv0"]["kernel"])[-2]) - self.k
      if got != self.t_z_channels:
        raise ValueError(f"the previous stage has {got} z channels; stage {self.stage} "
                         f"expects {self.t_z_channels} (model.z_channels_per_stage)")
      ae, enc_stats = jacobian_nets.grow_face(teacher, t_stats, k_grow, self.t_z_channels,
                                              self.z_channels)
      as_jnp = functools.partial(jax.tree_util.tree_map, jnp.asarray)
      params = {"ae": ae, "teacher": as_jnp(teacher)}
      stats = {"encoder": enc_stats, "teacher": as_jnp(t_stats)}
    else:
      v_enc = self.encoder.clone(axis_name=None).init(k_enc, x, train=False)
      v_dec = self.decoder.init(k_dec, jnp.zeros((x.shape[0], self.code_size), x.dtype))
      params = {"ae": {"encoder": v_enc["params"], "decoder": v_dec["params"]}}
      stats = {"encoder": v_enc["batch_stats"]}
    opt = {"enc": self.tx["enc"].init(params["ae"]["encoder"]),
           "dec": self.tx["dec"].init(params["ae"]["decoder"])}
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                           opt_state=opt, rng=k_state)

  # -- networks as pure functions
  def encode_fn(self, enc_params, stats, x, train=False):
    variables = {"params": enc_params, "batch_stats": stats}
    if train:
      code, new = self.encoder.apply(variables, x, train=True, mutable=["batch_stats"])
      return code, new["batch_stats"]
    return self.encoder.apply(variables, x, train=False), stats

  def decode_fn(self, dec_params, code):
    return self.decoder.apply({"params": dec_params}, code)

  def teacher_encode(self, teacher, t_stats, x):
    return self.t_encoder.apply({"params": teacher["encoder"], "batch_stats": t_stats}, x,
                                train=False)

  def teacher_decode(self, teacher, code):
    return self.t_decoder.apply({"params": teacher["decoder"]}, code)

  def split(self, code):
    return code[:, :self.k], code[:, self.k:]

  # -- training
  def loss_1(self, ae, teacher, stats, x, xj, y_bar):
    """Update 1: λ1 L_rec + λ2 L_pred + λ3 L_xcov (+ students: λ_y L_y + λ_diff L_diff, eq. 9).
    Returns (total, (losses, new encoder stats, accuracy))."""
    lo, (l1, l2, l3, _, _) = self.loss, self.lambdas
    b = x.shape[0]
    if self.is_student:  # x and its partner in one pass: one set of BatchNorm statistics
      codes, enc_stats = self.encode_fn(ae["encoder"], stats["encoder"],
                                        jnp.concatenate([x, xj]), True)
      code, code_j = codes[:b], codes[b:]
    else:
      code, enc_stats = self.encode_fn(ae["encoder"], stats["encoder"], x, True)
    y, z = self.split(code)
    x_hat = self.decode_fn(ae["decoder"], code)
    out = {"loss_rec": js.reconstruction_loss(x_hat, x),
           "loss_pred": prediction_loss(y, y_bar),
           "loss_xcov": js.xcov_loss(y, z, lo.get("xcov_form", "squared"))}
    total = l1 * out["loss_rec"] + l2 * out["loss_pred"] + l3 * out["loss_xcov"]
    if self.is_student:
      t_codes = self.teacher_encode(teacher, stats["teacher"], jnp.concatenate([x, xj]))
      (y_t, z_t), (y_jt, _) = self.split(t_codes[:b]), self.split(t_codes[b:])
      y_j = code_j[:, :self.k]
      dec_s = functools.partial(self.decode_fn, ae["decoder"])
      dec_t = functools.partial(self.teacher_decode, teacher)
      estimator = self.estimator if lo.lambda_diff else "none"
      out["loss_y"] = js.y_loss(y, y_t)
      out["loss_diff"] = js.jacobian_difference_loss(estimator, dec_s, dec_t, y, z, y_j, y_t,
                                                     y_jt, z_t)
      total = total + lo.lambda_y * out["loss_y"] + lo.lambda_diff * out["loss_diff"]
    accuracy = jnp.mean((y > 0) == (y_bar > 0))
    return total, (out, enc_stats, accuracy)

  def loss_2(self, dec_params, enc_params, enc_stats, x, xj):
    """Update 2 (decoder only, the encoder frozen): λ4 L_cyc1 + λ5 L_cyc2 on
    (y_2', z_1') = E(D(y_2, z_1)). The encoder runs with batch statistics (train mode, as
    the authors' PyTorch model) but nothing of it changes, its running statistics neither."""
    _, _, _, l4, l5 = self.lambdas
    b = x.shape[0]
    codes, _ = self.encode_fn(enc_params, enc_stats, jnp.concatenate([x, xj]), True)
    codes = jax.lax.stop_gradient(codes)
    (y1, z1), (y2, _) = self.split(codes[:b]), self.split(codes[b:])
    x21 = self.decode_fn(dec_params, jnp.concatenate([y2, z1], axis=-1))
    code21, _ = self.encode_fn(enc_params, enc_stats, x21, True)
    y2p, z1p = self.split(code21)
    out = {"loss_cyc1": cycle_attribute_loss(y2, y2p, self.loss.get("cyc1_target", "prediction")),
           "loss_cyc2": cycle_code_loss(z1, z1p)}
    return l4 * out["loss_cyc1"] + l5 * out["loss_cyc2"], out

  def train_step(self, state: base.TrainState, batch: dict[str, Any], rng: jax.Array):
    del rng  # deterministic given the batch
    x = batch["image"]
    xj = batch["image2"] if "image2" in batch else jnp.roll(x, 1, axis=0)
    y_bar = attribute_targets(batch["labels"], self.attributes)
    params, stats, opt = state.params, state.batch_stats, state.opt_state
    ae = params["ae"]
    grads, (losses, enc_stats, acc) = jax.grad(self.loss_1, has_aux=True)(
        ae, params.get("teacher"), stats, x, xj, y_bar)
    grads = base.pmean(grads, self.axis_name)
    enc, opt_enc = base.apply_updates(self.tx["enc"], grads["encoder"], opt["enc"], ae["encoder"])
    dec, opt_dec = base.apply_updates(self.tx["dec"], grads["decoder"], opt["dec"], ae["decoder"])
    zero = jnp.zeros((), x.dtype)
    cyc = {"loss_cyc1": zero, "loss_cyc2": zero}
    if self.has_cycle:
      def cycle_update(args):
        dec, opt_dec = args
        g, out = jax.grad(self.loss_2, has_aux=True)(dec, enc, enc_stats, x, xj)
        g = base.pmean(g, self.axis_name)
        dec, opt_dec = base.apply_updates(self.tx["dec"], g, opt_dec, dec)
        return dec, opt_dec, out

      def skip(args):
        return args[0], args[1], cyc

      on = state.step >= int(self.loss.get("cycle_start_step", 0))
      dec, opt_dec, cyc = jax.lax.cond(on, cycle_update, skip, (dec, opt_dec))
    losses = {**losses, **cyc}
    total = teacher_loss(losses, self.lambdas)
    if self.is_student:
      total = total + self.loss.lambda_y * losses["loss_y"] + \
          self.loss.lambda_diff * losses["loss_diff"]
    metrics = {**losses, "loss": total, "attribute_accuracy": acc}
    new_stats = {**stats, "encoder": enc_stats}
    return state.replace(step=state.step + 1, params={**params, "ae": {"encoder": enc,
                                                                        "decoder": dec}},
                         batch_stats=new_stats, opt_state={"enc": opt_enc, "dec": opt_dec}
                         ), base.pmean(metrics, self.axis_name)

  # -- evaluation: pure array functions
  def encode(self, params, stats, images: jax.Array) -> jax.Array:
    """The code [y (k attributes), z] in eval mode: [B, k + d]."""
    return self.encode_fn(params["ae"]["encoder"], stats["encoder"], images, False)[0]

  def decode(self, params, stats, codes: jax.Array) -> jax.Array:
    del stats
    return self.decode_fn(params["ae"]["decoder"], codes)

  def reconstruct(self, params, stats, images):
    return self.decode(params, stats, self.encode(params, stats, images))

  def flip_grid(self, params, stats, images: jax.Array, units: Sequence[int],
                alpha: float = 40.0) -> jax.Array:
    """Per image: input, reconstruction, then each unit i flipped to −α sign(y_i) (Table 2's
    manipulation): [R, 2 + len(units), H, W, C]."""
    codes = self.encode(params, stats, images)
    flipped = [codes.at[:, u].set(-alpha * jnp.sign(codes[:, u])) for u in units]
    dec = self.decode(params, stats, jnp.concatenate([codes] + flipped))
    dec = dec.reshape((1 + len(units), images.shape[0]) + dec.shape[1:])
    return jnp.concatenate([images[:, None], jnp.moveaxis(dec, 0, 1)], axis=1)

  def eval_images(self, params, stats, images: jax.Array, n: int = 8) -> dict[str, jax.Array]:
    n = min(n, images.shape[0])
    names = tuple(self.config.eval.get("grid_attributes", None) or self.attributes[:8])
    units = [self.attribute_units()[a] for a in names]
    alpha = float(self.config.eval.get("flip_alpha", 40.0))
    return {"reconstruction": jnp.stack([images[:n], self.reconstruct(params, stats, images[:n])]),
            "attribute_flips": self.flip_grid(params, stats, images[:n], units, alpha)}

  # -- stages (§4.2.2: the teacher, then students of doubled z; djax.stages runs them)
  @classmethod
  def stages(cls, config, steps_per_epoch: int) -> list[base.Stage]:
    """Stage 0 the teacher (``config.loss``, cycle losses from ``stages.cycle_start_epoch``),
    stage s ≥ 1 a student (``config.loss`` updated with ``stages.student_loss``) started from
    stage s − 1; ``stages.metrics`` on ``stages.eval_stages``."""
    st = config.stages
    out = []
    for stage, c, evaluated in js.teacher_student_configs(config):
      if stage == 0:
        c.train.steps = int(st.teacher_epochs) * steps_per_epoch
        c.loss.cycle_start_step = int(st.cycle_start_epoch) * steps_per_epoch
      else:
        c.loss.update(dict(st.student_loss))
        c.train.steps = int(st.epochs_per_stage) * steps_per_epoch
      c.eval.metrics = tuple(st.metrics) if evaluated else ()
      d = cls(c, axis_name=None)
      out.append(base.Stage(name=f"stage_{stage:02d}", config=c, from_previous=stage > 0,
                            description=f"d = {d.code_size - d.k}"))
    return out


  @classmethod
  def stage_row(cls, stage: base.Stage, summary) -> dict[str, Any]:
    m = cls(stage.config, axis_name=None)
    row: dict[str, Any] = {"d": m.code_size - m.k}
    res = (summary.get("eval") or {}).get("results", {})
    if "attribute_flip" in res:
      row["attribute_flip"] = float(res["attribute_flip"]["average"])
    if "reconstruction_mse" in res:
      row["reconstruction_mse"] = float(res["reconstruction_mse"]["mse"])
    return row


  @classmethod
  def stage_table(cls, rows) -> str:
    """Table 2's columns: model, d, successful attribute flips, reconstruction MSE."""
    lines = ["| stage | model | d | successful attribute flips | reconstruction MSE |",
             "|---|---|---|---|---|"]
    for r in rows:
      f, m = r.get("attribute_flip"), r.get("reconstruction_mse")
      lines.append(f"| {r['stage']} | {'teacher' if r['stage'] == 0 else 'student'} | {r['d']} | "
                   f"{'' if f is None else f'{100 * f:.1f} %'} | "
                   f"{'' if m is None else f'{m:.3g}'} |")
    return "\n".join(lines) + "\n"

