"""Pure functions of diagonal-Gaussian latents and image likelihoods that several methods'
objectives are written in (Ruiz et al. 2019 and the VAE family of its Table 1)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def reparameterise(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
  """z = μ + σ ε, σ = exp(½ log σ²) (Kingma & Welling 2014's reparameterisation)."""
  return mu + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(μ, σ²) || N(0, I)) per example, summed over dimensions: [B]."""
  return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def gaussian_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; μ, diag σ²) per dimension (not summed), broadcasting."""
  return -0.5 * (LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar))


def gaussian_nll(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """−log q(z | x) per example, summed over dimensions: [B]."""
  return -jnp.sum(gaussian_log_density(z, mu, logvar), axis=-1)


def laplace_nll(x_hat: jax.Array, x: jax.Array, scale: float) -> jax.Array:
  """−log Laplace(x; x̂, b) per example, summed over pixels: Σ |x − x̂| / b + D log 2b: [B].
  Ruiz et al. §4.1 use b = λ = 0.01 ("equivalent to the ℓ1-loss")."""
  d = x.reshape(x.shape[0], -1)
  return (jnp.sum(jnp.abs(d - x_hat.reshape(d.shape)), axis=-1) / scale
          + d.shape[1] * math.log(2.0 * scale))
