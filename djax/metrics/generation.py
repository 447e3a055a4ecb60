"""Generation-side scores: swap success, attribute flips, Inception-style score, MS-SSIM.

Pure functions of classifier outputs and images; :mod:`djax.evaluation` decodes the images
and :mod:`djax.metrics.classifier` provides the dataset classifier.

* :func:`swap_success` — Lezama 2019, Table 1: encode two test images a, b of different
  classes, put b's specified part y into a's code, decode; success when a separately trained
  classifier gives the decoded image b's class.  The authors' code compares with the
  classifier's label of b's *reconstruction* and leaves out pairs whose two reconstructions
  get the same label; ``target``/``source`` may equally be ground-truth labels.
* :func:`attribute_flip_success` — Lezama 2019, Table 2: set attribute unit ``y_i`` to
  ``-alpha * sign(y_i)`` (:func:`flip_codes`, alpha = 40 in the paper), decode, success when
  the attribute classifier's decision on the decoded image differs from the original's.
* :func:`inception_score` — Salimans et al. 2016 as used by Zheng & Sun 2019 (§4.2):
  ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of ``p(y|x)`` over a split,
  mean and std over 10 splits as the original Inception Score code (Zheng & Sun report
  one split over all samples: ``splits=1``).
  With the Inception network (:mod:`djax.metrics.inception`) it is the Inception Score;
  with a djax-trained dataset classifier it is a *classifier score* and is labelled so.
* :func:`ms_ssim` — multi-scale SSIM (Wang, Simoncelli & Bovik 2003) as in
  ``tf.image.ssim_multiscale``: Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, five
  scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling
  between scales (odd sizes padded symmetrically), contrast-structure terms at scales 1-4
  and SSIM at scale 5, negative terms clipped to 0, product of powers, mean over channels.
  Images too small for the 11-tap window at the coarse scales (below 176 px for five
  scales; djax's datasets are 28-64 px) are the ``small_images`` option: ``"fewer_scales"``
  (default) keeps the window and drops the scales it does not fit, ``"raise"`` refuses as
  TensorFlow and pytorch-msssim do, ``"shrink_window"`` truncates the window per scale
  (djax before version 2 of ``ms_ssim_diversity``); see :func:`ms_ssim`.
* :func:`intra_class_diversity` — Zheng & Sun 2019, Table 2:
  ``d_intra(X) = 1 - 1/|X|^2 sum_{(x', x) in X x X} MS-SSIM(x', x)`` per class (the sum runs
  over all ordered pairs, self-pairs included, as printed), averaged over classes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["VERSIONS", "swap_success", "flip_codes", "attribute_flip_success", "inception_score",
           "ms_ssim", "intra_class_diversity", "MS_SSIM_WEIGHTS", "SMALL_IMAGES"]

VERSIONS = {"swap_success": "1", "attribute_flip": "1", "inception_score": "2",
            "classifier_score": "2", "ms_ssim_diversity": "2", "conditional_generation": "1"}

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SMALL_IMAGES = ("fewer_scales", "raise", "shrink_window")


# ----------------------------------------------------------------------------- swaps and flips

def swap_success(pred_swapped, target, source) -> dict:
  """Fraction of pairs whose swapped image gets the ``target`` label, over the pairs whose
  ``target`` and ``source`` labels differ (Lezama's convention; see module docstring)."""
  pred_swapped, target, source = (np.asarray(a).reshape(-1) for a in (pred_swapped, target, source))
  valid = target != source
  n = int(valid.sum())
  rate = float(np.mean(pred_swapped[valid] == target[valid])) if n else float("nan")
  return {"success": rate, "num_pairs": n, "num_skipped": int((~valid).sum())}


def conditional_accuracy(pred, condition) -> dict:
  """Fraction of class-conditional samples a classifier gives their conditioning class,
  overall and per conditioning class (Zheng & Sun's "generated samples of class c")."""
  pred, condition = np.asarray(pred).reshape(-1), np.asarray(condition).reshape(-1)
  if pred.shape != condition.shape:
    raise ValueError(f"{pred.shape[0]} predictions for {condition.shape[0]} conditions")
  hit = pred == condition
  return {"accuracy": float(np.mean(hit)), "num_generated": int(hit.size),
          "per_class": {str(int(c)): float(np.mean(hit[condition == c]))
                        for c in np.unique(condition)}}


def flip_codes(codes, unit: int, alpha: float = 40.0) -> np.ndarray:
  """Lezama's attribute flip: ``y_i <- -alpha * sign(y_i)`` in column ``unit`` of ``codes``."""
  out = np.array(codes, dtype=np.float32, copy=True)
  out[:, unit] = -alpha * np.sign(out[:, unit])
  return out


def attribute_flip_success(pred_flipped, original) -> dict:
  """Fraction of images whose binary attribute decision changed after the flip.
  ``original``: the classifier's decision on the reconstruction (or the true label)."""
  pred_flipped, original = np.asarray(pred_flipped).reshape(-1), np.asarray(original).reshape(-1)
  return {"success": float(np.mean(pred_flipped != original)), "num_images": int(len(original))}


# ----------------------------------------------------------------------------- score

def inception_score(probs, *, splits: int = 10, eps: float = 1e-12) -> dict:
  """``exp(mean_x KL(p(y|x) || p(y)))`` from class probabilities ``[N, K]``, computed on
  each of ``splits`` consecutive parts (its own marginal ``p(y)``), as the original
  Inception Score code does (``preds[i * N // splits:(i + 1) * N // splits]``, 10 parts);
  returns ``{"score": mean over parts, "std": their std}``.  ``splits=1``: one score
  over all samples (Zheng & Sun's); at most one part per sample.  Range [1, K].
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2:
    raise ValueError(f"probs must be [N, K], got {p.shape}")
  if splits < 1:
    raise ValueError(f"splits must be >= 1, got {splits}")
  p = p / p.sum(axis=1, keepdims=True)
  n = p.shape[0]
  splits = min(int(splits), n)
  scores = []
  for i in range(splits):
    part = p[i * n // splits:(i + 1) * n // splits]
    marginal = part.mean(axis=0, keepdims=True)
    kl = np.sum(part * (np.log(part + eps) - np.log(marginal + eps)), axis=1)
    scores.append(float(np.exp(kl.mean())))
  return {"score": float(np.mean(scores)), "std": float(np.std(scores)), "splits": splits,
          "num_samples": int(n)}


# ----------------------------------------------------------------------------- MS-SSIM

def _gauss(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-x * x / (2 * sigma * sigma))
  return (g / g.sum()).astype(np.float32)


def _filter(x, win):
  """Separable 'valid' filtering over H and W of [B, H, W, C] (depthwise convolutions)."""
  c = x.shape[-1]
  k = len(win)
  w = jnp.asarray(win, x.dtype)
  dn = ("NHWC", "HWIO", "NHWC")
  kh = jnp.broadcast_to(w.reshape(k, 1, 1, 1), (k, 1, 1, c))
  kw = jnp.broadcast_to(w.reshape(1, k, 1, 1), (1, k, 1, c))
  prec = jax.lax.Precision.HIGHEST
  y = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=prec)
  return jax.lax.conv_general_dilated(y, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=prec)


def _ssim_parts(x, y, max_val, filter_size, sigma, k1, k2, shrink):
  size = min(filter_size, x.shape[1], x.shape[2]) if shrink else filter_size
  win = _gauss(size, sigma)
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  mx, my = _filter(x, win), _filter(y, win)
  sxx = _filter(x * x, win) - mx * mx
  syy = _filter(y * y, win) - my * my
  sxy = _filter(x * y, win) - mx * my
  lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
  cs = (2 * sxy + c2) / (sxx + syy + c2)
  return jnp.mean(lum * cs, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))  # [B, C] each


def _downsample(x):
  ph, pw = x.shape[1] % 2, x.shape[2] % 2
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@functools.partial(jax.jit, static_argnames=("max_val", "filter_size", "sigma", "k1", "k2",
                                             "weights", "shrink"))
def _ms_ssim(x, y, *, max_val, filter_size, sigma, k1, k2, weights, shrink):
  terms = []
  for i in range(len(weights)):
    if i:
      x, y = _downsample(x), _downsample(y)
    ssim, cs = _ssim_parts(x, y, max_val, filter_size, sigma, k1, k2, shrink)
    terms.append(jax.nn.relu(ssim if i == len(weights) - 1 else cs))
  stacked = jnp.stack(terms, axis=-1)  # [B, C, scales]
  return jnp.mean(jnp.prod(stacked ** jnp.asarray(weights, jnp.float32), axis=-1), axis=-1)


def ms_ssim_scales(height: int, width: int, *, filter_size: int = 11,
                   weights=MS_SSIM_WEIGHTS, small_images: str = "fewer_scales") -> tuple:
  """The power factors :func:`ms_ssim` uses on ``height x width`` images (one per scale)."""
  if small_images not in SMALL_IMAGES:
    raise ValueError(f"small_images must be one of {SMALL_IMAGES}, got {small_images!r}")
  weights = tuple(float(w) for w in weights)
  sizes = [(height, width)]
  for _ in weights[1:]:
    sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))  # odd sizes padded
  fit = sum(min(s) >= filter_size for s in sizes)  # sizes only shrink: a prefix fits
  if small_images == "shrink_window" and min(height, width) < 2 ** (len(weights) - 1):
    raise ValueError(f"images of {height}x{width} are too small for {len(weights)} scales")
  if small_images == "shrink_window" or fit == len(weights):
    return weights
  h, w = sizes[fit]
  if small_images == "raise" or fit == 0:
    other = "'shrink_window'" if fit == 0 else "'fewer_scales' or 'shrink_window'"
    raise ValueError(
        f"MS-SSIM of {height}x{width} images: scale {fit + 1} is {h}x{w}, smaller than the "
        f"{filter_size}-pixel window (TensorFlow and pytorch-msssim refuse too); pass "
        f"small_images={other} or a smaller filter_size")
  kept = weights[:fit]
  return tuple(w / sum(kept) for w in kept)


def ms_ssim(x, y, *, max_val: float = 255.0, filter_size: int = 11, sigma: float = 1.5,
            k1: float = 0.01, k2: float = 0.03, weights=MS_SSIM_WEIGHTS,
            small_images: str = "fewer_scales") -> np.ndarray:
  """MS-SSIM of image pairs ``[B, H, W, C]`` (or ``[H, W, C]``) -> ``[B]`` (see module doc).
  ``max_val`` is the dynamic range of the pixel values (255 for uint8, 2 for [-1, 1]).

  ``small_images``: what happens when the ``filter_size`` window does not fit a coarse
  scale (five scales need at least ``16 * 11 = 176`` px):

  * ``"fewer_scales"`` (default): only the scales the window fits, their power factors
    rescaled to sum to 1 (64 px: 3 scales; 28-32 px: 2), the last of them with the
    luminance term.  Every number is then TensorFlow's:
    ``tf.image.ssim_multiscale(x, y, max_val, power_factors=ms_ssim_scales(H, W))``;
  * ``"raise"``: a ValueError, as ``tf.image.ssim_multiscale`` and pytorch-msssim;
  * ``"shrink_window"``: every scale, the window truncated to the scale's size (same sigma,
    renormalised); a statistic of its own, far from any fixed window's at the coarse
    scales.

  The default keeps the standard window and reproduces TensorFlow's arithmetic, where
  refusing would leave djax's 28-64 px datasets without the score and shrinking the window
  would change what the coarse scales measure.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  single = x.ndim == 3
  if single:
    x, y = x[None], y[None]
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(f"need two [B, H, W, C] arrays of one shape, got {x.shape} and {y.shape}")
  weights = ms_ssim_scales(x.shape[1], x.shape[2], filter_size=int(filter_size),
                           weights=weights, small_images=small_images)
  # Pad the batch to a power of two (>= 8) so varying batch sizes reuse few compilations.
  b = x.shape[0]
  padded = max(8, 1 << (b - 1).bit_length())
  if padded != b:
    pad = ((0, padded - b), (0, 0), (0, 0), (0, 0))
    x, y = np.pad(x, pad), np.pad(y, pad)
  out = np.asarray(_ms_ssim(jnp.asarray(x), jnp.asarray(y), max_val=float(max_val),
                            filter_size=int(filter_size), sigma=float(sigma), k1=float(k1),
                            k2=float(k2), weights=weights,
                            shrink=small_images == "shrink_window"))[:b]
  return out[0] if single else out


def intra_class_diversity(images, labels, *, max_per_class: int = 100, seed: int = 0,
                          max_val: float = 255.0, batch_size: int = 1024,
                          small_images: str = "fewer_scales") -> dict:
  """Zheng & Sun's ``d_intra`` per class, averaged over classes (see module docstring).

  ``images [N, H, W, C]``, ``labels [N]`` (the class each image was generated for, or the
  class a classifier gives it).  At most ``max_per_class`` random images per class enter
  (all |X|^2 ordered pairs of them).  Classes with a single image are skipped.
  ``small_images``: see :func:`ms_ssim`; the result names the power factors used.
  """
  images = np.asarray(images, np.float32)
  power_factors = ms_ssim_scales(images.shape[1], images.shape[2], small_images=small_images)
  labels = np.asarray(labels).reshape(-1)
  rng = np.random.default_rng(seed)
  per_class = {}
  for v in np.unique(labels):
    idx = np.flatnonzero(labels == v)
    if len(idx) < 2:
      continue
    if len(idx) > max_per_class:
      idx = np.sort(rng.choice(idx, max_per_class, replace=False))
    ii, jj = np.triu_indices(len(idx), k=1)
    sims = []
    for s in range(0, len(ii), batch_size):
      a, b = images[idx[ii[s:s + batch_size]]], images[idx[jj[s:s + batch_size]]]
      sims.append(ms_ssim(a, b, max_val=max_val, small_images=small_images))
    sims = np.concatenate(sims)
    m = len(idx)
    # Ordered pairs = 2 x unordered (MS-SSIM is symmetric) + m self-pairs of value 1.
    total = 2.0 * sims.sum() + m
    per_class[v.item() if hasattr(v, "item") else v] = float(1.0 - total / (m * m))
  vals = list(per_class.values())
  return {"diversity": float(np.mean(vals)) if vals else float("nan"),
          "per_class": {str(k): v for k, v in per_class.items()},
          "ms_ssim": {"small_images": small_images, "power_factors": list(power_factors)}}
