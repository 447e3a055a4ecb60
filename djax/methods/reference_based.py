"""Ruiz, Martinez, Binefa, Verbeek 2019, "Learning disentangled representations with
reference-based variational autoencoders" (``shared/papers/ruiz2019_reference_based_vae.md``),
and the unsupervised symmetric VAE it builds on (Pu et al. 2018).

Unlabelled images x ~ p^u and reference images x^r ~ p^r in which the *target* factors are
constant. The generative model (eq. (1)) is p(x | z, e) = Laplace(G(z, e), λ) with
p(z) = N(0, I), p(e | unlabelled) = N(0, I) and p(e | reference) = δ(e − e_r), e_r a learned
vector; two encoders q(z | x) (common factors) and q(e | x) (target factors), both
diagonal Gaussians (§4.2). ``loss.objective``:

* ``rb_vae`` (§4.2, eq. (3)): the ELBO of both sets, ½ [KL(q(z|x) q(e|x) || p(z) p(e))
  − E log p(x | z, e)] on unlabelled images + ½ [KL(q(z|x^r) || p(z)) − E log p(x^r | z, e_r)]
  on reference ones (App. A.1, eq. (10): the two halves weigh p(y) = ½ each).
* ``srb_vae`` (§4.3, eqs. (4)-(7), App. A.2 Algorithm 1): the symmetric KL by adversarial
  learning. d_ξ(x, z, e) and d_γ(x, z) estimate the log density ratios L_xze and L_xz
  between the encoder's joint q and the generator's joint p; the model (θ, ψ, e_r) minimises
  eq. (6), E_q d_ξ − E_p d_ξ + E_q d_γ − E_p d_γ, and the explicit reconstruction terms of
  Fig. 3 (c)-(f): −log p(x | z, e), −log p(x^r | z^r, e_r), and −log q(ẑ, ê | x̂),
  −log q(ẑ^r | x̂^r) of images generated from the priors. The discriminators are trained by
  logistic regression with the encoder's pairs as class 1 (Algorithm 1, lines 16-18; eq. (7)
  prints the classes the other way round, which would make d estimate −L and eq. (6)
  ascend the divergence). All four networks' updates come from the same parameters in one
  step, "simultaneously optimized" (§4.3).
  ``loss.lambda_kl`` > 0 adds eq. (3)'s analytic KL terms beside them (not the paper's; 0
  by default).
* ``svae`` (Pu et al. 2018, Ruiz et al. §5.2: "an unsupervised version of our method"): one
  code z, no reference branch: d(x, z) on the images, reconstruction of x and of ẑ.
* ``mathieu`` (Ruiz et al. §5.2's baseline: Mathieu et al. 2016 "adapted to our context ... to
  use only pairing information from reference images by removing the reconstruction losses
  for pairs of unlabelled samples"). Mathieu's specified code s is what reference images
  share, so it takes e's place (deterministic: the mean head of q(e | x)); the label is y,
  reference (1) or unlabelled (0). Each step holds two triplets (x1, x1', x2): an unlabelled
  x1 with a reference x2, and a reference x1 with another reference image as x1' and an
  unlabelled x2. Mathieu's Algorithm 1 losses (``specified_unspecified``): x1 from (z1, s1),
  x1 from (z1, s1') for the reference x1 only, Dec(z1, s2) and Dec(z ~ N(0, I), s2) judged as
  images of label y2 by a label-conditioned adversary (the joint discriminator with one-hot
  y as its second input: the same networks as the other rows, §5.2), the KL on z.

Groups: ``model`` = {'enc_z', 'enc_e', 'gen', 'e_ref'} (θ, ψ and e_r) and, for the
symmetric objectives, ``disc`` = {'d_xze', 'd_xz'} (ξ, γ); for ``mathieu`` ``model`` has no
e_r and ``disc`` = {'adv'}. The code is [μ_e, μ_z] (code parts ``e`` and ``z``; s and μ_z
for ``mathieu``); the generator reads [e, z]. Every network is batch-independent (pixel
norm, no BatchNorm).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from djax.methods import base, latents
from djax.methods import specified_unspecified as mathieu
from djax.nn import karras

OBJECTIVES = ("rb_vae", "srb_vae", "svae", "mathieu")


# ----------------------------------------------------------------------------- losses

def rb_vae_loss(nll_u, kl_z, kl_e, nll_r, kl_zr) -> jax.Array:
  """Eq. (3) with App. A.1's ½ weights; every argument per example [B], batch mean."""
  return 0.5 * jnp.mean(nll_u + kl_z + kl_e) + 0.5 * jnp.mean(nll_r + kl_zr)


def density_ratio_objective(d_q_u, d_p_u, d_q_r=None, d_p_r=None) -> jax.Array:
  """Eq. (6) with each log density ratio replaced by its discriminator: E_q d − E_p d over
  the unlabelled pairs, plus the same over the reference pairs when given."""
  out = jnp.mean(d_q_u) - jnp.mean(d_p_u)
  if d_q_r is not None:
    out = out + jnp.mean(d_q_r) - jnp.mean(d_p_r)
  return out


def discriminator_loss(d_q, d_p) -> jax.Array:
  """Algorithm 1, lines 16 and 18, as a loss: −(1/2m) Σ [log σ(d(q pair)) + log(1 − σ(d(p
  pair)))]; encoder pairs are class 1, generated pairs class 0."""
  return 0.5 * (jnp.mean(base.sigmoid_bce(d_q, jnp.ones_like(d_q)))
                + jnp.mean(base.sigmoid_bce(d_p, jnp.zeros_like(d_p))))


# ----------------------------------------------------------------------------- method

class ReferenceBased(base.Method):
  """Rb-VAE, sRb-VAE and sVAE (``loss.objective``); see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m, self.loss = config.model, config.loss
    self.objective = self.loss.objective
    if self.objective not in OBJECTIVES:
      raise ValueError(f"unknown loss.objective {self.objective!r} for method "
                       f"'reference_based'; known: {OBJECTIVES}")
    self.reference = self.objective != "svae"
    self.mathieu = self.objective == "mathieu"
    self.symmetric = self.objective in ("srb_vae", "svae")
    if not self.symmetric and self.loss.get("lambda_kl", 0.0):
      raise ValueError("loss.lambda_kl adds eq. (3)'s KL terms to srb_vae / svae; rb_vae's "
                       "objective is eq. (3), KLs included: set loss.lambda_kl=0")
    self.image_size = int(config.data.image_size)
    self.channels = int(config.data.get("channels", 3))
    karras.check_widths(m.encoder_widths, self.image_size, "model.encoder_widths")
    karras.check_widths(m.generator_widths, self.image_size, "model.generator_widths")
    if self.symmetric or self.mathieu:
      karras.check_widths(m.discriminator_widths, self.image_size, "model.discriminator_widths")
    if config.data.get("pairing") != "reference" and (
        self.reference or m.get("use_reference_images", False)):
      raise ValueError(f"loss.objective={self.objective!r} needs the reference images: set "
                       "data.pairing='reference' (and a dataset with a reference split)")
    self.z_dim = int(m.latent_dim)
    self.e_dim = int(m.get("target_dim", m.latent_dim)) if self.reference else 0
    self.use_reference = bool(m.get("use_reference_images", False)) and not self.reference
    convs = int(m.get("convs_per_block", 1))
    self.enc_z = karras.GaussianEncoder(tuple(m.encoder_widths), self.z_dim, convs)
    self.enc_e = karras.GaussianEncoder(tuple(m.encoder_widths), self.e_dim, convs)
    self.gen = karras.Generator(tuple(m.generator_widths), self.channels, convs)
    disc = lambda: karras.JointDiscriminator(tuple(m.get("discriminator_widths", ())),
                                             int(m.get("discriminator_hidden", 256)),
                                             float(m.get("discriminator_dropout", 0.25)))
    self.d_xze, self.d_xz = disc(), disc()
    # Mathieu's adversary has no dropout on its label input: y is what it must read.
    self.adv = karras.JointDiscriminator(tuple(m.get("discriminator_widths", ())),
                                         int(m.get("discriminator_hidden", 256)), 0.0)
    if self.mathieu and "mathieu" not in self.loss:
      raise ValueError("loss.objective='mathieu' reads its weights from loss.mathieu "
                       "(lambda_rec, lambda_swap, lambda_adv, lambda_adv_prior, lambda_kl, "
                       "real_target): use experiments/reference_based_mnist.py:...,mathieu")
    self.groups = ("model", "disc") if self.symmetric or self.mathieu else ("model",)
    if self.mathieu:
      # Mathieu's s has no prior to draw from: no "sample" capability, so a generation
      # metric asked of this row fails before training (base.require).
      self.sample = None
    self.tx = {g: base.make_optimizer(config.optim[g]) for g in self.groups}

  # -- init
  def init(self, rng, batch: Mapping[str, Any], previous=None) -> base.TrainState:
    del previous
    ks = jax.random.split(rng, 6)
    x = batch["image"]
    b = x.shape[0]
    z, e = jnp.zeros((b, self.z_dim)), jnp.zeros((b, self.e_dim))
    model = {"enc_z": self.enc_z.init(ks[0], x)["params"],
             "gen": self.gen.init(ks[1], jnp.concatenate([e, z], -1))["params"]}
    if self.reference:
      model["enc_e"] = self.enc_e.init(ks[2], x)["params"]
      if not self.mathieu:
        model["e_ref"] = jnp.zeros((self.e_dim,))
    params = {"model": model}
    if self.mathieu:
      params["disc"] = {"adv": self.adv.init(ks[3], x, [jnp.zeros((b, 2))], train=False)["params"]}
    if self.symmetric:
      params["disc"] = {"d_xze": self.d_xze.init(ks[3], x, [z, e], train=False)["params"]}
      if self.reference:
        params["disc"]["d_xz"] = self.d_xz.init(ks[4], x, [z], train=False)["params"]
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                           opt_state={g: self.tx[g].init(params[g]) for g in self.groups},
                           rng=ks[5])

  # -- networks
  def q_z(self, pm, x):
    return self.enc_z.apply({"params": pm["enc_z"]}, x)

  def q_e(self, pm, x):
    return self.enc_e.apply({"params": pm["enc_e"]}, x)

  def generate(self, pm, e, z):
    code = jnp.concatenate([e, z], -1) if self.reference else z
    return self.gen.apply({"params": pm["gen"]}, code)

  def discriminate(self, pd, which, x, lat, rng, train=True):
    net = {"d_xze": self.d_xze, "d_xz": self.d_xz, "adv": self.adv}[which]
    return net.apply({"params": pd[which]}, x, lat, train=train, rngs={"dropout": rng})

  def split_batch(self, batch):
    """(unlabelled images, reference images or None) as the objective reads them."""
    x = batch["image"]
    if self.reference:
      return x, batch["image_ref"]
    if self.use_reference:  # sVAE on the same images as the reference-based rows, no y
      return jnp.concatenate([x, batch["image_ref"]]), None
    return x, None

  def noise(self, rng, n, dim):
    keys = base.example_keys(rng, n, self.axis_name)
    return jax.vmap(lambda k: jax.random.normal(k, (dim,)))(keys)

  # -- the objectives
  def model_objective(self, pm, pd, x, xr, rng):
    """Loss of the model group (θ, ψ, e_r) and what the discriminators' step needs."""
    lo = self.loss
    scale = lo.likelihood_scale
    r = jax.random.split(rng, 10)
    b = x.shape[0]
    mu_z, lv_z = self.q_z(pm, x)
    z = latents.reparameterise(mu_z, lv_z, self.noise(r[0], b, self.z_dim))
    e = jnp.zeros((b, 0))
    kl_e = jnp.zeros((b,))
    if self.reference:
      mu_e, lv_e = self.q_e(pm, x)
      e = latents.reparameterise(mu_e, lv_e, self.noise(r[1], b, self.e_dim))
      kl_e = latents.gaussian_kl(mu_e, lv_e)
      br = xr.shape[0]
      mu_zr, lv_zr = self.q_z(pm, xr)
      zr = latents.reparameterise(mu_zr, lv_zr, self.noise(r[2], br, self.z_dim))
      e_r = jnp.broadcast_to(pm["e_ref"], (br, self.e_dim))
    terms = {}
    if not self.symmetric:
      x_hat = self.generate(pm, jnp.concatenate([e, e_r]), jnp.concatenate([z, zr]))
      nll_u = latents.laplace_nll(x_hat[:b], x, scale)
      nll_r = latents.laplace_nll(x_hat[b:], xr, scale)
      kl_z, kl_zr = latents.gaussian_kl(mu_z, lv_z), latents.gaussian_kl(mu_zr, lv_zr)
      total = rb_vae_loss(nll_u, kl_z, kl_e, nll_r, kl_zr)
      terms.update(loss_nll=jnp.mean(nll_u), loss_nll_ref=jnp.mean(nll_r),
                   loss_kl_z=jnp.mean(kl_z), loss_kl_e=jnp.mean(kl_e),
                   loss_kl_z_ref=jnp.mean(kl_zr), loss_model=total)
      return total, (terms, None)

    # Symmetric: priors' samples (Algorithm 1, lines 9-13), one generator pass for all.
    z_p = self.noise(r[3], b, self.z_dim)
    e_p = self.noise(r[4], b, self.e_dim) if self.reference else jnp.zeros((b, 0))
    if self.reference:
      zr_p = self.noise(r[5], br, self.z_dim)
      x_all = self.generate(pm, jnp.concatenate([e, e_r, e_p, e_r]),
                            jnp.concatenate([z, zr, z_p, zr_p]))
      x_hat, xr_hat = x_all[:b], x_all[b:b + br]
      x_gen, xr_gen = x_all[b + br:2 * b + br], x_all[2 * b + br:]
    else:
      x_all = self.generate(pm, None, jnp.concatenate([z, z_p]))
      x_hat, x_gen = x_all[:b], x_all[b:]
    # Fig. 3 (c)-(d): the images' reconstructions; (e)-(f): the latents of generated images.
    nll_u = jnp.mean(latents.laplace_nll(x_hat, x, scale))
    gen_in = jnp.concatenate([x_gen, xr_gen]) if self.reference else x_gen
    mu_g, lv_g = self.q_z(pm, gen_in)
    nll_lat = jnp.mean(latents.gaussian_nll(z_p, mu_g[:b], lv_g[:b]))
    if self.reference:
      nll_r = jnp.mean(latents.laplace_nll(xr_hat, xr, scale))
      mu_ge, lv_ge = self.q_e(pm, x_gen)
      nll_lat_e = jnp.mean(latents.gaussian_nll(e_p, mu_ge, lv_ge))
      nll_lat_r = jnp.mean(latents.gaussian_nll(zr_p, mu_g[b:], lv_g[b:]))
      d_q_u = self.discriminate(pd, "d_xze", x, [z, e], r[6])
      d_p_u = self.discriminate(pd, "d_xze", x_gen, [z_p, e_p], r[8])
      d_q_r = self.discriminate(pd, "d_xz", xr, [zr], r[7])
      d_p_r = self.discriminate(pd, "d_xz", xr_gen, [zr_p], r[9])
      adv = density_ratio_objective(d_q_u, d_p_u, d_q_r, d_p_r)
      rec = nll_u + nll_r
      lat = nll_lat + nll_lat_e + nll_lat_r
      terms.update(loss_nll_ref=nll_r, loss_latent_e=nll_lat_e, loss_latent_ref=nll_lat_r)
      pairs = {"u": (x, [z, e], x_gen, [z_p, e_p]), "r": (xr, [zr], xr_gen, [zr_p])}
    else:
      d_q_u = self.discriminate(pd, "d_xze", x, [z], r[6])
      d_p_u = self.discriminate(pd, "d_xze", x_gen, [z_p], r[8])
      adv = density_ratio_objective(d_q_u, d_p_u)
      rec, lat = nll_u, nll_lat
      pairs = {"u": (x, [z], x_gen, [z_p])}
    total = adv + lo.get("lambda_rec", 1.0) * rec + lo.get("lambda_latent", 1.0) * lat
    if lo.get("lambda_kl", 0.0):
      # Eq. (3)'s KL terms made explicit beside Fig. 3 (c)-(d)'s reconstructions, the same
      # way: the adversarial estimate of KL(q || p) alone leaves q(e | x) far from p(e).
      kl = jnp.mean(latents.gaussian_kl(mu_z, lv_z) + kl_e)
      if self.reference:
        kl = kl + jnp.mean(latents.gaussian_kl(mu_zr, lv_zr))
      total = total + lo.lambda_kl * kl
      terms.update(loss_kl=kl)
    terms.update(loss_nll=nll_u, loss_latent_z=nll_lat, loss_density_ratio=adv,
                 loss_model=total)
    return total, (terms, jax.lax.stop_gradient(pairs))

  def mathieu_objective(self, pm, pd, x, xr, rng):
    """Mathieu et al.'s generator step (their Algorithm 1) on Ruiz et al.'s two triplets;
    the adversary's parameters enter as constants. Returns (loss, (terms, what the
    adversary's step needs))."""
    lo = self.loss.mathieu
    b, br = x.shape[0], xr.shape[0]
    if b != br:
      raise ValueError(f"loss.objective='mathieu' pairs each unlabelled image with a reference "
                       f"one: the batch has {b} unlabelled and {br} reference images")
    r = jax.random.split(rng, 3)
    x1 = jnp.concatenate([x, xr])
    y1 = jnp.concatenate([jnp.zeros((b,), jnp.int32), jnp.ones((b,), jnp.int32)])
    s1 = self.q_e(pm, x1)[0]
    mu, lv = self.q_z(pm, x1)
    z1 = latents.reparameterise(mu, lv, self.noise(r[0], 2 * b, self.z_dim))
    s_u, s_r = s1[:b], s1[b:]
    # x1' of a reference x1: the next reference image of the batch (same y, same style);
    # an unlabelled x1 has no x1' (Ruiz et al.: no pairs of unlabelled images).
    s_same = jnp.roll(s_r, 1, axis=0)
    x2, y2, s2 = jnp.concatenate([xr, x]), 1 - y1, jnp.concatenate([s_r, s_u])
    z_prior = self.noise(r[1], 2 * b, self.z_dim)
    out = self.generate(pm, jnp.concatenate([s1, s_same, s2, s2]),
                        jnp.concatenate([z1, z1[b:], z1, z_prior]))
    x11, x11s = out[:2 * b], out[2 * b:3 * b]
    x12, x_prior2 = out[3 * b:5 * b], out[5 * b:]
    y2_hot = jax.nn.one_hot(y2, 2)
    adv = lambda im: self.discriminate(pd, "adv", im, [y2_hot], r[2])
    terms = {"loss_rec": mathieu.reconstruction_loss(x11, x1),
             "loss_swap": mathieu.reconstruction_loss(x11s, xr),
             "loss_adv_swap": mathieu.generator_adversarial_loss(adv(x12), lo.real_target),
             "loss_adv_prior": mathieu.generator_adversarial_loss(adv(x_prior2), lo.real_target),
             "loss_kl": mathieu.kl_divergence(mu, lv)}
    total = (lo.lambda_rec * terms["loss_rec"] + lo.lambda_swap * terms["loss_swap"]
             + lo.lambda_adv * terms["loss_adv_swap"]
             + lo.lambda_adv_prior * terms["loss_adv_prior"] + lo.lambda_kl * terms["loss_kl"])
    terms["loss_model"] = total
    return total, (terms, jax.lax.stop_gradient({"real": x2, "fake": x12, "y": y2_hot}))

  def mathieu_adversary_objective(self, pd, pairs, rng):
    """Mathieu's adversary step: x2 real and Dec(z1, s2) fake, both with label y2."""
    k_real, k_fake = jax.random.split(rng)
    real = self.discriminate(pd, "adv", pairs["real"], [pairs["y"]], k_real)
    fake = self.discriminate(pd, "adv", pairs["fake"], [pairs["y"]], k_fake)
    loss = mathieu.adversary_loss(real, fake, self.loss.mathieu.real_target)
    return loss, {"loss_adversary": loss, "adv_real": jnp.mean(jax.nn.sigmoid(real)),
                  "adv_fake": jnp.mean(jax.nn.sigmoid(fake))}

  def disc_objective(self, pd, pairs, rng):
    """Algorithm 1, lines 15-18: each discriminator on its (q pair, p pair), as data."""
    total, out = 0.0, {}
    for i, (branch, (xq, lq, xp, lp)) in enumerate(sorted(pairs.items())):
      which = "d_xze" if branch == "u" else "d_xz"
      d_q = self.discriminate(pd, which, xq, lq, jax.random.fold_in(rng, 2 * i))
      d_p = self.discriminate(pd, which, xp, lp, jax.random.fold_in(rng, 2 * i + 1))
      loss = discriminator_loss(d_q, d_p)
      total = total + loss
      out.update({f"loss_{which}": loss, f"{which}_q": jnp.mean(jax.nn.sigmoid(d_q)),
                  f"{which}_p": jnp.mean(jax.nn.sigmoid(d_p))})
    return total, out

  def gradients(self, params, batch, rng):
    x, xr = self.split_batch(batch)
    k_model, k_disc = jax.random.split(rng)
    model_objective = self.mathieu_objective if self.mathieu else self.model_objective
    disc_objective = self.mathieu_adversary_objective if self.mathieu else self.disc_objective
    g_m, (terms, pairs) = jax.grad(model_objective, has_aux=True)(
        params["model"], params.get("disc"), x, xr, k_model)
    grads = {"model": g_m}
    if "disc" in self.groups:
      g_d, readings = jax.grad(disc_objective, has_aux=True)(params["disc"], pairs, k_disc)
      grads["disc"] = g_d
      terms = {**terms, **readings}
    return grads, terms

  def train_step(self, state: base.TrainState, batch, rng):
    grads, terms = self.gradients(state.params, batch, rng)
    grads = base.pmean(grads, self.axis_name)
    params, opt = base.update_groups(self.tx, grads, state.opt_state, state.params, self.groups)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt),
            base.pmean(terms, self.axis_name))

  # -- evaluation
  def encode(self, params, stats, images):
    """[μ_e, μ_z] (reference-based) or μ_z (sVAE)."""
    del stats
    pm = params["model"]
    mu_z = self.q_z(pm, images)[0]
    return jnp.concatenate([self.q_e(pm, images)[0], mu_z], -1) if self.reference else mu_z

  def code_parts(self):
    if not self.reference:
      return {"z": slice(0, self.z_dim)}
    return {"e": slice(0, self.e_dim), "z": slice(self.e_dim, self.e_dim + self.z_dim)}

  def decode(self, params, stats, code):
    del stats
    pm = params["model"]
    if not self.reference:
      return self.generate(pm, None, code)
    return self.generate(pm, code[:, :self.e_dim], code[:, self.e_dim:])

  def sample(self, params, stats, rng, n, condition=None):
    """Images from the priors: e, z ~ N(0, I); ``condition`` images give their z instead
    (Fig. 4's conditional synthesis)."""
    k_e, k_z = jax.random.split(rng)
    code = jax.random.normal(k_z, (n, self.e_dim + self.z_dim))
    if condition is not None and self.reference:
      z = self.encode(params, stats, condition)[:n, self.e_dim:]
      code = jnp.concatenate([jax.random.normal(k_e, (z.shape[0], self.e_dim)), z], -1)
    return self.decode(params, stats, code)

  def conditional_synthesis_grid(self, params, stats, images, rng, m: int = 8):
    """Fig. 4: row r keeps the z of images[r]; column c is one e ~ N(0, I) shared by the
    whole column; the first column is the image itself: [R, 1 + m, H, W, C]."""
    r = images.shape[0]
    z = self.encode(params, stats, images)[:, self.e_dim:]
    e = jax.random.normal(rng, (m, self.e_dim))
    cells = self.decode(params, stats, jnp.concatenate(
        [jnp.tile(e, (r, 1)), jnp.repeat(z, m, 0)], -1)).reshape((r, m) + images.shape[1:])
    return jnp.concatenate([images[:, None], cells], 1)

  def transfer_grid(self, params, stats, e_sources, z_sources):
    """Fig. 5: cell (r, c) decodes (e of e_sources[c], z of z_sources[r]); e sources along
    the top row, z sources down the left column, a blank corner: [1 + R, 1 + C, ...]."""
    ce = self.encode(params, stats, e_sources)[:, :self.e_dim]
    cz = self.encode(params, stats, z_sources)[:, self.e_dim:]
    r, c = z_sources.shape[0], e_sources.shape[0]
    cells = self.decode(params, stats, jnp.concatenate(
        [jnp.tile(ce, (r, 1)), jnp.repeat(cz, c, 0)], -1)).reshape((r, c) + e_sources.shape[1:])
    top = jnp.concatenate([jnp.ones_like(e_sources[:1]), e_sources])[None]
    return jnp.concatenate([top, jnp.concatenate([z_sources[:, None], cells], 1)])

  def eval_images(self, params, stats, images, n: int = 8):
    n = min(n, images.shape[0] // 2)
    first, second = images[:n], images[n:2 * n]
    code = self.encode(params, stats, images[:2 * n])
    out = {"reconstruction": jnp.stack([images[:2 * n], self.decode(params, stats, code)])}
    if not self.reference:
      out["samples"] = self.sample(params, stats, jax.random.PRNGKey(0), 4 * n).reshape(
          (4, n) + images.shape[1:])
      return out
    if self.mathieu:  # s has no prior and no e_r: the transfer grid is its use
      out["transfer"] = self.transfer_grid(params, stats, first, second)
      return out
    e_r = jnp.broadcast_to(params["model"]["e_ref"], (2 * n, self.e_dim))
    out["as_reference"] = jnp.stack([images[:2 * n], self.decode(
        params, stats, jnp.concatenate([e_r, code[:, self.e_dim:]], -1))])
    out["conditional_synthesis"] = self.conditional_synthesis_grid(
        params, stats, first, jax.random.PRNGKey(0), n)
    out["transfer"] = self.transfer_grid(params, stats, first, second)
    return out
