"""Inception-v3 for the Inception Score, from a weights file the user provides.

The weights cannot be downloaded here, so djax never fetches them: pass the path of an
``.npz`` file as ``config.eval.inception_weights`` (metric ``inception_score``).

**The file.**  An ``.npz`` whose arrays are the PyTorch ``state_dict`` of the Inception-v3
used for FID/IS in PyTorch (``pytorch-fid``'s ``FIDInceptionV3``, weights
``pt_inception-2015-12-05-6726825d.pth``, ported from TensorFlow's 2015-12-05 graph that
Salimans et al.'s Inception Score uses; 1008 output classes), names and layouts unchanged
(``Conv2d_1a_3x3.conv.weight`` ``[out, in, kh, kw]``, ``...bn.weight/bias/running_mean/
running_var``, ``Mixed_5b.branch1x1.conv.weight``, ..., ``fc.weight`` ``[1008, 2048]``,
``fc.bias``).  On a machine with PyTorch::

    import numpy as np, torch
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    np.savez("inception_v3_fid.npz", **{k: v.numpy() for k, v in sd.items()})

torchvision's ImageNet ``inception_v3`` state dict (1000 classes) loads too, with
``fid_variant=False`` (plain average pooling everywhere); its scores are not comparable with
published Inception Scores.  Auxiliary-classifier weights (``AuxLogits.*``) are ignored.

**The network** (Szegedy et al. 2016, torchvision's layout): images are resized bilinearly
to 299x299 and scaled to [-1, 1]; BatchNorm (eps 1e-3) is folded into the convolutions;
``fid_variant=True`` applies pytorch-fid's changes to the TF graph's pooling (average pools
that exclude padding in the A, C and first E blocks, a max pool in the last E block).
Output: softmax over the ``fc`` logits.

Not checked against real weights here (none can be had on this machine); the tests check the
wiring with random weights of the documented shapes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["InceptionV3", "expected_shapes"]

# (name, kind, in_channels, extra)
_BLOCKS = [
    ("Mixed_5b", "A", 192, 32), ("Mixed_5c", "A", 256, 64), ("Mixed_5d", "A", 288, 64),
    ("Mixed_6a", "B", 288, None), ("Mixed_6b", "C", 768, 128), ("Mixed_6c", "C", 768, 160),
    ("Mixed_6d", "C", 768, 160), ("Mixed_6e", "C", 768, 192), ("Mixed_7a", "D", 768, None),
    ("Mixed_7b", "E1", 1280, None), ("Mixed_7c", "E2", 2048, None),
]
_STEM = [("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)),
         ("Conv2d_2b_3x3", 32, 64, (3, 3)), ("Conv2d_3b_1x1", 64, 80, (1, 1)),
         ("Conv2d_4a_3x3", 80, 192, (3, 3))]


def _block_convs(kind: str, cin: int, extra) -> list[tuple[str, int, int, tuple[int, int]]]:
  """(suffix, in, out, kernel) of every BasicConv2d of a block."""
  if kind == "A":
    return [("branch1x1", cin, 64, (1, 1)), ("branch5x5_1", cin, 48, (1, 1)),
            ("branch5x5_2", 48, 64, (5, 5)), ("branch3x3dbl_1", cin, 64, (1, 1)),
            ("branch3x3dbl_2", 64, 96, (3, 3)), ("branch3x3dbl_3", 96, 96, (3, 3)),
            ("branch_pool", cin, extra, (1, 1))]
  if kind == "B":
    return [("branch3x3", cin, 384, (3, 3)), ("branch3x3dbl_1", cin, 64, (1, 1)),
            ("branch3x3dbl_2", 64, 96, (3, 3)), ("branch3x3dbl_3", 96, 96, (3, 3))]
  if kind == "C":
    c7 = extra
    return [("branch1x1", cin, 192, (1, 1)), ("branch7x7_1", cin, c7, (1, 1)),
            ("branch7x7_2", c7, c7, (1, 7)), ("branch7x7_3", c7, 192, (7, 1)),
            ("branch7x7dbl_1", cin, c7, (1, 1)), ("branch7x7dbl_2", c7, c7, (7, 1)),
            ("branch7x7dbl_3", c7, c7, (1, 7)), ("branch7x7dbl_4", c7, c7, (7, 1)),
            ("branch7x7dbl_5", c7, 192, (1, 7)), ("branch_pool", cin, 192, (1, 1))]
  if kind == "D":
    return [("branch3x3_1", cin, 192, (1, 1)), ("branch3x3_2", 192, 320, (3, 3)),
            ("branch7x7x3_1", cin, 192, (1, 1)), ("branch7x7x3_2", 192, 192, (1, 7)),
            ("branch7x7x3_3", 192, 192, (7, 1)), ("branch7x7x3_4", 192, 192, (3, 3))]
  # E
  return [("branch1x1", cin, 320, (1, 1)), ("branch3x3_1", cin, 384, (1, 1)),
          ("branch3x3_2a", 384, 384, (1, 3)), ("branch3x3_2b", 384, 384, (3, 1)),
          ("branch3x3dbl_1", cin, 448, (1, 1)), ("branch3x3dbl_2", 448, 384, (3, 3)),
          ("branch3x3dbl_3a", 384, 384, (1, 3)), ("branch3x3dbl_3b", 384, 384, (3, 1)),
          ("branch_pool", cin, 192, (1, 1))]


def expected_shapes(num_classes: int = 1008) -> dict[str, tuple[int, ...]]:
  """Every array the weights file must hold, with its shape."""
  out = {}
  convs = [(n, i, o, k) for n, i, o, k in _STEM]
  for name, kind, cin, extra in _BLOCKS:
    convs += [(f"{name}.{s}", i, o, k) for s, i, o, k in _block_convs(kind, cin, extra)]
  for n, i, o, (kh, kw) in convs:
    out[f"{n}.conv.weight"] = (o, i, kh, kw)
    for p in ("weight", "bias", "running_mean", "running_var"):
      out[f"{n}.bn.{p}"] = (o,)
  out["fc.weight"] = (num_classes, 2048)
  out["fc.bias"] = (num_classes,)
  return out


def _fold(weights: dict) -> dict:
  """BasicConv2d (conv without bias, BN eps 1e-3) -> HWIO kernel and bias."""
  folded = {}
  for key in weights:
    if key.endswith(".conv.weight"):
      n = key[:-len(".conv.weight")]
      w = np.asarray(weights[key], np.float32)
      g, b = weights[f"{n}.bn.weight"], weights[f"{n}.bn.bias"]
      m, v = weights[f"{n}.bn.running_mean"], weights[f"{n}.bn.running_var"]
      scale = np.asarray(g, np.float32) / np.sqrt(np.asarray(v, np.float32) + 1e-3)
      folded[n] = (np.transpose(w, (2, 3, 1, 0)) * scale,
                   np.asarray(b, np.float32) - np.asarray(m, np.float32) * scale)
  folded["fc"] = (np.asarray(weights["fc.weight"], np.float32).T,
                  np.asarray(weights["fc.bias"], np.float32))
  return folded


def _conv(p, name, x, stride=1, padding=None):
  w, b = p[name]
  kh, kw = w.shape[:2]
  pad = padding if padding is not None else ((0, 0), (0, 0))
  y = jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y + b)


def _same(k):  # torchvision's symmetric padding for odd kernels
  return ((k[0] // 2, k[0] // 2), (k[1] // 2, k[1] // 2))


def _max_pool(x, stride=2):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               "VALID")


def _avg_pool_3x3(x, count_include_pad: bool):
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  if count_include_pad:
    return s / 9.0
  ones = jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None]
  n = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  return s / n


def _block(p, name, kind, x, fid):
  c = lambda s, h, k=(1, 1), stride=1, pad=None: _conv(  # noqa: E731
      p, f"{name}.{s}", h, stride, _same(k) if pad is None else pad)
  if kind == "A":
    b1 = c("branch1x1", x)
    b5 = c("branch5x5_2", c("branch5x5_1", x), (5, 5))
    b3 = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x), (3, 3)), (3, 3))
    bp = c("branch_pool", _avg_pool_3x3(x, not fid))
    return jnp.concatenate([b1, b5, b3, bp], -1)
  if kind == "B":
    b3 = c("branch3x3", x, stride=2, pad=((0, 0), (0, 0)))
    bd = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x), (3, 3)), stride=2,
           pad=((0, 0), (0, 0)))
    return jnp.concatenate([b3, bd, _max_pool(x)], -1)
  if kind == "C":
    b1 = c("branch1x1", x)
    b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x), (1, 7)), (7, 1))
    bd = c("branch7x7dbl_1", x)
    for s, k in (("2", (7, 1)), ("3", (1, 7)), ("4", (7, 1)), ("5", (1, 7))):
      bd = c(f"branch7x7dbl_{s}", bd, k)
    bp = c("branch_pool", _avg_pool_3x3(x, not fid))
    return jnp.concatenate([b1, b7, bd, bp], -1)
  if kind == "D":
    b3 = c("branch3x3_2", c("branch3x3_1", x), stride=2, pad=((0, 0), (0, 0)))
    b7 = c("branch7x7x3_3", c("branch7x7x3_2", c("branch7x7x3_1", x), (1, 7)), (7, 1))
    b7 = c("branch7x7x3_4", b7, stride=2, pad=((0, 0), (0, 0)))
    return jnp.concatenate([b3, b7, _max_pool(x)], -1)
  # E1 / E2
  b1 = c("branch1x1", x)
  b3 = c("branch3x3_1", x)
  b3 = jnp.concatenate([c("branch3x3_2a", b3, (1, 3)), c("branch3x3_2b", b3, (3, 1))], -1)
  bd = c("branch3x3dbl_2", c("branch3x3dbl_1", x), (3, 3))
  bd = jnp.concatenate([c("branch3x3dbl_3a", bd, (1, 3)), c("branch3x3dbl_3b", bd, (3, 1))], -1)
  if fid and kind == "E2":
    pooled = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                   ((0, 0), (1, 1), (1, 1), (0, 0)))
  else:
    pooled = _avg_pool_3x3(x, not fid)
  return jnp.concatenate([b1, b3, bd, c("branch_pool", pooled)], -1)


@functools.partial(jax.jit, static_argnames=("fid", "size"))
def _forward(p, images, *, fid: bool, size: int):
  """images: float [B, H, W, 3] in [0, 1] -> logits [B, classes]."""
  x = jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear", antialias=False)
  x = 2.0 * x - 1.0
  x = _conv(p, "Conv2d_1a_3x3", x, 2)
  x = _conv(p, "Conv2d_2a_3x3", x)
  x = _conv(p, "Conv2d_2b_3x3", x, 1, ((1, 1), (1, 1)))
  x = _max_pool(x)
  x = _conv(p, "Conv2d_3b_1x1", x)
  x = _conv(p, "Conv2d_4a_3x3", x)
  x = _max_pool(x)
  for name, kind, _, _ in _BLOCKS:
    x = _block(p, name, kind, x, fid)
  x = x.mean(axis=(1, 2))
  w, b = p["fc"]
  return x @ w + b


class InceptionV3:
  """``probs(images, value_range)`` -> softmax of the network's logits, ``[N, classes]``."""

  def __init__(self, weights: dict, *, fid_variant: bool = True, image_size: int = 299):
    shapes = expected_shapes(np.asarray(weights["fc.weight"]).shape[0]
                             if "fc.weight" in weights else 1008)
    missing = sorted(k for k in shapes if k not in weights)
    if missing:
      raise ValueError(f"Inception weights lack {len(missing)} arrays, e.g. {missing[:3]}; "
                       f"see djax/metrics/inception.py for the expected file")
    wrong = [k for k, s in shapes.items() if tuple(np.shape(weights[k])) != s]
    if wrong:
      raise ValueError(f"Inception weights of the wrong shape: "
                       f"{[(k, np.shape(weights[k]), shapes[k]) for k in wrong[:3]]}")
    self.params = jax.tree_util.tree_map(jnp.asarray, _fold(weights))
    self.fid_variant, self.image_size = fid_variant, image_size

  @classmethod
  def from_file(cls, path: str, **kwargs) -> "InceptionV3":
    with np.load(path) as f:
      return cls({k: f[k] for k in f.files}, **kwargs)

  def probs(self, images, value_range=(-1.0, 1.0), batch_size: int = 64) -> np.ndarray:
    lo, hi = value_range
    out = []
    for s in range(0, len(images), batch_size):
      x = (np.asarray(images[s:s + batch_size], np.float32) - lo) / (hi - lo)
      if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
      n = len(x)
      x = np.pad(x, ((0, batch_size - n), (0, 0), (0, 0), (0, 0)))
      logits = _forward(self.params, jnp.asarray(x), fid=self.fid_variant, size=self.image_size)
      out.append(np.asarray(jax.nn.softmax(logits))[:n])
    return np.concatenate(out)
