"""The unsupervised VAE family of Ruiz et al. 2019's Table 1, with the networks of that paper.

One encoder q(z | x) = N(μ, σ²) and one generator p(x | z) = Laplace(G(z), λ) (Ruiz et al.
§4.1, §5.2: "we have developed our own implementation for all the evaluated methods in
order to use the same network architectures and hyper-parameters"). ``loss.objective``:

* ``vae``        Kingma & Welling 2014: E[−log p(x|z)] + KL(q(z|x) || p(z)).
* ``beta_vae``   Higgins et al. 2017: the KL weighted by β (``loss.beta``).
* ``beta_tcvae`` Chen et al. 2018, eq. (2) and §4.1: KL split into index-code mutual
  information, total correlation and dimension-wise KL, weighted α, β, γ, estimated on the
  minibatch (minibatch-weighted sampling, eq. (5), or stratified sampling, App. C.1).
* ``dip_vae_i``, ``dip_vae_ii`` Kumar et al. 2018, eqs. (6)-(7): the VAE plus
  λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)², C = Cov[μ(x)] (I) or
  Cov[μ(x)] + E[diag σ²(x)] (II, the covariance of q(z)).

The regularisation weight Ruiz et al. sweep over [1, 50] is β for β-VAE and β-TCVAE and λ_od
for DIP-VAE (λ_d = 10 λ_od for I, λ_d = λ_od for II: Kumar et al. §5's settings).

With ``model.use_reference_images`` the batch is the unlabelled and the reference images
together (the ``reference`` pairing), the images the reference-based models see, without
the information of which is which.

Batch statistics (the total-correlation estimate and DIP's covariance) are taken over each
device's part of the batch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from djax.methods import base, latents
from djax.nn import karras

OBJECTIVES = ("vae", "beta_vae", "beta_tcvae", "dip_vae_i", "dip_vae_ii")
TC_ESTIMATORS = ("mws", "mss")


# ----------------------------------------------------------------------------- losses

def pairwise_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """[i, j, d] = log q(z_i,d | x_j): every sample's density under every posterior."""
  return latents.gaussian_log_density(z[:, None, :], mu[None], logvar[None])


def stratified_log_weights(batch: int, dataset_size: int) -> jax.Array:
  """log of minibatch stratified sampling's importance weights (Chen et al. App. C.1):
  row i weighs its own posterior 1/N, one other (the next, cyclically) (N − M)/(N M) and
  the rest 1/M, M = batch − 1; each row sums to 1."""
  n, m = float(dataset_size), float(batch - 1)
  eye = jnp.eye(batch)
  nxt = jnp.roll(eye, 1, axis=1)
  w = eye / n + nxt * (n - m) / (n * m) + (1.0 - eye - nxt) / m
  return jnp.log(w)


def tc_decomposition(z: jax.Array, mu: jax.Array, logvar: jax.Array, dataset_size: int,
                     estimator: str = "mws") -> dict[str, jax.Array]:
  """Chen et al. 2018's decomposition of E[KL(q(z|x) || p(z))], from a minibatch:

  mutual information      E[log q(z|x) − log q(z)]
  total correlation       E[log q(z) − Σ_d log q(z_d)]
  dimension-wise KL       E[Σ_d log q(z_d) − log p(z)]

  ``mws`` (eq. (5)): log q(z_i) ≈ log Σ_j q(z_i | x_j) − log(N M), and the same per
  dimension for the marginals; its log densities are offset by about −log N when the
  posteriors overlap, a constant that leaves the gradients alone. ``mss``: the same sums
  with :func:`stratified_log_weights`, an estimate of q(z) = (1/N) Σ_n q(z | x_n) itself.
  """
  if estimator not in TC_ESTIMATORS:
    raise ValueError(f"unknown total-correlation estimator {estimator!r}; use one of "
                     f"{TC_ESTIMATORS}")
  b = z.shape[0]
  log_qzx = jnp.sum(latents.gaussian_log_density(z, mu, logvar), axis=-1)
  log_pz = jnp.sum(latents.gaussian_log_density(z, 0.0, 0.0), axis=-1)
  pair = pairwise_log_density(z, mu, logvar)  # [i, j, d]
  if estimator == "mws":
    offset = math.log(b * dataset_size)
    log_qz = jax.nn.logsumexp(pair.sum(-1), axis=1) - offset
    log_prod = jnp.sum(jax.nn.logsumexp(pair, axis=1) - offset, axis=-1)
  else:
    lw = stratified_log_weights(b, dataset_size)
    log_qz = jax.nn.logsumexp(lw + pair.sum(-1), axis=1)
    log_prod = jnp.sum(jax.nn.logsumexp(lw[:, :, None] + pair, axis=1), axis=-1)
  return {"mutual_information": jnp.mean(log_qzx - log_qz),
          "total_correlation": jnp.mean(log_qz - log_prod),
          "dimension_kl": jnp.mean(log_prod - log_pz)}


def dip_covariance(mu: jax.Array, logvar: jax.Array, kind: str) -> jax.Array:
  """Kumar et al. 2018: Cov_p(x)[μ(x)] (DIP-VAE-I, eq. (6)) or, for II (eq. (7)), the
  covariance of q(z) = E_p(x)[diag σ²(x)] + Cov_p(x)[μ(x)], over the batch: [D, D]."""
  centred = mu - jnp.mean(mu, axis=0, keepdims=True)
  cov = centred.T @ centred / mu.shape[0]
  if kind == "ii":
    cov = cov + jnp.diag(jnp.mean(jnp.exp(logvar), axis=0))
  elif kind != "i":
    raise ValueError(f"DIP-VAE kind is 'i' or 'ii', not {kind!r}")
  return cov


def dip_penalty(cov: jax.Array, lambda_od: float, lambda_d: float) -> jax.Array:
  """λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii − 1)²."""
  diag = jnp.diagonal(cov)
  off = cov - jnp.diag(diag)
  return lambda_od * jnp.sum(jnp.square(off)) + lambda_d * jnp.sum(jnp.square(diag - 1.0))


def objective_terms(loss_cfg, x, x_hat, z, mu, logvar) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The total loss of ``loss_cfg.objective`` and its named terms, batch means."""
  kind = loss_cfg.objective
  nll = jnp.mean(latents.laplace_nll(x_hat, x, loss_cfg.likelihood_scale))
  kl = jnp.mean(latents.gaussian_kl(mu, logvar))
  terms = {"loss_nll": nll, "loss_kl": kl}
  if kind == "vae":
    total = nll + kl
  elif kind == "beta_vae":
    total = nll + loss_cfg.beta * kl
  elif kind == "beta_tcvae":
    tc = tc_decomposition(z, mu, logvar, int(loss_cfg.dataset_size),
                          loss_cfg.get("tc_estimator", "mws"))
    terms.update({f"loss_{k}": v for k, v in tc.items()})
    total = (nll + loss_cfg.get("alpha", 1.0) * tc["mutual_information"]
             + loss_cfg.beta * tc["total_correlation"]
             + loss_cfg.get("gamma", 1.0) * tc["dimension_kl"])
  elif kind in ("dip_vae_i", "dip_vae_ii"):
    part = kind.rsplit("_", 1)[1]
    lambda_od = float(loss_cfg.dip_lambda_od)
    lambda_d = float(loss_cfg.get("dip_lambda_d") or (10.0 if part == "i" else 1.0) * lambda_od)
    terms["loss_dip"] = dip_penalty(dip_covariance(mu, logvar, part), lambda_od, lambda_d)
    total = nll + kl + terms["loss_dip"]
  else:
    raise ValueError(f"unknown loss.objective {kind!r}; known: {OBJECTIVES}")
  terms["loss_total"] = total
  return total, terms


# ----------------------------------------------------------------------------- method

class VaeFamily(base.Method):
  """VAE, β-VAE, β-TCVAE, DIP-VAE-I/II with Ruiz et al.'s networks; one group ``vae``
  (encoder and generator). The code is μ(x), ``model.latent_dim`` wide."""

  groups = ("vae",)

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m, self.loss = config.model, config.loss
    if self.loss.objective not in OBJECTIVES:
      raise ValueError(f"unknown loss.objective {self.loss.objective!r} for method "
                       f"'vae_family'; known: {OBJECTIVES}")
    self.image_size = int(config.data.image_size)
    self.channels = int(config.data.get("channels", 3))
    karras.check_widths(m.encoder_widths, self.image_size, "model.encoder_widths")
    karras.check_widths(m.generator_widths, self.image_size, "model.generator_widths")
    self.latent_dim = int(m.latent_dim)
    self.use_reference = bool(m.get("use_reference_images", False))
    self.encoder = karras.GaussianEncoder(tuple(m.encoder_widths), self.latent_dim,
                                          int(m.get("convs_per_block", 1)))
    self.generator = karras.Generator(tuple(m.generator_widths), self.channels,
                                      int(m.get("convs_per_block", 1)))
    self.tx = {"vae": base.make_optimizer(config.optim.vae)}

  def images(self, batch):
    if self.use_reference:
      if "image_ref" not in batch:
        raise ValueError("model.use_reference_images needs data.pairing='reference'")
      return jnp.concatenate([batch["image"], batch["image_ref"]])
    return batch["image"]

  def init(self, rng, batch: Mapping[str, Any], previous=None) -> base.TrainState:
    del previous
    k_enc, k_gen, k_state = jax.random.split(rng, 3)
    x = batch["image"]
    params = {"vae": {
        "encoder": self.encoder.init(k_enc, x)["params"],
        "generator": self.generator.init(k_gen, jnp.zeros((x.shape[0], self.latent_dim)))[
            "params"]}}
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                           opt_state={"vae": self.tx["vae"].init(params["vae"])}, rng=k_state)

  def objective(self, p, x, eps):
    mu, logvar = self.encoder.apply({"params": p["encoder"]}, x)
    z = latents.reparameterise(mu, logvar, eps)
    x_hat = self.generator.apply({"params": p["generator"]}, z)
    return objective_terms(self.loss, x, x_hat, z, mu, logvar)

  def train_step(self, state: base.TrainState, batch, rng):
    x = self.images(batch)
    keys = base.example_keys(rng, x.shape[0], self.axis_name)
    eps = jax.vmap(lambda k: jax.random.normal(k, (self.latent_dim,)))(keys)
    grads, terms = jax.grad(self.objective, has_aux=True)(state.params["vae"], x, eps)
    grads = base.pmean({"vae": grads}, self.axis_name)
    params, opt = base.update_groups(self.tx, grads, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt),
            base.pmean(terms, self.axis_name))

  def encode(self, params, stats, images):
    del stats
    return self.encoder.apply({"params": params["vae"]["encoder"]}, images)[0]

  def decode(self, params, stats, code):
    del stats
    return self.generator.apply({"params": params["vae"]["generator"]}, code)

  def sample(self, params, stats, rng, n, condition=None):
    del condition  # an unconditional model
    return self.decode(params, stats, jax.random.normal(rng, (n, self.latent_dim)))

  def eval_images(self, params, stats, images, n: int = 8):
    x = images[:n]
    return {"reconstruction": jnp.stack([x, self.decode(params, stats,
                                                        self.encode(params, stats, x))]),
            "samples": self.sample(params, stats, jax.random.PRNGKey(0), 4 * n).reshape(
                (4, n) + x.shape[1:])}
