"""Lezama 2019's convolutional autoencoders (``shared/papers/lezama2019_jacobian_supervision.md``)
and how a student grows out of its teacher.

Every encoder maps images to a flat code ``[B, k + d]`` whose first k units are the
specified part y and the rest the nuisance part z; every decoder maps such a code back to an
image. So the losses and the three Jacobian estimators of
:mod:`djax.methods.jacobian_supervision` (functions of ``decoder(code)``) work unchanged on
the MLP, the SVHN net and the CelebA net.

**Decoders are per-sample functions** (no train-mode BatchNorm): ``jax.jvp`` of a batched
decoder is then each sample's own Jacobian-vector product, which the ``jvp`` and ``full``
estimators rely on. Where the paper's decoder has BatchNorm (CelebA, A.2), djax's has none
by default (``decoder_norm='none'``); ``'layer'`` (LayerNorm over H, W, C) is a per-sample
alternative. Train-mode BatchNorm would couple the samples of a batch and is refused.
Encoders keep the paper's BatchNorm (train mode while training; only the decoder is
differentiated along y).

SVHN (Appendix A.5), :class:`SVHNEncoder` / :class:`SVHNDecoder`:

    "C(64) → C(128) → C(256) → C(k+d) → BatchNorm. Here, C(n) represents a convolutional
    block with n 3×3 filters and zero padding, ReLU activation function and average pooling."
    "D(256) → D(128) → D(64) → D(3). Here, D(n) represents a ×2 upconvolution block with
    n 4×4 filters and zero padding, ReLU activation function and average pooling."

  The code has k + d numbers and the decoder reaches 32×32 in four blocks, which fixes what
  the paper leaves open: C(k+d) is a 3×3 convolution averaged over its whole 4×4 map (global
  average pooling, no ReLU: it is the output layer, like the MLP's FC(64, k+d)), then
  BatchNorm without scale and offset (as the MLP's, the authors' ``affine=False``), at every
  stage (A.5 gives it as part of the architecture). D(256) is the DCGAN projection, a 4×4
  transposed convolution 1×1 → 4×4 (valid padding); D(128), D(64), D(3) double the size
  (4×4, stride 2, padding 1); D(3) ends in tanh as the MLP decoder. "Average pooling" in
  the D blocks is read as a copy of the C blocks' text and left out.

CelebA (§4.2, Appendix A.2), :class:`FaceEncoder` / :class:`FaceDecoder`:

    "convolutional blocks of Convolution-BatchNorm-ReLU layers ... kernels all of size 4×4
    with padding of 1, and we use Leaky ReLU with slope 0.2"
    "C(16) → C(32) → C(64) → C(128) → C(256) → C(512) → C(512+k)"
    "D(512+k) → D(512+k) → D(256+k) → D(128+k) → D(64+k) → D(32+k) → D(16+k), where D(f)
    indicates a deconvolutional block doing ×2 upsampling (using transposed convolutions,
    BatchNorm and ReLU) with f input channels."
    "z ... a feature map of 512 channels of size 2×2 ... we concatenate an additional k = 40
    channels. At the output of the encoder the values of these 40 channels are averaged"
    "the attribute prediction y is concatenated as constant channels to every feature map
    of the decoder."

  Encoder: stride-2 4×4 convolutions (padding 1), BatchNorm, LeakyReLU 0.2 in every block,
  the last included (the authors' code); the last block has ``z_channels + k`` channels, the
  last k averaged over space are y, the first ``z_channels`` (flattened H, W, C) are z. At
  256×256 (seven blocks) z is 2×2×512 = 2048. Decoder: before every block y is tiled over
  the feature map and concatenated (so block i sees f_i + k input channels); stride-2 4×4
  transposed convolutions (padding 1, djax's fast :class:`~djax.nn.conv_transpose.ConvTranspose`),
  ReLU, and tanh after the last (3 channels). The student (A.2.1) widens C(512+k) to
  C(1024+k) / C(2048+k) and D(512+k) to D(1024+k) / D(2048+k): ``z_channels`` 1024 / 2048.
  (The authors' code leaves y out of the last two decoder blocks; djax follows the paper.)
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from djax.nn.conv import Conv
from djax.nn.conv_transpose import ConvTranspose
from djax.nn.spec import flat_init

BN_EPS = 1e-5  # torch's BatchNorm eps
DECODER_NORMS = ("none", "layer")
_KERNEL_INIT = flat_init(nn.initializers.lecun_normal())
_PAD1 = ((1, 1), (1, 1))  # torch padding=1 of a 4×4, stride-2 convolution
_TPAD1 = ((2, 2), (2, 2))  # torch ConvTranspose2d(k=4, s=2, padding=1): k − 1 − 1 on each side


def check_decoder_norm(norm: str) -> None:
  if norm == "batch":
    raise ValueError("decoder_norm='batch' (train-mode BatchNorm) couples the samples of a "
                     "batch, so jax.jvp of the decoder would not be per-sample; use 'none' "
                     "or the per-sample 'layer'")
  if norm not in DECODER_NORMS:
    raise ValueError(f"unknown decoder_norm {norm!r}; choose one of {DECODER_NORMS}")


def _decoder_norm(kind: str, name: str):
  if kind == "layer":
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)
  return lambda x: x


# ----------------------------------------------------------------------------- SVHN

class SVHNEncoder(nn.Module):
  """C(64) → C(128) → C(256) → C(k+d) → BatchNorm (A.5; see the module docstring)."""
  code_size: int
  channels: Sequence[int] = (64, 128, 256)
  output_bn: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x
    for i, c in enumerate(self.channels):
      h = Conv(c, (3, 3), padding="SAME", kernel_init=_KERNEL_INIT, name=f"conv{i}")(h)
      h = nn.avg_pool(nn.relu(h), (2, 2), (2, 2))
    h = Conv(self.code_size, (3, 3), padding="SAME", kernel_init=_KERNEL_INIT, name="code")(h)
    h = jnp.mean(h, axis=(1, 2))  # global average pooling: the code is k + d numbers
    if self.output_bn:
      h = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                       momentum=0.9, epsilon=BN_EPS, axis_name=self.axis_name if train else None,
                       name="BatchNorm_0")(h)
    return h


class SVHNDecoder(nn.Module):
  """D(256) → D(128) → D(64) → D(3), tanh (A.5). No normalisation: per-sample."""
  image_shape: tuple[int, int, int] = (32, 32, 3)
  channels: Sequence[int] = (256, 128, 64)

  @nn.compact
  def __call__(self, code):
    size, _, out_c = self.image_shape
    n_up = len(self.channels)  # stride-2 blocks after the projection (the last is D(3))
    start = size // 2 ** n_up
    if start * 2 ** n_up != size or start < 1:
      raise ValueError(f"SVHNDecoder with {len(self.channels)} hidden blocks cannot make "
                       f"{size}x{size} images")
    h = code[:, None, None, :]
    # D(256): the projection 1×1 → start×start (4×4 at 32×32).
    h = nn.relu(ConvTranspose(self.channels[0], (start, start), (1, 1), padding="VALID",
                              kernel_init=_KERNEL_INIT, name="deconv0")(h))
    outs = tuple(self.channels[1:]) + (out_c,)
    for i, c in enumerate(outs):
      h = ConvTranspose(c, (4, 4), (2, 2), padding=_TPAD1, kernel_init=_KERNEL_INIT,
                        name=f"deconv{i + 1}")(h)
      h = jnp.tanh(h) if i == len(outs) - 1 else nn.relu(h)
    return h


# ----------------------------------------------------------------------------- CelebA

def face_code_shape(image_size: int, num_blocks: int, z_channels: int) -> tuple[int, int, int]:
  """(h, w, c) of the z feature map of a FaceEncoder with ``num_blocks`` stride-2 blocks."""
  s = image_size // 2 ** num_blocks
  if s * 2 ** num_blocks != image_size or s < 1:
    raise ValueError(f"{num_blocks} stride-2 blocks cannot encode {image_size}x{image_size} "
                     f"images to a whole feature map; change model.encoder_channels")
  return (s, s, z_channels)


class FaceEncoder(nn.Module):
  """C(c_1) → … → C(c_n) → C(z_channels + k), each 4×4 stride 2, BatchNorm, LeakyReLU 0.2;
  returns the code [y (k, the last k channels averaged over space), z (flattened)]."""
  channels: Sequence[int]
  z_channels: int
  num_attributes: int
  axis_name: str | None = None
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x
    widths = tuple(self.channels) + (self.z_channels + self.num_attributes,)
    for i, c in enumerate(widths):
      # No conv bias: the BatchNorm that follows removes it.
      h = Conv(c, (4, 4), (2, 2), padding=_PAD1, use_bias=False, kernel_init=_KERNEL_INIT,
                  name=f"conv{i}")(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPS,
                       axis_name=self.axis_name if train else None, name=f"bn{i}")(h)
      h = nn.leaky_relu(h, self.negative_slope)
    z, y = h[..., :self.z_channels], h[..., self.z_channels:]
    return jnp.concatenate([jnp.mean(y, axis=(1, 2)), z.reshape(z.shape[0], -1)], axis=-1)


class FaceDecoder(nn.Module):
  """D(z_channels + k) → D(c_1 + k) → … → D(c_n + k) (f input channels each, y tiled into
  every block), ×2 transposed convolutions, ReLU; tanh after the last. ``channels`` are the
  hidden blocks' outputs (512, 256, …, 16); the last block outputs the image channels."""
  image_shape: tuple[int, int, int]
  channels: Sequence[int]
  z_channels: int
  num_attributes: int
  norm: str = "none"

  @nn.compact
  def __call__(self, code):
    check_decoder_norm(self.norm)
    k = self.num_attributes
    outs = tuple(self.channels) + (self.image_shape[-1],)
    zs = face_code_shape(self.image_shape[0], len(outs), self.z_channels)
    b = code.shape[0]
    y, h = code[:, :k], code[:, k:].reshape((b,) + zs)
    for i, c in enumerate(outs):
      tiled = jnp.broadcast_to(y[:, None, None, :], h.shape[:3] + (k,))
      h = jnp.concatenate([h, tiled], axis=-1)
      h = ConvTranspose(c, (4, 4), (2, 2), padding=_TPAD1, kernel_init=_KERNEL_INIT,
                        name=f"deconv{i}")(h)
      if i == len(outs) - 1:
        h = jnp.tanh(h)
      else:
        h = nn.relu(_decoder_norm(self.norm, f"norm{i}")(h))
    return h


# ----------------------------------------------------------------------------- growth
# jnp throughout: growth runs inside ``jax.jit(method.init)`` with a traced key.

def _copy(tree):
  return {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}


def insert(a, at: int, new, axis: int):
  """``new`` inserted into ``a`` before index ``at`` along ``axis``."""
  a = jnp.asarray(a)
  axis = axis % a.ndim
  lo = jax.lax.slice_in_dim(a, 0, at, axis=axis)
  hi = jax.lax.slice_in_dim(a, at, a.shape[axis], axis=axis)
  return jnp.concatenate([lo, jnp.asarray(new, a.dtype), hi], axis=axis)


def grow_output_channels(layer: dict, at: int, n: int, rng) -> dict:
  """A conv layer with ``n`` fresh (LeCun-normal) output channels inserted at ``at``, zero
  bias for them."""
  w = jnp.asarray(layer["kernel"])
  out = {"kernel": insert(w, at, _KERNEL_INIT(rng, w.shape[:-1] + (n,), w.dtype), -1)}
  if "bias" in layer:
    b = jnp.asarray(layer["bias"])
    out["bias"] = insert(b, at, jnp.zeros(n, b.dtype), 0)
  return out


def grow_input_channels(layer: dict, at: int, n: int) -> dict:
  """A conv / transposed-conv layer with ``n`` zero input channels inserted at ``at``: the
  output is unchanged whatever the new inputs carry."""
  w = jnp.asarray(layer["kernel"])
  zeros = jnp.zeros(w.shape[:-2] + (n, w.shape[-1]), w.dtype)
  return {**layer, "kernel": insert(w, at, zeros, -2)}


def grow_batchnorm(params: dict | None, stats: dict, at: int, n: int):
  """BatchNorm (params, stats) with ``n`` identity channels inserted at ``at``: scale 1,
  offset 0, running mean 0, running variance 1."""
  new_stats = {"mean": insert(stats["mean"], at, jnp.zeros(n), 0),
               "var": insert(stats["var"], at, jnp.ones(n), 0)}
  new_params = None
  if params:
    new_params = dict(params)
    if "scale" in params:
      new_params["scale"] = insert(params["scale"], at, jnp.ones(n), 0)
    if "bias" in params:
      new_params["bias"] = insert(params["bias"], at, jnp.zeros(n), 0)
  return new_params, new_stats


def grow_svhn(ae: dict, enc_stats: dict, rng, new_units: int):
  """The SVHN student's initial (autoencoder params, encoder stats): the teacher's, plus
  ``new_units`` code units appended at the end: fresh output channels of C(k+d), identity
  BatchNorm statistics for them, zero input rows of D(256), so the student's decoder output
  equals the teacher's at the start."""
  enc, dec = _copy(ae["encoder"]), _copy(ae["decoder"])
  code_size = jnp.shape(enc["code"]["kernel"])[-1]
  enc["code"] = grow_output_channels(enc["code"], code_size, new_units, rng)
  stats = _copy(enc_stats or {})
  if "BatchNorm_0" in stats:
    _, stats["BatchNorm_0"] = grow_batchnorm(None, stats["BatchNorm_0"], code_size, new_units)
  dec["deconv0"] = grow_input_channels(dec["deconv0"], code_size, new_units)
  return {"encoder": enc, "decoder": dec}, stats


def grow_face(ae: dict, enc_stats: dict, rng, z_channels: int, new_z_channels: int):
  """The CelebA student's initial (params, encoder stats) from its teacher (§4.2.2: "appending
  new convolutional filters to the output of the encoder and the input of the decoder ...
  initialize the weights of the student with the weights of the teacher wherever possible").

  The last encoder block gets ``new_z_channels − z_channels`` fresh filters after the old z
  channels (y stays the last k), with identity BatchNorm; the first decoder block gets zero
  input rows for them, so at the start the student decodes any code as the teacher did."""
  n = new_z_channels - z_channels
  if n <= 0:
    raise ValueError(f"a student must have more z channels than its teacher ({z_channels}), "
                     f"got {new_z_channels}")
  enc, dec = _copy(ae["encoder"]), _copy(ae["decoder"])
  stats = _copy(enc_stats)
  last = len([k for k in enc if k.startswith("conv")]) - 1
  enc[f"conv{last}"] = grow_output_channels(enc[f"conv{last}"], z_channels, n, rng)
  enc[f"bn{last}"], stats[f"bn{last}"] = grow_batchnorm(enc[f"bn{last}"], stats[f"bn{last}"],
                                                        z_channels, n)
  dec["deconv0"] = grow_input_channels(dec["deconv0"], z_channels, n)
  return {"encoder": enc, "decoder": dec}, stats
