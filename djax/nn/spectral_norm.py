"""Spectral normalisation (Miyato et al. 2018): layers whose weight is W / σ(W).

σ(W), the largest singular value, is estimated by power iteration. Its left vector ``u``
lives in the ``batch_stats`` collection (the collection djax threads through
``base.apply_net`` as a network's state): in train mode each call runs
``n_power_iterations`` steps from the stored ``u`` and writes the new one back; in eval
mode the stored ``u`` is used as it is and nothing changes. One step per training call is
Miyato's choice: W moves little per optimiser step, so the estimate tracks it.

As in Miyato's code, a convolution kernel [kh, kw, in, out] is normalised as the matrix
[kh·kw·in, out], not by the operator norm of the convolution itself, and ``u``/``v`` are
constants for the gradient (``stop_gradient``): σ's gradient flows through W only.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from djax.nn import conv as conv_lib

STATE = "batch_stats"


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x)), eps))


def power_iteration(w: jax.Array, u: jax.Array, n_steps: int = 1, eps: float = 1e-12):
  """(u, v, σ) after ``n_steps`` power iterations on the matrix ``w`` [m, n] from ``u`` [n].

  ``v = w u / |w u|`` ([m]), ``u = wᵀ v / |wᵀ v|`` ([n]) and σ = vᵀ w u, differentiable in
  ``w`` with u and v held constant. ``n_steps = 0`` evaluates σ at the given ``u``.
  """
  u = jax.lax.stop_gradient(u)
  wc = jax.lax.stop_gradient(w)

  def step(u, _):
    v = l2_normalize(wc @ u, eps)
    return l2_normalize(wc.T @ v, eps), None

  if n_steps:
    u, _ = jax.lax.scan(step, u, None, length=n_steps)
  v = jax.lax.stop_gradient(l2_normalize(wc @ u, eps))
  return u, v, v @ (w @ u)


class _Normalizer(nn.Module):
  """Holds ``u`` for one weight matrix and returns W / σ(W)."""
  n_power_iterations: int = 1
  eps: float = 1e-12

  @nn.compact
  def __call__(self, w: jax.Array, train: bool) -> jax.Array:
    mat = w.reshape(-1, w.shape[-1])
    u = self.variable(STATE, "u",
                      lambda: l2_normalize(jax.random.normal(self.make_rng("params"),
                                                             (mat.shape[-1],), mat.dtype)))
    # At init there is no state to update: leave u as drawn so that init is deterministic
    # in the rng only, whatever ``train`` says.
    steps = self.n_power_iterations if train and not self.is_initializing() else 0
    new_u, _, sigma = power_iteration(mat, u.value, steps, self.eps)
    if steps and self.is_mutable_collection(STATE):
      u.value = new_u
    return w / sigma


class SNDense(nn.Module):
  """``nn.Dense`` with a spectrally normalised kernel."""
  features: int
  use_bias: bool = True
  n_power_iterations: int = 1
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  normalize: bool = True  # False: the same layer without SN (no ``u``), for ablations

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    if self.normalize:
      kernel = _Normalizer(self.n_power_iterations, name="sn")(kernel, train)
    y = x @ kernel
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class SNConv(nn.Module):
  """A 2-D convolution (NHWC, HWIO) with a spectrally normalised kernel; the convolution is
  ``djax.nn.conv.conv`` (its ``impl`` picks the formulation that differentiates fast)."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: str = "SAME"
  use_bias: bool = True
  n_power_iterations: int = 1
  impl: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  normalize: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape)
    if self.normalize:
      kernel = _Normalizer(self.n_power_iterations, name="sn")(kernel, train)
    y = conv_lib.conv(x, kernel, tuple(self.strides), self.padding, impl=self.impl)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class SNEmbed(nn.Module):
  """A class embedding [num_classes, features] with spectral normalisation (the projection
  discriminator's label embedding, Miyato & Koyama 2018)."""
  num_classes: int
  features: int
  n_power_iterations: int = 1
  normalize: bool = True

  @nn.compact
  def __call__(self, labels: jax.Array, train: bool = False) -> jax.Array:
    table = self.param("embedding", nn.initializers.lecun_normal(),
                       (self.num_classes, self.features))
    if self.normalize:
      table = _Normalizer(self.n_power_iterations, name="sn")(table, train)
    return jnp.take(table, labels, axis=0)


__all__ = ("SNDense", "SNConv", "SNEmbed", "power_iteration", "l2_normalize")
