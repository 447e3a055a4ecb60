"""Zheng & Sun, "Disentangling latent space for VAE by label relevant/irrelevant dimensions",
CVPR 2019 (``shared/papers/zheng_sun2019_label_relevant_vae.md``).

Two encoders read one input x. Encoder^s gives the label-relevant code ẑ_s, which a
Gaussian mixture with one learned component per class, N(μ_c, Σ_c), both classifies and
explains (the GM loss, eqs. 7-9). Encoder^u gives q(z_u | x) = N(μ, Σ), pulled to N(0, I)
by a KL (eq. 3), and an adversarial classifier on z_u (eq. 4) whose prediction the encoder
pushes to uniform (eq. 5), so that z_u keeps what the label does not say. The decoder
G(z_s, z_u) reconstructs x; a projection discriminator with spectral normalisation sees
real, reconstructed and sampled inputs (eq. 10, here with the hinge loss the authors code).

The mixture is parametrised as the authors code it (``lgm_logits``): means μ_c, and a
*precision* Λ_c = softplus(v_c) per class and dimension (Σ_c = diag(1 / Λ_c)), v
initialised to 0.54 so that Λ starts near 1. With d_c = ½ Σ_j Λ_cj (z − μ_c)_j² the class
log-density is −d_c + ½ Σ_j log Λ_cj (+ const.), q(c | z) its softmax over classes (uniform
p(c) cancels), and a class-c sample is z_s = μ_c + ε / √Λ_c.

Network groups, one optax state each (Algorithm 1):

* ``es``  Encoder^s and the mixture (μ, v): n_gm GM steps on L_GM = L_cls + λ_lkd L_lkd
  (lines 2-8), then Encoder^s alone on λ_rec^s L_rec + λ_lkd L_lkd (line 24);
* ``eu``  Encoder^u: L_E^adv + λ_kl L_kl + λ_rec L_rec (line 25);
* ``cls`` the adversarial classifier on z_u: L_C^adv (line 26);
* ``g``   the decoder: L_rec + L_GD^adv (line 27);
* ``d``   the discriminator: L_D^adv (line 28).

Semi-supervised (§3.6): examples whose ``label_mask`` is False (or label −1) skip L_GM,
L_C^adv and L_E^adv; their L_lkd is taken under the mixture of eq. 6 (``loss.unlabelled_prior
= 'mixture'``, unlabelled examples of the known classes) or under eq. 11's total Gaussian
N(μ_t, Σ_t) (``'total'``, examples of unseen classes); the discriminator conditions them on
the mixture's own prediction argmax_c q(c|ẑ_s).

Inpainting (§4.5): ``inpaint`` encodes a corrupted image with both encoders (no label),
decodes, and keeps the known pixels: x^inp = M ⊙ x' + (1 − M) ⊙ x; ``eval_images`` shows it
for the masks of ``INPAINT_PATTERNS``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from djax.methods import base
from djax.nn import spectral_norm as sn
from djax.nn.spec import SpecNet, parse_spec

V_INIT = 0.54  # the authors' initial v: softplus(0.54) ≈ 1.0
# How v gives the precision: 'softplus', the authors' code; 'log', Λ = exp(v) (not theirs).
# Adam moves v by about its learning rate per update whatever the gradient's size, so under
# softplus Λ grows by a fixed amount an update, far too slowly for a CPU run's iterations to
# reach the codes' precision; under exp the same steps are relative. (Measured in README:
# under exp Σ_c moves fast, and the codes still contract ahead of it.)
PRECISION_PARAMETERISATIONS = {"softplus": (jax.nn.softplus, V_INIT),
                               "log": (jnp.exp, math.log(math.log1p(math.exp(V_INIT))))}


# ----------------------------------------------------------------------------- the mixture

def precision(v: jax.Array, parameterisation: str = "softplus") -> jax.Array:
  """Λ = softplus(v) (or exp(v)): the per-class, per-dimension precision (1 / σ²)."""
  return PRECISION_PARAMETERISATIONS[parameterisation][0](v)


def half_mahalanobis(z: jax.Array, mu: jax.Array, lam: jax.Array) -> jax.Array:
  """d_c = ½ Σ_j Λ_cj (z − μ_c)_j² for every example and class: [B, C]."""
  return 0.5 * jnp.sum(lam[None] * jnp.square(z[:, None, :] - mu[None]), axis=-1)


def class_log_density(z: jax.Array, mu: jax.Array, lam: jax.Array) -> jax.Array:
  """log N(z; μ_c, Λ_c⁻¹) + (dim/2) log 2π for every class: −d_c + ½ Σ_j log Λ_cj, [B, C]."""
  return -half_mahalanobis(z, mu, lam) + 0.5 * jnp.sum(jnp.log(lam), axis=-1)[None]


def gm_classification_loss(z: jax.Array, labels: jax.Array, mu: jax.Array,
                           lam: jax.Array) -> jax.Array:
  """Eq. (8): L_cls = −log q(y | ẑ_s), q(c | z) = N(z; μ_c, Σ_c) / Σ_k N(z; μ_k, Σ_k)
  (uniform p(c)), per example [B].

  The authors compute −log(p_y / (Σ_k p_k + 1e-8) + 1e-4) with p_k = exp(−d_k) √∏Λ_k; this
  is the same quantity as a log-softmax, without the guards (they only bound the loss of
  examples with q(y | z) < 1e-4 and would stop their gradient).
  """
  logp = jax.nn.log_softmax(class_log_density(z, mu, lam), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def gm_likelihood_loss(z: jax.Array, labels: jax.Array, mu: jax.Array,
                       lam: jax.Array) -> jax.Array:
  """Eq. (7): L_lkd = −log N(ẑ_s; μ_y, Σ_y) up to the constant (dim/2) log 2π, i.e.
  d_y − ½ Σ_j log Λ_yj (the authors' d_y − ½ log(∏Λ_y + 1e-4), in log form), per example."""
  mu_y, lam_y = mu[labels], lam[labels]
  return (0.5 * jnp.sum(lam_y * jnp.square(z - mu_y), axis=-1)
          - 0.5 * jnp.sum(jnp.log(lam_y), axis=-1))


def total_gaussian(mu: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Eq. (11) with p(c) = 1/C: μ_t = Σ_c p(c) μ_c and σ_t² = Σ_c p(c)(σ_c² + μ_c²) − μ_t²,
  returned as (μ_t, precision 1/σ_t²)."""
  mu_t = jnp.mean(mu, axis=0)
  var_t = jnp.mean(1.0 / lam + jnp.square(mu), axis=0) - jnp.square(mu_t)
  return mu_t, 1.0 / var_t


def unlabelled_likelihood_loss(z: jax.Array, mu: jax.Array, lam: jax.Array) -> jax.Array:
  """§3.6: L_lkd = −log N(ẑ_s; μ_t, Σ_t) (+ const.) for an example without a label."""
  mu_t, lam_t = total_gaussian(mu, lam)
  return (0.5 * jnp.sum(lam_t * jnp.square(z - mu_t), axis=-1)
          - 0.5 * jnp.sum(jnp.log(lam_t), axis=-1))


def mixture_likelihood_loss(z: jax.Array, mu: jax.Array, lam: jax.Array) -> jax.Array:
  """§3.6, unlabelled example of a known class: ẑ_s "follows the same Gaussian mixture
  distribution as in Eq. 6", so L_lkd = −log Σ_c p(c) N(ẑ_s; μ_c, Σ_c) (+ const.), p(c) = 1/C.
  Its gradient pulls the code towards the classes' means in proportion to q(c | ẑ_s)."""
  logp = class_log_density(z, mu, lam)
  return -(jax.nn.logsumexp(logp, axis=-1) - jnp.log(logp.shape[-1]))


UNLABELLED_PRIORS = {"mixture": mixture_likelihood_loss, "total": unlabelled_likelihood_loss}


def update_class_moments(moments: dict, z: jax.Array, labels: jax.Array, labelled: jax.Array,
                         momentum: float, axis_name: str | None = None) -> dict:
  """Running per-class mean and second moment of the encoded ẑ_s (no gradient), over the
  labelled examples of the (global) batch; a class absent from the batch keeps its values.

  Why: L_GM's Σ_c is set mostly by L_cls (λ_lkd = 0.1), not fitted to the codes, and ends
  wider than each class's ẑ_s (see README); these moments are the Gaussian the codes
  actually fill, for ``model.class_sampling='encoded'``."""
  onehot = jax.nn.one_hot(jnp.maximum(labels, 0), moments["mean"].shape[0]) * labelled[:, None]
  z = jax.lax.stop_gradient(z)
  s0, s1, s2 = base.pmean((jnp.sum(onehot, 0), onehot.T @ z, onehot.T @ jnp.square(z)),
                          axis_name)
  seen = (s0 > 0)[:, None]
  n = jnp.maximum(s0, 1e-12)[:, None]
  ema = lambda old, new: jnp.where(seen, momentum * old + (1.0 - momentum) * new, old)
  return {"mean": ema(moments["mean"], s1 / n), "second": ema(moments["second"], s2 / n)}


def moment_gaussians(moments: dict, floor: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  """(mean, precision) of the per-class Gaussians the running moments describe."""
  var = jnp.maximum(moments["second"] - jnp.square(moments["mean"]), floor)
  return moments["mean"], 1.0 / var


def sample_class_codes(eps: jax.Array, labels: jax.Array, mu: jax.Array,
                       lam: jax.Array) -> jax.Array:
  """z_s ~ N(μ_y, Σ_y) as the authors draw it: μ_y + ε / √Λ_y, ε ~ N(0, I)."""
  return mu[labels] + eps * jax.lax.rsqrt(lam[labels])


# ----------------------------------------------------------------------------- the other losses

def kl_loss(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Eq. (3): D_KL[N(μ, Σ) || N(0, I)] = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1), per example."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def adversary_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Eq. (4): L_C^adv = −log q_ω(y | z_u), per example."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def uniform_target_loss(logits: jax.Array) -> jax.Array:
  """Eq. (5): L_E^adv = −Σ_c (1/C) log q_ω(c | z_u), per example: the cross-entropy of the
  adversary's prediction against the uniform distribution, minimal where it is uniform."""
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)


def reconstruction_loss(x_rec: jax.Array, x: jax.Array) -> jax.Array:
  """Algorithm 1 line 19: L_rec = ½ ||x − x'||², summed over the input's entries, per example."""
  return 0.5 * jnp.sum(jnp.square(x_rec - x).reshape(x.shape[0], -1), axis=-1)


def hinge_discriminator_loss(real: jax.Array, rec: jax.Array, sampled: jax.Array,
                             fake_weight: float = 0.5) -> jax.Array:
  """Eq. (10) in the hinge form of the authors' code, over the three kinds of input of
  Algorithm 1 line 21: E[max(0, 1 − D(x, y))] + w E[max(0, 1 + D(x'_f, y))] + w E[max(0,
  1 + D(x'_p, y))].

  w = ½ by default: the two fake terms share one weight. With a weight each (w = 1, the
  authors' loss_hinge_dis), where reconstructions are as good as the data the hinge is
  minimised by D ≡ −1 there, and nothing rewards D for going lower on the samples:
  measured on three moons, D read −1.00 on real, reconstructed and sampled points alike
  for 20k iterations and the samples stayed diffuse.
  """
  return (jnp.mean(jax.nn.relu(1.0 - real)) + fake_weight * jnp.mean(jax.nn.relu(1.0 + rec))
          + fake_weight * jnp.mean(jax.nn.relu(1.0 + sampled)))


def sampled_class_labels(keys: jax.Array, cond: jax.Array, num_classes: int,
                    how: str = "batch") -> jax.Array:
  """The class each x'_p of Algorithm 1 line 20 is drawn for: the batch's own (``cond``),
  or with ``how='uniform'`` one uniform class per example from its key."""
  if how == "uniform":
    return jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (), 0,
                                                 num_classes))(keys)
  return cond


def hinge_generator_loss(rec: jax.Array, sampled: jax.Array,
                         sampled_weight: float = 1.0) -> jax.Array:
  """L_GD^adv (Algorithm 1 line 23) in hinge form: −E[D(x'_f, y)] − w E[D(x'_p, y)].

  w = 1 is the paper's. A larger w asks the decoder to make more of the codes drawn from
  N(μ_c, Σ_c), away from the encoded ones, look like class c (``loss.sampled_gan_weight``).
  """
  return -jnp.mean(rec) - sampled_weight * jnp.mean(sampled)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  m = mask.astype(values.dtype)
  return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


# ----------------------------------------------------------------------------- inpainting (§4.5)

# Patterns of §4.5 that need no face landmarks. The paper corrupts "right-half, eyes, nose
# and mouth, and bottom-half regions" of aligned 64x64 faces; 'centre' (the central box of
# half the height and half the width) is where eyes, nose and mouth lie on such a crop, and
# is defined on any image.
INPAINT_PATTERNS = ("right_half", "bottom_half", "centre")


def inpainting_mask(pattern: str, height: int, width: int) -> jax.Array:
  """M of §4.5 as float32 [H, W, 1]: 1 on the corrupted patch, 0 where x is known."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  if pattern == "right_half":
    m = cols >= width // 2
  elif pattern == "bottom_half":
    m = rows >= height // 2
  elif pattern == "centre":
    m = ((rows >= height // 4) & (rows < height // 4 + height // 2)
         & (cols >= width // 4) & (cols < width // 4 + width // 2))
  else:
    raise ValueError(f"unknown inpainting pattern {pattern!r}; use one of {INPAINT_PATTERNS}")
  return jnp.broadcast_to(m, (height, width)).astype(jnp.float32)[..., None]


def corrupt(x: jax.Array, mask: jax.Array, fill: float) -> jax.Array:
  """The corrupted input the encoders see: x where M = 0, the constant ``fill`` where M = 1
  (the paper does not say what the patch holds; a constant carries nothing of x)."""
  return (1.0 - mask) * x + mask * fill


def blend(x: jax.Array, x_rec: jax.Array, mask: jax.Array) -> jax.Array:
  """§4.5: x^inp = M ⊙ x' + (1 − M) ⊙ x. The known part is x itself, not its reconstruction."""
  return mask * x_rec + (1.0 - mask) * x


# ----------------------------------------------------------------------------- networks

class ProjectionDiscriminator(nn.Module):
  """D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩ (Miyato & Koyama 2018), every weight spectrally
  normalised. φ follows a spec of 'c{C}k{K}s{S}' and 'f{N}' tokens (djax.nn.spec's
  grammar), each followed by a leaky ReLU."""
  spec: str
  num_classes: int
  negative_slope: float = 0.2
  conv_impl: str = "auto"
  spectral_norm: bool = True  # False: plain layers (the paper names SN for its image models)
  # Average the last feature map over space before the first dense layer (Table 4's "global
  # average pooling" between FaceScrub's convolutions and its fc 1024); False: flatten.
  global_pool: bool = False

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    h = x
    for i, layer in enumerate(parse_spec(self.spec)):
      if layer.kind == "dense" and h.ndim == 4 and self.global_pool:
        h = jnp.mean(h, axis=(1, 2))
      if layer.kind == "conv":
        h = sn.SNConv(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2,
                      impl=self.conv_impl, normalize=self.spectral_norm,
                      name=f"conv{i}")(h, train)
      elif layer.kind == "dense":
        h = sn.SNDense(layer.features, normalize=self.spectral_norm, name=f"dense{i}")(
            h.reshape(h.shape[0], -1), train)
      else:
        raise ValueError(f"the discriminator spec {self.spec!r} may hold 'c' and 'f' tokens "
                         f"only, not {layer.kind!r}")
      h = nn.leaky_relu(h, self.negative_slope)
    h = h.reshape(h.shape[0], -1)
    out = sn.SNDense(1, normalize=self.spectral_norm, name="psi")(h, train)[:, 0]
    emb = sn.SNEmbed(self.num_classes, h.shape[-1], normalize=self.spectral_norm,
                     name="embed")(labels, train)
    return out + jnp.sum(emb * h, axis=-1)


# ----------------------------------------------------------------------------- method

class LabelRelevantVAE(base.Method):
  """Label-relevant / irrelevant VAE with a GM prior on z_s (Zheng & Sun 2019)."""

  groups = ("es", "eu", "cls", "g", "d")

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m = config.model
    self.key = config.data.get("input_key", None) or "image"
    self.label_key = config.data.get("label_key", None) or "label"
    self.num_classes = int(m.num_classes)
    self.zs_dim, self.zu_dim = int(m.zs_dim), int(m.zu_dim)
    self.tanh_output = m.get("output", "tanh") == "tanh"
    # The encoders', decoder's and adversary's activation: leaky ReLU with this slope (0:
    # ReLU, as Table 3 prints for CIFAR-10); the discriminator keeps its own leaky ReLU.
    net = functools.partial(SpecNet, axis_name=axis_name,
                            negative_slope=float(m.get("negative_slope", 0.2)))
    self.enc_s = net(m.encoder_s_spec, out_features=self.zs_dim, norm=m.encoder_norm)
    self.enc_u = net(m.encoder_u_spec, out_features=2 * self.zu_dim, norm=m.encoder_norm)
    self.decoder = net(m.decoder_spec, norm=m.decoder_norm)
    self.adversary = net(m.adversary_spec, out_features=self.num_classes, norm="none")
    self.discriminator = ProjectionDiscriminator(
        m.discriminator_spec, self.num_classes,
        spectral_norm=bool(m.get("discriminator_spectral_norm", True)),
        global_pool=bool(m.get("discriminator_global_pool", False)))
    # What a corrupted patch holds when inpainting: the middle of the data's value range
    # (grey), unless model.inpaint_fill says otherwise.
    lo, hi = config.data.get("value_range", (-1.0, 1.0))
    fill = m.get("inpaint_fill", None)
    self.inpaint_fill = 0.5 * (lo + hi) if fill is None else float(fill)
    # Which Gaussian class-conditional samples draw z_s from (evaluation only; training
    # always draws x'_p from the mixture, Algorithm 1 line 20): 'mixture', N(μ_c, Σ_c) as
    # §4.2 does, or 'encoded', the running moments of the training codes of class c.
    self.class_sampling = m.get("class_sampling", "mixture")
    if self.class_sampling not in ("mixture", "encoded"):
      raise ValueError(f"model.class_sampling must be 'mixture' (the paper's N(mu_c, "
                       f"Sigma_c)) or 'encoded' (the codes' running moments), not "
                       f"{self.class_sampling!r}")
    # Which BatchNorm batch the decoder normalises x'_p (Algorithm 1 line 20) in: 'joint',
    # one batch with the reconstructions x'_f, or 'separate', as the authors' two generator
    # calls do (G_dec, G_sample), each batch by its own statistics. With 'separate' the
    # sampled batches keep their own running averages (batch_stats['g_sampled']), which
    # ``sample`` normalises by: the authors' generation runs BatchNorm in training mode on a
    # batch of samples of every class; the running averages of such batches stand for its
    # statistics and keep each sample independent of the others in its batch.
    self.sampled_norm = m.get("sampled_norm", "joint")
    if self.sampled_norm not in ("joint", "separate"):
      raise ValueError(f"model.sampled_norm must be 'joint' (x'_f and x'_p in one "
                       f"BatchNorm batch) or 'separate' (the authors' two generator calls), "
                       f"not {self.sampled_norm!r}")
    self.moment_momentum = float(m.get("moment_momentum", 0.99))
    self.precision_parameterisation = m.get("precision_parameterisation", "softplus")
    if self.precision_parameterisation not in PRECISION_PARAMETERISATIONS:
      raise ValueError(f"model.precision_parameterisation must be one of "
                       f"{sorted(PRECISION_PARAMETERISATIONS)}, not "
                       f"{self.precision_parameterisation!r}")
    self.loss = config.loss
    self.n_gm = int(config.loss.n_gm)
    # §3.6: an unlabelled example whose class is one of the C ("in the predefined range",
    # as with data.labelled_fraction) follows the mixture of eq. 6, 'mixture'; one of an
    # unseen class (the paper's CASIA identities) eq. 11's total Gaussian, 'total'.
    self.unlabelled_prior = config.loss.get("unlabelled_prior", "mixture")
    if self.unlabelled_prior not in UNLABELLED_PRIORS:
      raise ValueError(f"loss.unlabelled_prior must be 'mixture' (unlabelled examples of the "
                       f"known classes) or 'total' (of unseen classes, eq. 11), not "
                       f"{self.unlabelled_prior!r}")
    # The classes x'_p is drawn for: 'batch', those of the batch's own examples (djax), or
    # 'uniform', one drawn uniformly per example (the authors' Y_rand).
    self.sampled_classes = config.loss.get("sampled_classes", "batch")
    if self.sampled_classes not in ("batch", "uniform"):
      raise ValueError(f"loss.sampled_classes must be 'batch' or 'uniform' (the authors' "
                       f"Y_rand), not {self.sampled_classes!r}")
    self.gm_batches = config.loss.get("gm_batches", "split")
    if self.gm_batches not in ("split", "same"):
      raise ValueError(f"loss.gm_batches must be 'split' or 'same', not {self.gm_batches!r}")
    self.tx = {g: base.make_optimizer(config.optim[g]) for g in self.groups}
    self.tx["es"] = self._es_optimizer(config.optim)

  def _es_optimizer(self, optim):
    """Encoder^s and μ: the es block. The precision v: the same Adam, its learning rate
    multiplied by ``precision_decay`` after ``precision_decay_steps`` iterations (B.4: "we
    decay the learning rate of Σ_c by 0.01 after 2 epochs"). An iteration updates the group
    n_gm + 1 times (the GM steps, then line 24), and optax counts updates."""
    cfg = optim.es
    boundary = int(optim.get("precision_decay_steps", 0)) * (self.n_gm + 1)
    # precision_lr_scale (default 1: the same Adam as the rest of es) multiplies v's learning
    # rate before the decay, for data where 2 epochs are too few steps for Σ_c to converge
    # (B.4 decays it on the premise that L_GM has converged by then).
    scale = float(optim.get("precision_lr_scale", 1.0))
    lr = cfg.learning_rate * scale
    if boundary:  # after it: the base rate x precision_decay, whatever the scale was
      lr = optax.piecewise_constant_schedule(
          lr, {boundary: float(optim.get("precision_decay", 1.0)) / scale})
    labels = lambda p: {"encoder": jax.tree_util.tree_map(lambda _: "net", p["encoder"]),
                        "gm": {"mu": "net", "v": "precision"}}
    return optax.multi_transform({"net": base.make_optimizer(cfg),
                                  "precision": optax.adam(lr, b1=cfg.b1, b2=cfg.b2)}, labels)

  # -- networks as pure functions of (params, batch_stats): (output, new statistics)
  def encode_s(self, params, stats, x, train=False):
    return base.apply_net(self.enc_s, params["es"]["encoder"], stats["es"], x, train)

  def encode_u(self, params, stats, x, train=False):
    h, s = base.apply_net(self.enc_u, params["eu"], stats["eu"], x, train)
    return (h[:, :self.zu_dim], h[:, self.zu_dim:]), s

  def decode_fn(self, params, stats, zs, zu, train=False):
    y, s = base.apply_net(self.decoder, params["g"], stats["g"],
                          jnp.concatenate([zs, zu], axis=-1), train)
    return (jnp.tanh(y) if self.tanh_output else y), s

  def discriminate(self, params, stats, x, labels, train=False):
    variables = {"params": params["d"], "batch_stats": stats["d"]}
    if train:
      out, new = self.discriminator.apply(variables, x, labels, train=True,
                                          mutable=["batch_stats"])
      return out, new.get("batch_stats", {})
    return self.discriminator.apply(variables, x, labels, train=False), stats["d"]

  def mixture(self, params):
    gm = params["es"]["gm"]
    return gm["mu"], precision(gm["v"], self.precision_parameterisation)

  def init(self, rng: jax.Array, batch: dict[str, Any], previous=None) -> base.TrainState:
    del previous  # one stage
    x = batch[self.key]
    ks = jax.random.split(rng, 7)
    plain = lambda n: n.clone(axis_name=None) if hasattr(n, "axis_name") else n
    b = x.shape[0]
    v_es = plain(self.enc_s).init(ks[0], x, train=False)
    v_eu = plain(self.enc_u).init(ks[1], x, train=False)
    v_g = plain(self.decoder).init(ks[2], jnp.zeros((b, self.zs_dim + self.zu_dim)), train=False)
    out_shape = jax.eval_shape(lambda: self.decoder.clone(axis_name=None).apply(
        v_g, jnp.zeros((b, self.zs_dim + self.zu_dim)), train=False)).shape
    if tuple(out_shape) != tuple(x.shape):
      raise ValueError(f"decoder spec {self.config.model.decoder_spec!r} produces "
                       f"{tuple(out_shape[1:])}, the data is {tuple(x.shape[1:])}")
    v_cls = plain(self.adversary).init(ks[3], jnp.zeros((b, self.zu_dim)), train=False)
    v_d = self.discriminator.init(ks[4], x, jnp.zeros((b,), jnp.int32), train=False)
    v_d = {"params": v_d["params"], "batch_stats": v_d.get("batch_stats", {})}
    gm = {"mu": nn.initializers.glorot_uniform()(ks[5], (self.num_classes, self.zs_dim)),
          "v": jnp.full((self.num_classes, self.zs_dim),
                        PRECISION_PARAMETERISATIONS[self.precision_parameterisation][1])}
    params = {"es": {"encoder": v_es["params"], "gm": gm}, "eu": v_eu["params"],
              "cls": v_cls["params"], "g": v_g["params"], "d": v_d["params"]}
    stats = {"es": v_es.get("batch_stats", {}), "eu": v_eu.get("batch_stats", {}),
             "cls": {}, "g": v_g.get("batch_stats", {}), "d": v_d["batch_stats"],
             **({"g_sampled": v_g.get("batch_stats", {})}
                if self.sampled_norm == "separate" else {}),
             "moments": {"mean": jnp.zeros((self.num_classes, self.zs_dim)),
                         "second": jnp.ones((self.num_classes, self.zs_dim))}}
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
        opt_state={g: self.tx[g].init(params[g]) for g in self.groups}, rng=ks[6])

  # -- Algorithm 1, lines 2-8
  def gm_objective(self, es_params, stats, x, labels, labelled):
    """L_GM = L_cls + λ_lkd L_lkd (eq. 9) over the labelled examples, and the new statistics."""
    params = {"es": es_params}
    z, s = self.encode_s(params, {"es": stats}, x, train=True)
    mu, lam = self.mixture(params)
    l_cls = masked_mean(gm_classification_loss(z, jnp.maximum(labels, 0), mu, lam), labelled)
    l_lkd = masked_mean(gm_likelihood_loss(z, jnp.maximum(labels, 0), mu, lam), labelled)
    acc = masked_mean((jnp.argmax(class_log_density(z, mu, lam), -1) == labels), labelled)
    loss = l_cls + self.loss.lambda_lkd * l_lkd
    return loss, ({"loss_gm": loss, "loss_gm_cls": l_cls, "loss_gm_lkd": l_lkd,
                   "gm_accuracy": acc}, s)

  def gm_update(self, carry, batch):
    """One GM step (lines 3-8): Encoder^s, μ_c and Σ_c descend L_GM."""
    es_params, es_opt, es_stats = carry
    x, labels, labelled = batch
    grads, (metrics, es_stats) = jax.grad(self.gm_objective, has_aux=True)(
        es_params, es_stats, x, labels, labelled)
    grads = base.pmean(grads, self.axis_name)
    es_params, es_opt = base.apply_updates(self.tx["es"], grads, es_opt, es_params)
    return (es_params, es_opt, es_stats), metrics

  def gm_steps(self, state, x, labels, labelled):
    """The n_gm GM steps of an iteration as one ``lax.scan``; batches [n_gm, b, ...]."""
    carry = (state.params["es"], state.opt_state["es"], state.batch_stats["es"])
    (es_params, es_opt, es_stats), metrics = jax.lax.scan(self.gm_update, carry,
                                                          (x, labels, labelled))
    return state.replace(params={**state.params, "es": es_params},
                         opt_state={**state.opt_state, "es": es_opt},
                         batch_stats={**state.batch_stats, "es": es_stats}), metrics

  # -- Algorithm 1, lines 10-28
  def gradients(self, params, stats, x, labels, labelled, keys):
    """Every group's gradient of lines 24-28 on one batch (before averaging over devices),
    the losses, and the new statistics.

    One forward pass; each group's gradient is a pullback of it with that group's weights,
    so that e.g. the decoder's adversarial gradient reaches the decoder but not the
    encoders (line 24-25 have no GAN term) and x'_f, x'_p are data for D.
    """
    lo = self.loss
    b = x.shape[0]
    eps = jax.vmap(lambda k: jax.random.normal(k, (self.zu_dim + self.zs_dim + self.zu_dim,)))(
        keys)
    eps_u, eps_sp, eps_up = jnp.split(eps, [self.zu_dim, self.zu_dim + self.zs_dim], axis=-1)
    mu, lam = jax.tree_util.tree_map(jax.lax.stop_gradient, self.mixture(params))

    zs, es_pull, s_es = jax.vjp(
        lambda p: self.encode_s({"es": {"encoder": p}}, stats, x, True), params["es"]["encoder"],
        has_aux=True)

    def enc_u(p):
      (mean, logvar), s = self.encode_u({"eu": p}, stats, x, True)
      return (mean, logvar, mean + jnp.exp(0.5 * logvar) * eps_u), s  # line 14
    (mean, logvar, zu), eu_pull, s_eu = jax.vjp(enc_u, params["eu"], has_aux=True)

    # Which class a real or reconstructed input is shown to D as, and x'_p is drawn for:
    # its label, or (unlabelled) the mixture's prediction.
    pred = jnp.argmax(class_log_density(jax.lax.stop_gradient(zs), mu, lam), -1)
    cond = jnp.where(labelled, labels, pred)
    cond_p = sampled_class_labels(keys, cond, self.num_classes, self.sampled_classes)
    zs_p = sample_class_codes(eps_sp, cond_p, mu, lam)  # line 20

    def dec(p, zs_, zu_):
      if self.sampled_norm == "separate":
        x_f_, s = self.decode_fn({"g": p}, stats, zs_, zu_, True)
        x_p_, s_p = self.decode_fn({"g": p}, {"g": self.sampled_stats(stats)}, zs_p, eps_up,
                                   True)
        return (x_f_, x_p_), {"g": s, "g_sampled": s_p}
      out, s = self.decode_fn({"g": p}, stats, jnp.concatenate([zs_, zs_p]),
                              jnp.concatenate([zu_, eps_up]), True)
      return (out[:b], out[b:]), {"g": s}
    (x_f, x_p), dec_pull, s_dec = jax.vjp(dec, params["g"], zs, zu, has_aux=True)

    l_rec, g_xf_rec = jax.value_and_grad(lambda v: jnp.mean(reconstruction_loss(v, x)))(x_f)

    d_in = jnp.concatenate([x, x_f, x_p])
    d_labels = jnp.concatenate([cond, cond, cond_p])
    logits, d_pull, s_d = jax.vjp(
        lambda p, v: self.discriminate({"d": p}, stats, v, d_labels, True), params["d"], d_in,
        has_aux=True)
    split = lambda v: (v[:b], v[b:2 * b], v[2 * b:])
    fake_w, sampled_w = lo.get("hinge_fake_weight", 0.5), lo.get("sampled_gan_weight", 1.0)
    l_d, g_logits_d = jax.value_and_grad(
        lambda v: hinge_discriminator_loss(*split(v), fake_w))(logits)
    l_gd, g_logits_g = jax.value_and_grad(
        lambda v: hinge_generator_loss(*split(v)[1:], sampled_w))(logits)
    g_d, _ = d_pull(g_logits_d)  # x'_f, x'_p are data for D
    _, g_d_in = d_pull(g_logits_g)
    g_g_rec, g_zs_rec, g_zu_rec = dec_pull((g_xf_rec, jnp.zeros_like(x_p)))
    g_g_gan, _, _ = dec_pull((g_d_in[b:2 * b], g_d_in[2 * b:]))

    cls_logits, cls_pull = jax.vjp(
        lambda p, z: base.apply_net(self.adversary, p, {}, z, True)[0], params["cls"], zu)
    l_c, g_lc = jax.value_and_grad(
        lambda v: masked_mean(adversary_loss(v, jnp.maximum(labels, 0)), labelled))(cls_logits)
    l_e, g_le = jax.value_and_grad(
        lambda v: masked_mean(uniform_target_loss(v), labelled))(cls_logits)
    g_cls, _ = cls_pull(g_lc)  # z_u is data for the adversary
    _, g_zu_adv = cls_pull(g_le)

    def lkd(z):
      per = jnp.where(labelled, gm_likelihood_loss(z, jnp.maximum(labels, 0), mu, lam),
                      UNLABELLED_PRIORS[self.unlabelled_prior](z, mu, lam))
      return jnp.mean(per)
    l_lkd, g_zs_lkd = jax.value_and_grad(lkd)(zs)
    l_kl, (g_mean_kl, g_logvar_kl) = jax.value_and_grad(
        lambda m, v: jnp.mean(kl_loss(m, v)), argnums=(0, 1))(mean, logvar)

    (g_es,) = es_pull(lo.rec_weight_es * g_zs_rec + lo.lkd_weight * g_zs_lkd)  # line 24
    (g_eu,) = eu_pull((lo.kl_weight * g_mean_kl, lo.kl_weight * g_logvar_kl,  # line 25
                       lo.rec_weight_eu * g_zu_rec + lo.adv_weight * g_zu_adv))
    tmap = jax.tree_util.tree_map
    g_g = tmap(lambda a, c: lo.rec_weight_g * a + lo.gan_weight * c, g_g_rec, g_g_gan)  # 27
    zeros_gm = tmap(jnp.zeros_like, params["es"]["gm"])
    grads = {"es": {"encoder": g_es, "gm": zeros_gm}, "eu": g_eu, "cls": g_cls, "g": g_g,
             "d": g_d}
    real, rec, samp = split(logits)
    metrics = {"loss_rec": l_rec, "loss_kl": l_kl, "loss_lkd": l_lkd, "loss_adv_cls": l_c,
               "loss_adv_enc": l_e, "loss_d": l_d, "loss_gd": l_gd,
               "adv_accuracy": masked_mean(jnp.argmax(cls_logits, -1) == labels, labelled),
               "d_real": jnp.mean(real), "d_rec": jnp.mean(rec), "d_sampled": jnp.mean(samp)}
    moments = update_class_moments(stats["moments"], zs, labels, labelled,
                                   self.moment_momentum, self.axis_name)
    new_stats = {**stats, "es": s_es, "eu": s_eu, **s_dec, "d": s_d, "moments": moments}
    return grads, metrics, new_stats

  def _split_batch(self, batch):
    x = batch[self.key]
    labels = batch["labels"][self.label_key].astype(jnp.int32)
    labelled = labels >= 0
    if "label_mask" in batch:
      labelled = labelled & batch["label_mask"].astype(bool)
    return x, labels, labelled

  def train_step(self, state: base.TrainState, batch: dict[str, Any], rng: jax.Array):
    """One iteration of Algorithm 1: n_gm GM steps (one ``lax.scan``), then one simultaneous
    update of every group. ``loss.gm_batches='split'`` gives each GM step and the main
    update a batch of their own (the algorithm samples a batch for each): the device's
    batch is cut into n_gm + 1 equal parts; 'same' runs all of them on the whole batch."""
    x, labels, labelled = self._split_batch(batch)
    if self.gm_batches == "split":
      n = x.shape[0] // (self.n_gm + 1)
      if n * (self.n_gm + 1) != x.shape[0]:
        raise ValueError(f"loss.gm_batches='split' needs a per-device batch divisible by "
                         f"n_gm + 1 = {self.n_gm + 1}; got {x.shape[0]}")
      cut = lambda v: v[:self.n_gm * n].reshape((self.n_gm, n) + v.shape[1:])
      gm_batch = (cut(x), cut(labels), cut(labelled))
      x, labels, labelled = x[self.n_gm * n:], labels[self.n_gm * n:], labelled[self.n_gm * n:]
    else:
      rep = lambda v: jnp.broadcast_to(v, (self.n_gm,) + v.shape)
      gm_batch = (rep(x), rep(labels), rep(labelled))
    state, gm_metrics = self.gm_steps(state, *gm_batch)
    keys = base.example_keys(jax.random.fold_in(rng, 1), x.shape[0], self.axis_name)
    grads, metrics, new_stats = self.gradients(state.params, state.batch_stats, x, labels,
                                               labelled, keys)
    grads = base.pmean(grads, self.axis_name)
    new_params, new_opt = base.update_groups(self.tx, grads, state.opt_state, state.params)
    metrics = {**metrics, **{k: v[-1] for k, v in gm_metrics.items()}}
    mu, lam = self.mixture(new_params)
    metrics["gm_sigma_mean"] = jnp.mean(jax.lax.rsqrt(lam))
    metrics = base.pmean(metrics, self.axis_name)
    return state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                         opt_state=new_opt), metrics

  # -- evaluation: pure array functions

  def encode(self, params, stats, inputs: jax.Array) -> jax.Array:
    """[ẑ_s, μ_u]: the label-relevant code and the mean of q(z_u | x) (eval mode)."""
    zs = self.encode_s(params, stats, inputs)[0]
    (mean, _), _ = self.encode_u(params, stats, inputs)
    return jnp.concatenate([zs, mean], axis=-1)

  def encode_sample(self, params, stats, rng: jax.Array, inputs: jax.Array) -> jax.Array:
    """[ẑ_s, z_u] with z_u ~ q(z_u | x) (eval mode); ẑ_s is deterministic."""
    zs = self.encode_s(params, stats, inputs)[0]
    (mean, logvar), _ = self.encode_u(params, stats, inputs)
    zu = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return jnp.concatenate([zs, zu], axis=-1)

  def decode(self, params, stats, code: jax.Array) -> jax.Array:
    return self.decode_fn(params, stats, code[:, :self.zs_dim], code[:, self.zs_dim:])[0]

  def code_parts(self) -> dict[str, slice]:
    return {"z_s": slice(0, self.zs_dim), "z_u": slice(self.zs_dim, self.zs_dim + self.zu_dim)}

  def sampling_gaussians(self, params, stats) -> tuple[jax.Array, jax.Array]:
    """(mean, precision) per class of the Gaussians ``sample`` draws z_s from."""
    if self.class_sampling == "encoded":
      return moment_gaussians(stats["moments"])
    return self.mixture(params)

  def classify(self, params, stats, inputs: jax.Array) -> jax.Array:
    """argmax_c q(c | ẑ_s): the mixture as a classifier."""
    mu, lam = self.mixture(params)
    return jnp.argmax(class_log_density(self.encode_s(params, stats, inputs)[0], mu, lam), -1)

  def sample(self, params, stats, rng: jax.Array, n: int, condition=None) -> jax.Array:
    """n inputs of the classes ``condition`` (an int, or [n] ints; default 0, 1, …, C−1, 0, …):
    z_s ~ N(μ_c, Σ_c), z_u ~ N(0, I), decoded (§4.2); ``model.class_sampling='encoded'``
    draws z_s from the codes' running per-class moments instead."""
    if condition is None:
      labels = jnp.arange(n) % self.num_classes
    else:
      labels = jnp.broadcast_to(jnp.asarray(condition, jnp.int32), (n,))
    k_s, k_u = jax.random.split(rng)
    mu, lam = self.sampling_gaussians(params, stats)
    zs = sample_class_codes(jax.random.normal(k_s, (n, self.zs_dim)), labels, mu, lam)
    zu = jax.random.normal(k_u, (n, self.zu_dim))
    if self.sampled_norm == "separate":
      stats = {**stats, "g": self.sampled_stats(stats)}
    return self.decode_fn(params, stats, zs, zu)[0]

  def sampled_stats(self, stats):
    """The decoder's BatchNorm averages over sampled batches (model.sampled_norm='separate')."""
    if "g_sampled" not in stats:
      raise ValueError("model.sampled_norm='separate' needs the sampled batches' BatchNorm "
                       "averages, which this state has not got: it was trained with 'joint'; "
                       "use model.sampled_norm=joint for it")
    return stats["g_sampled"]

  def inpaint(self, params, stats, x: jax.Array, mask: jax.Array,
              fill: float | None = None) -> dict[str, jax.Array]:
    """§4.5: the corrupted x goes through both encoders (no label is given: z_s comes from
    Encoder^s), the decoder gives x' from (ẑ_s, μ_u), and x^inp = M ⊙ x' + (1 − M) ⊙ x.
    ``mask`` broadcasts against x ([H, W, 1] or [B, H, W, C]), 1 on the corrupted patch.
    Returns the corrupted input, x' and x^inp."""
    corrupted = corrupt(x, mask, self.inpaint_fill if fill is None else fill)
    x_rec = self.decode(params, stats, self.encode(params, stats, corrupted))
    return {"corrupted": corrupted, "reconstruction": x_rec,
            "inpainted": blend(x, x_rec, mask)}

  def eval_images(self, params, stats, images: jax.Array, n: int = 8) -> dict[str, jax.Array]:
    """Class-conditional samples (row c: class c; a column shares its z_u, as Fig. 8/4a),
    input/reconstruction pairs, z_s of row images with z_u of column images, and one
    inpainting grid per pattern (row: an image; columns: masked input | inpainted | original,
    as Fig. 7)."""
    c = self.num_classes
    k_s, k_u = jax.random.split(jax.random.PRNGKey(0))
    mu, lam = self.sampling_gaussians(params, stats)
    labels = jnp.repeat(jnp.arange(c), n)
    zs = sample_class_codes(jax.random.normal(k_s, (c * n, self.zs_dim)), labels, mu, lam)
    zu = jnp.tile(jax.random.normal(k_u, (n, self.zu_dim)), (c, 1))
    samples = self.decode_fn(params, stats, zs, zu)[0].reshape((c, n) + images.shape[1:])
    m = min(n, images.shape[0] // 2)
    x = images[:2 * m]
    code = self.encode(params, stats, x)
    rec = self.decode(params, stats, code)
    rows, cols = code[:m], code[m:2 * m]
    mixed = jnp.concatenate([jnp.repeat(rows[:, :self.zs_dim], m, 0),
                             jnp.tile(cols[:, self.zs_dim:], (m, 1))], -1)
    cells = self.decode(params, stats, mixed).reshape((m, m) + images.shape[1:])
    top = jnp.concatenate([jnp.ones_like(x[:1]), x[m:2 * m]])[None]
    body = jnp.concatenate([x[:m, None], cells], axis=1)
    out = {"class_samples": samples, "reconstruction": jnp.stack([x, rec]),
           "zs_rows_zu_columns": jnp.concatenate([top, body], axis=0)}
    x_in = images[:n]
    for pattern in INPAINT_PATTERNS:
      r = self.inpaint(params, stats, x_in, inpainting_mask(pattern, *images.shape[1:3]))
      out[f"inpaint_{pattern}"] = jnp.stack([r["corrupted"], r["inpainted"], x_in], axis=1)
    return out
