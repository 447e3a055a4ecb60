"""Networks built from the layer-spec strings the papers print.

Hu et al. 2018 (Table 1) describe every network as a dash-separated string such as
``c64k3s2-c128k3s2-c256k3s2-f``. One parser turns such a string into a list of
:class:`Layer` records and :class:`SpecNet` applies them, so a config can carry the
paper's own notation and the network follows it exactly.

Grammar (one token per layer)::

    c{C}[k{K}][s{S}]   convolution, C output channels, kernel K (default 1), stride S (default 1), SAME padding
    d{C}[k{K}][s{S}]   transposed convolution; stride 1 pads VALID (a 1x1 input grows to KxK, the
                        paper's projection layer ``d512k4``), stride > 1 pads SAME (size x S)
    f[{N}]             fully connected with N units; a bare ``f`` takes its size from the caller
                        (``SpecNet.out_features``): the code size, 1 discriminator logit, n mask bits
    p                  max pooling, kernel 3, stride 2 (the table's convention), SAME padding
    u                  nearest-neighbour upsampling by 2
    r({H},{W},{C})     reshape a vector to an H x W x C feature map

After each hidden convolution and transposed convolution comes a normalisation and a
leaky ReLU with slope 0.2 (Table 1's caption); hidden fully connected layers get the
activation only (the AlexNet classifier has BatchNorm after its convolutions alone).
The last layer of a spec is the network's output: no normalisation, no activation.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from djax.nn.conv import Conv
from djax.nn.conv_transpose import ConvTranspose
from djax.nn.pool import max_pool
from djax.nn.spectral_norm import SNConv, SNDense

NORMS = ("batch", "instance", "layer", "none")

_TOKEN = re.compile(
    r"^(?:(?P<kind>[cd])(?P<ch>\d+)(?:k(?P<k>\d+))?(?:s(?P<s>\d+))?"
    r"|f(?P<units>\d*)"
    r"|(?P<pool>p)"
    r"|(?P<up>u)"
    r"|r\((?P<shape>\d+,\d+,\d+)\))$"
)


@dataclasses.dataclass(frozen=True)
class Layer:
  kind: str  # 'conv' | 'deconv' | 'dense' | 'pool' | 'upsample' | 'reshape'
  features: int | None = None
  kernel: int = 1
  stride: int = 1
  shape: tuple[int, ...] | None = None


def parse_spec(spec: str) -> tuple[Layer, ...]:
  """Parses a Table-1 style spec string; raises ValueError naming the bad token."""
  if not spec or not spec.strip():
    raise ValueError("empty layer spec; expected e.g. 'c64k3s2-c128k3s2-f'")
  layers = []
  for token in spec.strip().split("-"):
    m = _TOKEN.match(token.strip())
    if m is None:
      raise ValueError(
          f"bad layer token {token!r} in spec {spec!r}; tokens are c{{C}}k{{K}}s{{S}}, "
          "d{C}k{K}s{S}, f[{N}], p, u, r(H,W,C)")
    if m.group("kind"):
      layers.append(Layer(
          kind="conv" if m.group("kind") == "c" else "deconv",
          features=int(m.group("ch")),
          kernel=int(m.group("k") or 1),
          stride=int(m.group("s") or 1)))
    elif m.group("pool"):
      layers.append(Layer(kind="pool", kernel=3, stride=2))
    elif m.group("up"):
      layers.append(Layer(kind="upsample", stride=2))
    elif m.group("shape"):
      layers.append(Layer(kind="reshape", shape=tuple(int(v) for v in m.group("shape").split(","))))
    else:
      units = m.group("units")
      layers.append(Layer(kind="dense", features=int(units) if units else None))
  for layer in layers[:-1]:
    if layer.kind == "dense" and layer.features is None:
      raise ValueError(f"only the last layer of {spec!r} may be a bare 'f'")
  return tuple(layers)


def output_size(spec: str, input_size: int) -> int:
  """Spatial size after the spec's conv/pool/deconv layers (square inputs)."""
  size = input_size
  for layer in parse_spec(spec):
    if layer.kind in ("conv", "pool"):
      size = -(-size // layer.stride)
    elif layer.kind == "deconv":
      size = size * layer.stride if layer.stride > 1 else size + layer.kernel - 1
    elif layer.kind == "upsample":
      size *= 2
    elif layer.kind == "reshape":
      size = layer.shape[0]
  return size


class Norm(nn.Module):
  """The normalisation named by a config string.

  'batch' averages its statistics over ``axis_name`` (the pmap device axis) so that
  data-parallel training normalises with the global batch. It couples the samples of a
  batch in train mode: code that needs per-sample derivatives runs it in eval mode.
  """
  kind: str = "batch"
  axis_name: str | None = None
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    if self.kind == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                          axis_name=self.axis_name if train else None)(x)
    if self.kind == "instance":
      return nn.GroupNorm(num_groups=None, group_size=1)(x) if x.ndim == 4 else nn.LayerNorm()(x)
    if self.kind == "layer":
      return nn.LayerNorm()(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown normalisation {self.kind!r}; choose one of {NORMS}")


def flat_init(init):
  """Draws a conv kernel as a [kh·kw·in, out] matrix and reshapes it.

  Same distribution for fan-in initialisers (lecun_normal, flax's default), but XLA:CPU
  compiles the 2-D random draw in well under a second where a 4-D one took 4-11 s.
  """
  def draw(key, shape, dtype=jnp.float32):
    flat = (int(np.prod(shape[:-1])), shape[-1])
    return init(key, flat, dtype).reshape(shape)
  return draw


# A bias in front of a normalisation that subtracts the per-channel mean does nothing; its
# gradient is round-off noise, which Adam would turn into full-size steps.
_CANCELS_BIAS = ("batch", "instance")


class SpecNet(nn.Module):
  """Applies a parsed spec. Images are NHWC; a vector input to a conv spec is made 1x1xC."""
  spec: str
  out_features: int | None = None
  norm: str = "batch"
  axis_name: str | None = None
  negative_slope: float = 0.2
  # 'auto': the formulations XLA:CPU differentiates fast on CPU, native ops elsewhere
  # (djax/nn/conv.py, conv_transpose.py, pool.py); 'native' forces lax's convolutions/pooling.
  conv_impl: str = "auto"
  deconv_impl: str = "auto"
  pool_impl: str = "auto"  # djax/nn/pool.py
  # Convolutions and dense layers with weight W / σ(W) (djax/nn/spectral_norm.py, Miyato et
  # al. 2018): a discriminator's GAN-balancing option. Transposed convolutions stay plain.
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    """``x``: NHWC images (or vectors), or a tuple of arrays that together are its channels,
    which a first conv layer convolves part by part (see ``djax.nn.conv.Conv``)."""
    layers = parse_spec(self.spec)
    last = len(layers) - 1
    kernel_init = flat_init(nn.initializers.lecun_normal())
    if isinstance(x, (list, tuple)) and not (layers[0].kind == "conv" and x[0].ndim == 4):
      x = jnp.concatenate(x, axis=-1)
    for i, layer in enumerate(layers):
      hidden = i < last
      if layer.kind in ("conv", "deconv"):
        use_bias = not (hidden and self.norm in _CANCELS_BIAS)
        if not isinstance(x, (list, tuple)) and x.ndim == 2:
          x = x[:, None, None, :]
        if layer.kind == "conv" and self.spectral_norm:
          if isinstance(x, (list, tuple)):
            x = jnp.concatenate(x, axis=-1)
          x = SNConv(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2, padding="SAME",
                     use_bias=use_bias, kernel_init=kernel_init, impl=self.conv_impl,
                     name=f"conv{i}")(x, train)
        elif layer.kind == "conv":
          x = Conv(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2, padding="SAME",
                   use_bias=use_bias, kernel_init=kernel_init, impl=self.conv_impl,
                   name=f"conv{i}")(x)
        else:
          padding = "VALID" if layer.stride == 1 else "SAME"
          x = ConvTranspose(layer.features, (layer.kernel,) * 2, (layer.stride,) * 2,
                            padding=padding, use_bias=use_bias, kernel_init=kernel_init,
                            impl=self.deconv_impl, name=f"deconv{i}")(x)
        if hidden:
          x = Norm(self.norm, self.axis_name, name=f"norm{i}")(x, train)
          x = nn.leaky_relu(x, self.negative_slope)
      elif layer.kind == "dense":
        features = layer.features or self.out_features
        if features is None:
          raise ValueError(f"spec {self.spec!r} ends in a bare 'f' but out_features is not set")
        x = x.reshape(x.shape[0], -1)
        if self.spectral_norm:
          x = SNDense(features, name=f"dense{i}")(x, train)
        else:
          x = nn.Dense(features, name=f"dense{i}")(x)
        if hidden:
          x = nn.leaky_relu(x, self.negative_slope)
      elif layer.kind == "pool":
        x = max_pool(x, (3, 3), (2, 2), padding="SAME", impl=self.pool_impl)
      elif layer.kind == "upsample":
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
      elif layer.kind == "reshape":
        x = x.reshape((x.shape[0],) + layer.shape)
    return x


def count_params(params) -> int:
  return int(sum(jnp.size(p) for p in jax.tree_util.tree_leaves(params)))


def check_image_spec(spec: str, image_size: int, want: int, what: str) -> None:
  """Fails at config time when a decoder spec cannot produce the configured image size."""
  got = output_size(spec, 1 if spec.startswith("d") else image_size)
  if got != want:
    raise ValueError(f"{what} spec {spec!r} produces {got}x{got} images but the data is "
                     f"{want}x{want}; change the spec or data.image_size")


__all__: Sequence[str] = ("Layer", "Norm", "SpecNet", "parse_spec", "output_size", "count_params",
                          "check_image_spec")
