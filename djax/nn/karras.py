"""Karras et al. (2018)'s building blocks, as Ruiz et al. 2019 (App. A.4, Fig. 7) use them.

Convolutions with a leaky ReLU (slope 0.2) and pixel-wise normalisation ("CN" in Fig. 7),
nearest-neighbour upsampling in the generator and average pooling in the encoders and the
discriminators; tanh on the generator's output (images in [-1, 1]).

No BatchNorm anywhere: pixel-wise normalisation acts on one sample at a time, so every
network here is batch-independent (per-sample gradients, jvps and vmaps are exact).

Widths are a tuple, one entry per resolution: ``(32, 64, 128)`` on a 32x32 image is a
32x32x32 block, a 16x16x64 block, an 8x8x128 block, then pooled to 4x4 for the head. Fig. 7
is a drawing our copy of the paper does not carry; each config says which widths it uses.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from djax.nn.conv import Conv
from djax.nn.spec import flat_init


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Karras et al. 2018 §4.2: each pixel's feature vector scaled to unit root mean square."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def avg_pool2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour upsampling by 2 (a broadcast, cheap to differentiate)."""
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(
      b, 2 * h, 2 * w, c)


class Block(nn.Module):
  """Conv 3x3 -> leaky ReLU 0.2 -> pixel norm (``convs`` times)."""
  features: int
  convs: int = 1
  norm: bool = True

  @nn.compact
  def __call__(self, x):
    init = flat_init(nn.initializers.lecun_normal())
    for i in range(self.convs):
      x = Conv(self.features, (3, 3), (1, 1), padding="SAME", kernel_init=init,
               name=f"conv{i}")(x)
      x = nn.leaky_relu(x, 0.2)
      if self.norm:
        x = pixel_norm(x)
    return x


class ImageTrunk(nn.Module):
  """Blocks at decreasing resolution, average pooling after each: [B, H, W, C] -> [B, F]."""
  widths: Sequence[int]
  convs: int = 1
  norm: bool = True

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = avg_pool2(Block(w, self.convs, self.norm, name=f"block{i}")(x))
    return x.reshape(x.shape[0], -1)


class GaussianEncoder(nn.Module):
  """q(z | x) = N(μ(x), diag σ²(x)): the image trunk, then one FC layer to (μ, log σ²)."""
  widths: Sequence[int]
  latent_dim: int
  convs: int = 1

  @nn.compact
  def __call__(self, x):
    h = ImageTrunk(self.widths, self.convs, name="trunk")(x)
    out = nn.Dense(2 * self.latent_dim, name="head")(h)
    return out[:, :self.latent_dim], out[:, self.latent_dim:]


class Generator(nn.Module):
  """G(code): FC to a 4x4 map of ``widths[0]`` channels, then per entry of ``widths`` a
  nearest-neighbour upsampling and a block, then a 1x1 conv to the image's channels and tanh.
  ``len(widths)`` upsamplings: 4 · 2^len(widths) pixels a side."""
  widths: Sequence[int]
  channels: int
  convs: int = 1

  @nn.compact
  def __call__(self, code):
    x = nn.Dense(4 * 4 * self.widths[0], name="fc")(code)
    x = pixel_norm(nn.leaky_relu(x.reshape(x.shape[0], 4, 4, self.widths[0]), 0.2))
    for i, w in enumerate(self.widths):
      x = Block(w, self.convs, name=f"block{i}")(upsample2(x))
    x = Conv(self.channels, (1, 1), (1, 1), padding="SAME", name="to_rgb")(x)
    return jnp.tanh(x)


class JointDiscriminator(nn.Module):
  """d(x, latents...): a logit for an (image, codes) pair, as ALI / sVAE / sRb-VAE need.

  The image goes through a trunk (no normalisation: a discriminator's features should not be
  rescaled per pixel, Karras et al. use none there either) to ``hidden`` features; the codes
  through one FC layer to ``hidden``; the joint head is FC(hidden) -> FC(1) on their
  concatenation. Ruiz et al. App. A.4: dropout (rate ``dropout``, 0.25) on the image and
  latent inputs of that head, "randomly set to zero the inputs corresponding to latent
  variables and images of the last fully-connected layer", so the discriminator cannot
  ignore either. The head is two layers, not one: a single linear layer over [f(x), z]
  is a(x) + b·z and cannot tell whether z belongs to x.
  """
  widths: Sequence[int]
  hidden: int = 256
  dropout: float = 0.25

  @nn.compact
  def __call__(self, x, latents: Sequence[jax.Array], train: bool = True):
    hx = nn.leaky_relu(nn.Dense(self.hidden, name="image_fc")(
        ImageTrunk(self.widths, norm=False, name="trunk")(x)), 0.2)
    hz = nn.leaky_relu(nn.Dense(self.hidden, name="latent_fc")(
        jnp.concatenate(list(latents), axis=-1)), 0.2)
    h = jnp.concatenate([hx, hz], axis=-1)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.leaky_relu(nn.Dense(self.hidden, name="joint_fc")(h), 0.2)
    return nn.Dense(1, name="logit")(h)[:, 0]


def check_widths(widths: Sequence[int], image_size: int, what: str) -> None:
  """One line when the trunk or the generator cannot meet the configured image size."""
  n = len(widths)
  if not n or 4 * 2 ** n != image_size:
    raise ValueError(f"{what} widths {tuple(widths)} make {4 * 2 ** n}x{4 * 2 ** n} images but "
                     f"data.image_size is {image_size}; use log2(image_size) - 2 widths")
