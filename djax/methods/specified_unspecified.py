"""Mathieu, Zhao, Ramesh, Sprechmann, LeCun. "Disentangling factors of variation in deep
representations using adversarial training", NeurIPS 2016
(``shared/papers/mathieu2016_supplementary.txt``).

The encoder maps an image to a *specified* code s (what the label determines) and an
*unspecified* code z (everything else, a Gaussian posterior N(μ, σ²) sampled by
reparameterisation); the decoder maps (z, s) back to the image (supplementary §1).
Algorithm 1 trains on triplets (x1, x1', x2): x1 and x1' share the label id1, x2 has
another label id2.

* Generator (encoder + decoder, group ``ae``): Dec(z1, s1) and Dec(z1, s1') must reconstruct
  x1; Dec(z1, s2) and Dec(z ~ N(0, I), s2) must look like real images of class id2 to the
  label-conditioned adversary, which is frozen for this step; a KL term keeps q(z | x1) near
  N(0, I).
* Adversary (group ``adv``): x2 is a real image of id2, Dec(z1, s2) a fake one of id2; the
  encoder and decoder are frozen for this step.

Both steps are computed from the same parameters and applied together in one jitted
``train_step``, each group with its own optimiser. Swapping s between images of different
classes and asking the result to pass as the other class is what pushes the label into s
and keeps it out of z.

The two-step variant of supplementary §4 (``model.mode``): ``s_classifier`` trains the s
encoder with a two-layer classifier on top; ``pretrained_s`` freezes that encoder and trains a
separate z encoder and the decoder as above (:meth:`SpecifiedUnspecified.stages`).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from djax.methods import base, latents
from djax.nn.conv import Conv
from djax.nn.conv_transpose import ConvTranspose
from djax.nn.spec import Norm, flat_init, parse_spec

MODES = ("joint", "s_classifier", "pretrained_s")


# ----------------------------------------------------------------------------- networks

def _conv_layers(spec: str):
  layers = parse_spec(spec)
  bad = [layer for layer in layers if layer.kind != "conv"]
  if bad:
    raise ValueError(f"trunk spec {spec!r} may hold convolutions only (c{{C}}k{{K}}s{{S}})")
  return layers


def trunk_output_size(spec: str, image_size: int) -> int:
  size = image_size
  for layer in _conv_layers(spec):
    size = -(-size // layer.stride)
  return size


class Trunk(nn.Module):
  """The shared convolutional sub-network (§1): every layer conv, BatchNorm, ReLU."""
  spec: str
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    kernel_init = flat_init(nn.initializers.lecun_normal())
    for i, layer in enumerate(_conv_layers(self.spec)):
      x = Conv(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2, padding="SAME",
               use_bias=False, kernel_init=kernel_init, name=f"conv{i}")(x)
      x = Norm("batch", self.axis_name, name=f"norm{i}")(x, train)
      x = nn.relu(x)
    return x.reshape(x.shape[0], -1)


class Encoder(nn.Module):
  """Trunk, then an FC head for (μ, log σ²) of z and an FC head for s (§1).

  ``heads`` selects the heads: ('s', 'z') for the joint model, ('s',) for the pretrained s
  encoder of §4 and ('z',) for the separate z encoder trained next to it.
  """
  trunk_spec: str
  s_dim: int
  z_dim: int
  heads: tuple[str, ...] = ("s", "z")
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = Trunk(self.trunk_spec, self.axis_name, name="trunk")(x, train)
    out = {}
    if "s" in self.heads:
      out["s"] = nn.Dense(self.s_dim, name="s")(h)
    if "z" in self.heads:
      out["mu"] = nn.Dense(self.z_dim, name="mu")(h)
      out["logvar"] = nn.Dense(self.z_dim, name="logvar")(h)
    return out


class Decoder(nn.Module):
  """FC(z) + FC(s), reshaped to the trunk's last feature map, then the trunk mirrored with
  fractional strides (transposed convolutions), BatchNorm + ReLU, tanh output (§1; the
  authors' code adds the two linear maps, which is what "merged by directly adding" says)."""
  trunk_spec: str
  image_size: int
  channels: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, code, train: bool = True):
    z, s = code
    layers = _conv_layers(self.trunk_spec)
    size = trunk_output_size(self.trunk_spec, self.image_size)
    width = layers[-1].features
    h = nn.Dense(size * size * width, name="fc_z")(z) + nn.Dense(size * size * width,
                                                                  name="fc_s")(s)
    h = h.reshape(h.shape[0], size, size, width)
    h = nn.relu(Norm("batch", self.axis_name, name="norm_fc")(h, train))
    kernel_init = flat_init(nn.initializers.lecun_normal())
    # Layer i of the mirror undoes trunk layer n-1-i: its stride, and the channels of the
    # trunk layer before it (the image's channels for the first trunk layer).
    outs = [layer.features for layer in layers[:-1]][::-1] + [self.channels]
    for i, (layer, feats) in enumerate(zip(layers[::-1], outs)):
      last = i == len(layers) - 1
      h = ConvTranspose(feats, (layer.kernel,) * 2, (layer.stride,) * 2, padding="SAME",
                        use_bias=last, kernel_init=kernel_init, name=f"deconv{i}")(h)
      if not last:
        h = nn.relu(Norm("batch", self.axis_name, name=f"norm{i}")(h, train))
    return jnp.tanh(h)


class Adversary(nn.Module):
  """Label-conditioned DCGAN discriminator (§1): 5x5 stride-2 convs with BatchNorm (none on
  the first, as in DCGAN) and LeakyReLU 0.2; the label id goes through one lookup table per
  layer whose vector is added to that layer's feature map (the first three layers); one
  logit out. Input: (images, integer labels)."""
  spec: str
  num_classes: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, inputs, train: bool = True):
    x, labels = inputs
    kernel_init = flat_init(nn.initializers.lecun_normal())
    for i, layer in enumerate(_conv_layers(self.spec)):
      x = Conv(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2, padding="SAME",
               use_bias=i == 0, kernel_init=kernel_init, name=f"conv{i}")(x)
      if i > 0:
        x = Norm("batch", self.axis_name, name=f"norm{i}")(x, train)
      if i < 3:
        emb = nn.Embed(self.num_classes, layer.features, name=f"label{i}",
                       embedding_init=nn.initializers.normal(0.02))(labels)
        x = x + emb[:, None, None, :]
      x = nn.leaky_relu(x, 0.2)
    return nn.Dense(1, name="logit")(x.reshape(x.shape[0], -1))[:, 0]


class Classifier(nn.Module):
  """The two-layer network on top of s for the pretraining of §4."""
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, s):
    return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(s)))


# ----------------------------------------------------------------------------- losses

# Algorithm 1, "Sample z1 ~ N(µ1, σ1)": z = μ + σ ε with σ = exp(½ log σ²).
reparameterise = latents.reparameterise


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(μ, σ²) || N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²): summed over the z
  dimensions, averaged over the batch (the VAE term on z of the main paper's §3).

  The authors' code computes this value with μ for μ² and +1 for −1, and its gradient reads
  log σ where the sampling reads log σ²; the formula here is the correct one."""
  return jnp.mean(latents.gaussian_kl(mu, logvar))


def reconstruction_loss(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  """Squared error per pixel, averaged over pixels, channels and the batch: the authors'
  ``nn.MSECriterion`` (Algorithm 1, "the loss between X̃11 and X1"), against which their loss
  weights (the KL's 0.1·6/(C·H·W) among them) are set."""
  return jnp.mean(jnp.square(x_hat - x))


def adversary_loss(real_logits: jax.Array, fake_logits: jax.Array,
                   real_target: float = 0.95) -> jax.Array:
  """The adversary's step of Algorithm 1: −[t log Adv(x2, id2) + (1 − t) log(1 − Adv(x2, id2))]
  − log(1 − Adv(X̃12, id2)), batch mean; t = 0.95 (the authors' one-sided label smoothing;
  t = 1 is the paper's log Adv(X2, id2))."""
  return jnp.mean(base.sigmoid_bce(real_logits, jnp.full_like(real_logits, real_target))
                  + base.sigmoid_bce(fake_logits, jnp.zeros_like(fake_logits)))


def generator_adversarial_loss(fake_logits: jax.Array, real_target: float = 0.95) -> jax.Array:
  """The generator's adversarial terms of Algorithm 1, "log(Adv(X̃12, id2))" and
  "log(Adv(X̃·2, id2))", as the cross-entropy towards the real target (−log Adv for t = 1:
  the non-saturating form, which is what backpropagating log Adv with the adversary frozen
  maximises); t = 0.95 as in the authors' code. Batch mean."""
  return jnp.mean(base.sigmoid_bce(fake_logits, jnp.full_like(fake_logits, real_target)))


def ramp(step, start: int, steps: int, begin: float, end: float):
  """A loss weight that is ``begin`` until ``start``, moves linearly to ``end`` over ``steps``
  steps, then stays there (``steps`` 0: ``begin`` throughout). ``step`` may be traced."""
  if not steps:
    return jnp.asarray(begin, jnp.float32)
  t = jnp.clip((jnp.asarray(step, jnp.float32) - start) / steps, 0.0, 1.0)
  return begin + (end - begin) * t


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy of the s classifier of §4 ("followed by a classification loss"), batch mean."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (``base.make_optimizer``) or, with ``kind='sgd'``, SGD with momentum: the paper
  "found that using Stochastic Gradient Descent gives good results" and the authors' code
  trains its adversary with SGD."""
  if cfg.get("kind", "adam") == "sgd":
    return optax.sgd(cfg.learning_rate, momentum=cfg.get("momentum", 0.0) or None)
  return base.make_optimizer(cfg)


# ----------------------------------------------------------------------------- method

class SpecifiedUnspecified(base.Method):
  """Mathieu et al. 2016: specified s / unspecified z, swap reconstruction, conditional
  adversary (Algorithm 1); ``model.mode`` selects the joint model or a stage of §4.

  Params by group: ``ae`` = {'encoder', 'decoder'} (joint) or {'z_encoder', 'decoder'}
  (pretrained_s) or {'s_encoder', 'classifier'} (s_classifier); ``adv`` the adversary;
  ``frozen`` = {'s_encoder'} in pretrained_s (no optimiser: it never changes).
  The code is [s, μ_z]: s in columns 0:S, the posterior mean of z in S:S+Z.
  """

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m = config.model
    self.mode = m.get("mode", "joint") or "joint"
    if self.mode not in MODES:
      raise ValueError(f"unknown model.mode {self.mode!r}; known: {MODES}")
    self.s_dim, self.z_dim = int(m.s_dim), int(m.z_dim)
    self.num_classes = int(m.num_classes)
    self.label_key = config.data.get("label_key") or "label"
    self.image_size = int(config.data.image_size)
    self.channels = int(config.data.get("channels", 1))
    if trunk_output_size(m.trunk_spec, self.image_size) < 1:
      raise ValueError(f"trunk {m.trunk_spec!r} leaves nothing of {self.image_size}x"
                       f"{self.image_size} images")
    enc = lambda heads: Encoder(m.trunk_spec, self.s_dim, self.z_dim, heads, axis_name)
    self.encoder = enc(("s", "z"))
    self.s_encoder = enc(("s",))
    self.z_encoder = enc(("z",))
    self.decoder = Decoder(m.trunk_spec, self.image_size, self.channels, axis_name)
    self.adversary = Adversary(m.adversary_spec, self.num_classes, axis_name)
    self.classifier = Classifier(int(m.get("classifier_hidden", 256)), self.num_classes)
    self.loss = config.loss
    self.groups = ("ae",) if self.mode == "s_classifier" else ("ae", "adv")
    self.tx = {g: make_optimizer(config.optim[g]) for g in self.groups}

  # -- networks as pure functions of (params, batch_stats): (output, new statistics)
  def encode_parts(self, params, stats, x, train=False):
    """{'s', 'mu', 'logvar'} of images x, and the encoders' new statistics."""
    if self.mode == "joint":
      out, s_enc = base.apply_net(self.encoder, params["ae"]["encoder"], stats["encoder"], x,
                                  train)
      return out, {"encoder": s_enc}
    if self.mode == "s_classifier":
      out, s_enc = base.apply_net(self.s_encoder, params["ae"]["s_encoder"],
                                  stats["s_encoder"], x, train)
      return out, {"s_encoder": s_enc}
    # pretrained_s: the frozen s encoder always in eval mode (its statistics are stage 0's)
    out_s, _ = base.apply_net(self.s_encoder, params["frozen"]["s_encoder"],
                              stats["s_encoder"], x, False)
    out_z, s_z = base.apply_net(self.z_encoder, params["ae"]["z_encoder"], stats["z_encoder"],
                                x, train)
    return {"s": jax.lax.stop_gradient(out_s["s"]), **out_z}, {"z_encoder": s_z}

  def decode_zs(self, params, stats, z, s, train=False):
    return base.apply_net(self.decoder, params["ae"]["decoder"], stats["decoder"], (z, s), train)

  def adversary_fn(self, p_adv, stats, x, labels, train=True):
    return base.apply_net(self.adversary, p_adv, stats, (x, labels), train)

  # -- init
  def init(self, rng: jax.Array, batch: Mapping[str, Any], previous=None) -> base.TrainState:
    x = batch["image"]
    b = x.shape[0]
    labels = jnp.zeros((b,), jnp.int32)
    k_enc, k_dec, k_adv, k_cls, k_state = jax.random.split(rng, 5)
    plain = lambda n: n.clone(axis_name=None)  # no pmap around init
    z, s = jnp.zeros((b, self.z_dim)), jnp.zeros((b, self.s_dim))
    params, stats = {}, {}
    if self.mode == "s_classifier":
      v_enc = plain(self.s_encoder).init(k_enc, x, train=False)
      v_cls = self.classifier.init(k_cls, s)
      params["ae"] = {"s_encoder": v_enc["params"], "classifier": v_cls["params"]}
      stats["s_encoder"] = v_enc["batch_stats"]
    else:
      v_dec = plain(self.decoder).init(k_dec, (z, s), train=False)
      v_adv = plain(self.adversary).init(k_adv, (x, labels), train=False)
      if self.mode == "joint":
        v_enc = plain(self.encoder).init(k_enc, x, train=False)
        params["ae"] = {"encoder": v_enc["params"], "decoder": v_dec["params"]}
        stats["encoder"] = v_enc["batch_stats"]
      else:
        if previous is None:
          raise ValueError("model.mode='pretrained_s' starts from the s classifier's stage; "
                           "run the ':pretrained_s' config through python -m djax.main, whose "
                           "stage runner hands that stage's state over")
        v_enc = plain(self.z_encoder).init(k_enc, x, train=False)
        params["ae"] = {"z_encoder": v_enc["params"], "decoder": v_dec["params"]}
        stats["z_encoder"] = v_enc["batch_stats"]
        prev_params = previous["params"]["ae"]["s_encoder"]
        prev_stats = previous["batch_stats"]["s_encoder"]
        params["frozen"] = {"s_encoder": jax.tree_util.tree_map(jnp.asarray, prev_params)}
        stats["s_encoder"] = jax.tree_util.tree_map(jnp.asarray, prev_stats)
      params["adv"] = v_adv["params"]
      stats["decoder"], stats["adv"] = v_dec["batch_stats"], v_adv["batch_stats"]
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
        opt_state={g: self.tx[g].init(params[g]) for g in self.groups}, rng=k_state)

  # -- Algorithm 1
  def swap_adversarial_weight(self, step):
    """The weight of the generator's adversarial term on Dec(z1, s2) at ``step``:
    ``loss.lambda_adv``, or, with ``loss.adv_ramp_steps`` > 0, a linear ramp from it to
    ``loss.lambda_adv_final`` over that many steps from ``loss.adv_ramp_start`` (``ramp``)."""
    lo = self.loss
    steps = int(lo.get("adv_ramp_steps", 0) or 0)
    return ramp(step, int(lo.get("adv_ramp_start", 0) or 0), steps, float(lo.lambda_adv),
                float(lo.get("lambda_adv_final", lo.lambda_adv)))

  def generator_objective(self, ae, params, stats, batch, eps, eps_prior, step=0):
    """The generative model's step of Algorithm 1 as a function of the ``ae`` group alone
    (the adversary's parameters enter as constants: "keeping the weights of Adv frozen").

    ``eps``: noise of z1's reparameterisation [B, Z]; ``eps_prior``: z ~ N(0, I) [B, Z];
    ``step``: the training step (only a ramped ``swap_adversarial_weight`` reads it).
    Returns (total, (losses, fake X̃12, new statistics)).
    """
    lo = self.loss
    lambda_adv = self.swap_adversarial_weight(step)
    params = {**params, "ae": ae}
    x1, x1s, x2 = batch["image"], batch["image_same"], batch["image_other"]
    id2 = batch["labels_other"][self.label_key]
    b = x1.shape[0]
    # One encoder pass over the triplet, one decoder pass over the four decodings: one set
    # of batch statistics each, as one batch of 3B / 4B images.
    codes, enc_stats = self.encode_parts(params, stats, jnp.concatenate([x1, x1s, x2]), True)
    s1, s1s, s2 = codes["s"][:b], codes["s"][b:2 * b], codes["s"][2 * b:]
    mu1, logvar1 = codes["mu"][:b], codes["logvar"][:b]
    z1 = reparameterise(mu1, logvar1, eps)
    x_hat, dec_stats = self.decode_zs(
        params, stats, jnp.concatenate([z1, z1, z1, eps_prior]),
        jnp.concatenate([s1, s1s, s2, s2]), True)
    x11, x11s, x12, x_prior2 = x_hat[:b], x_hat[b:2 * b], x_hat[2 * b:3 * b], x_hat[3 * b:]
    adv = lambda x: self.adversary_fn(params["adv"], stats["adv"], x, id2, True)[0]
    losses = {"loss_rec": reconstruction_loss(x11, x1),
              "loss_swap": reconstruction_loss(x11s, x1),
              "loss_adv_swap": generator_adversarial_loss(adv(x12), lo.real_target),
              "loss_adv_prior": generator_adversarial_loss(adv(x_prior2), lo.real_target),
              "loss_kl": kl_divergence(mu1, logvar1)}
    total = (lo.lambda_rec * losses["loss_rec"] + lo.lambda_swap * losses["loss_swap"]
             + lambda_adv * losses["loss_adv_swap"]
             + lo.lambda_adv_prior * losses["loss_adv_prior"] + lo.lambda_kl * losses["loss_kl"])
    losses["loss_ae"] = total
    losses["lambda_adv"] = lambda_adv
    return total, (losses, x12, {**enc_stats, "decoder": dec_stats})

  def adversary_objective(self, p_adv, stats, x_real, x_fake, labels):
    """The adversary's step of Algorithm 1 on (x2, id2) real and (X̃12, id2) fake, the fake
    held as data ("keeping the weights of Enc and Dec frozen"). Real first, then the fake
    from the statistics the real pass left. Returns (loss, (readings, new statistics))."""
    x_fake = jax.lax.stop_gradient(x_fake)
    real, s_adv = self.adversary_fn(p_adv, stats, x_real, labels, True)
    fake, s_adv = self.adversary_fn(p_adv, s_adv, x_fake, labels, True)
    loss = adversary_loss(real, fake, self.loss.real_target)
    return loss, ({"loss_adversary": loss, "adv_real": jnp.mean(jax.nn.sigmoid(real)),
                   "adv_fake": jnp.mean(jax.nn.sigmoid(fake))}, s_adv)

  def classifier_objective(self, ae, stats, batch):
    """§4's first step: the s encoder and a two-layer classifier, cross-entropy on the label."""
    out, s_enc = base.apply_net(self.s_encoder, ae["s_encoder"], stats["s_encoder"],
                                batch["image"], True)
    logits = self.classifier.apply({"params": ae["classifier"]}, out["s"])
    labels = batch["labels"][self.label_key]
    loss = classification_loss(logits, labels)
    return loss, ({"loss_cls": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)},
                  {"s_encoder": s_enc})

  def noise(self, rng, b):
    """(ε for z1, z ~ N(0, I)) per example, by global example index (device-count free)."""
    keys = base.example_keys(rng, b, self.axis_name)
    pair = jax.vmap(lambda k: jax.random.normal(k, (2, self.z_dim)))(keys)
    return pair[:, 0], pair[:, 1]

  def gradients(self, params, stats, batch, rng, step=0):
    """Every group's gradient on one batch, before averaging over devices:
    (grads per group, metrics, new statistics)."""
    if self.mode == "s_classifier":
      g, (metrics, new_stats) = jax.grad(self.classifier_objective, has_aux=True)(
          params["ae"], stats, batch)
      return {"ae": g}, metrics, {**stats, **new_stats}
    eps, eps_prior = self.noise(rng, batch["image"].shape[0])
    g_ae, (losses, x12, gen_stats) = jax.grad(self.generator_objective, has_aux=True)(
        params["ae"], params, stats, batch, eps, eps_prior, step)
    g_adv, (readings, adv_stats) = jax.grad(self.adversary_objective, has_aux=True)(
        params["adv"], stats["adv"], batch["image_other"], x12,
        batch["labels_other"][self.label_key])
    return ({"ae": g_ae, "adv": g_adv}, {**losses, **readings},
            {**stats, **gen_stats, "adv": adv_stats})

  def train_step(self, state: base.TrainState, batch: dict[str, Any], rng: jax.Array):
    """One iteration of Algorithm 1: the generator's and the adversary's updates, both from
    the current parameters, each with its own optimiser."""
    grads, metrics, new_stats = self.gradients(state.params, state.batch_stats, batch, rng,
                                               state.step)
    grads = base.pmean(grads, self.axis_name)
    new_params, new_opt = base.update_groups(self.tx, grads, state.opt_state, state.params,
                                             self.groups)
    return state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                         opt_state=new_opt), base.pmean(metrics, self.axis_name)

  # -- stages (§4's two-step approach; djax.stages runs them)
  @classmethod
  def stages(cls, config, steps_per_epoch: int) -> list[base.Stage]:
    """``config.stages`` set: stage 0 trains the s encoder as a classifier for
    ``stages.classifier_steps`` steps; stage 1 freezes it (copied from stage 0) and trains
    the z encoder, decoder and adversary for ``train.steps`` steps."""
    del steps_per_epoch
    out = []
    for i, mode in enumerate(("s_classifier", "pretrained_s")):
      c = ml_collections.ConfigDict(config.to_dict())
      del c["stages"]
      c.model.mode = mode
      if mode == "s_classifier":
        c.train.steps = int(config.stages.classifier_steps)
        c.data.pairing = None  # a plain supervised batch
        c.eval.metrics = tuple(config.stages.get("classifier_metrics", ()))
      out.append(base.Stage(name=f"stage_{i}_{mode}", config=c, from_previous=i > 0,
                            description="s encoder + classifier (§4, step 1)" if i == 0 else
                            "frozen s, z encoder + decoder + adversary (§4, step 2)"))
    return out

  @classmethod
  def stage_row(cls, stage: base.Stage, summary) -> dict[str, Any]:
    head = (summary.get("eval") or {}).get("headline", {})
    return {"mode": stage.config.model.mode,
            **{k: v for k, v in head.items() if k.startswith("part_probe")}}

  @classmethod
  def stage_table(cls, rows) -> str:
    keys = sorted({k for r in rows for k in r if k.startswith("part_probe")})
    lines = ["| stage | mode | " + " | ".join(keys) + " | s/step |",
             "|---|---|" + "---|" * len(keys) + "---|"]
    for r in rows:
      sps = r.get("seconds_per_step")
      cells = [f"{100 * r[k]:.1f} %" if k in r else "" for k in keys]
      lines.append(f"| {r['stage']} | {r.get('mode')} | " + " | ".join(cells) +
                   f" | {'' if sps is None else f'{sps * 1e3:.1f} ms'} |")
    return "\n".join(lines) + "\n"

  # -- evaluation: pure array functions
  def encode(self, params, stats, images: jax.Array) -> jax.Array:
    """The code [s, μ_z] (eval mode): [B, S + Z] (s only, [B, S], for the s classifier)."""
    out, _ = self.encode_parts(params, stats, images, False)
    return out["s"] if self.mode == "s_classifier" else jnp.concatenate([out["s"], out["mu"]], -1)

  def encode_sample(self, params, stats, rng: jax.Array, images: jax.Array) -> jax.Array:
    """[s, z] with z ~ q(z | x) = N(μ_z, σ_z²) (eval mode): the z the decoder is given."""
    out, _ = self.encode_parts(params, stats, images, False)
    if self.mode == "s_classifier":
      return out["s"]
    z = latents.reparameterise(out["mu"], out["logvar"],
                               jax.random.normal(rng, out["mu"].shape, out["mu"].dtype))
    return jnp.concatenate([out["s"], z], -1)

  def code_parts(self) -> dict[str, slice]:
    if self.mode == "s_classifier":
      return {"s": slice(0, self.s_dim)}
    return {"s": slice(0, self.s_dim), "z": slice(self.s_dim, self.s_dim + self.z_dim)}

  def _check_decoder(self):
    if self.mode == "s_classifier":
      raise ValueError("the s classifier stage has no decoder")

  def decode(self, params, stats, code: jax.Array) -> jax.Array:
    """Dec(z, s) of codes laid out as :meth:`encode` writes them."""
    self._check_decoder()
    return self.decode_zs(params, stats, code[:, self.s_dim:], code[:, :self.s_dim])[0]

  def sample(self, params, stats, rng: jax.Array, n: int, condition=None) -> jax.Array:
    """Generation (supplementary §2): s from ``condition``, z ~ N(0, I).

    ``condition``: images [n, H, W, C] (their s is used) or s codes [n, S]. There is no
    prior on s, so a condition is required."""
    self._check_decoder()
    if condition is None:
      raise ValueError("SpecifiedUnspecified.sample needs a condition (images or s codes): "
                       "s has no prior, only z does")
    s = condition if condition.ndim == 2 else self.encode(params, stats, condition)[:, :self.s_dim]
    s = s[:n]
    z = jax.random.normal(rng, (s.shape[0], self.z_dim))
    return self.decode_zs(params, stats, z, s)[0]

  def swap_grid(self, params, stats, s_sources, z_sources):
    """Fig. 2a: cell (r, c) decodes (z of z_sources[r], s of s_sources[c]); s sources along
    the top row, z sources down the left column, a blank corner: [1 + R, 1 + C, H, W, ch]."""
    cs = self.encode(params, stats, s_sources)[:, :self.s_dim]
    cz = self.encode(params, stats, z_sources)[:, self.s_dim:]
    r, c = z_sources.shape[0], s_sources.shape[0]
    cells = self.decode_zs(params, stats, jnp.repeat(cz, c, 0), jnp.tile(cs, (r, 1)))[0]
    cells = cells.reshape((r, c) + cells.shape[1:])
    top = jnp.concatenate([jnp.ones_like(s_sources[:1]), s_sources])[None]
    return jnp.concatenate([top, jnp.concatenate([z_sources[:, None], cells], 1)])

  def generation_grid(self, params, stats, images, rng, m: int = 8):
    """Supplementary Fig. 8: each row an image, then m decodings of its s with z ~ N(0, I)."""
    s = self.encode(params, stats, images)[:, :self.s_dim]
    z = jax.random.normal(rng, (images.shape[0] * m, self.z_dim))
    x = self.decode_zs(params, stats, z, jnp.repeat(s, m, 0))[0]
    return jnp.concatenate([images[:, None], x.reshape((images.shape[0], m) + x.shape[1:])], 1)

  def interpolation_grid(self, params, stats, a, b, k: int = 8):
    """Supplementary Fig. 9: s and z of images a and b interpolated independently, s from
    left to right and z from top to bottom; (0, 0) decodes a's code, (k-1, k-1) b's."""
    ca, cb = self.encode(params, stats, jnp.stack([a, b]))
    t = jnp.linspace(0.0, 1.0, k)[:, None]
    s = (1 - t) * ca[:self.s_dim] + t * cb[:self.s_dim]
    z = (1 - t) * ca[self.s_dim:] + t * cb[self.s_dim:]
    x = self.decode_zs(params, stats, jnp.repeat(z, k, 0), jnp.tile(s, (k, 1)))[0]
    return x.reshape((k, k) + x.shape[1:])

  def eval_images(self, params, stats, images: jax.Array, n: int = 8) -> dict[str, jax.Array]:
    """Swap grid, generation, interpolation and reconstructions (the s classifier stage has
    no decoder: its grid is the inputs)."""
    if self.mode == "s_classifier":
      return {"inputs": images[None, :n]}
    n = min(n, images.shape[0] // 2)
    first, second = images[:n], images[n:2 * n]
    code = self.encode(params, stats, images[:2 * n])
    return {"swap": self.swap_grid(params, stats, first, second),
            "generation": self.generation_grid(params, stats, first, jax.random.PRNGKey(0), n),
            "interpolation": self.interpolation_grid(params, stats, first[0], second[0], n),
            "reconstruction": jnp.stack([images[:2 * n], self.decode(params, stats, code)])}
