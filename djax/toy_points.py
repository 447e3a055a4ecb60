"""Class-conditional generation on the three-moons toy (Zheng & Sun 2019, §4.1, Fig. 2):
how far generated points are from each class's half circle, how widely they spread along
the label-irrelevant axis y, and a scatter plot of real and generated points.

Numbers and pictures only (numpy, Pillow): a method hands over points, this module never
sees a network.
"""

from __future__ import annotations

import os

import numpy as np

from djax.data import three_moons

# One colour per class (left, middle, right); generated points drawn darker.
_COLOURS = np.array([[46, 160, 67], [214, 39, 40], [31, 119, 180]], np.float64)


def moon_distances(points: np.ndarray, centers=three_moons.CENTERS) -> np.ndarray:
  """Euclidean distance [N, K] from each point to each noise-free upper half unit circle
  (centre (c_k, 0)): | |q| − 1 | above the diameter, the nearer end point below it."""
  p = np.asarray(points, np.float64)
  out = []
  for c in centers:
    q = p - np.array([c, 0.0])
    arc = np.abs(np.linalg.norm(q, axis=-1) - 1.0)
    ends = np.minimum(np.linalg.norm(q - [1.0, 0.0], axis=-1),
                      np.linalg.norm(q + [1.0, 0.0], axis=-1))
    out.append(np.where(q[:, 1] >= 0, arc, ends))
  return np.stack(out, -1)


def class_conditional_report(generated: np.ndarray, generated_labels: np.ndarray,
                             data: np.ndarray, data_labels: np.ndarray) -> dict:
  """Per class: the std of y of the generated points and of the data, their ratio, and the
  fraction of generated points nearest their own class's half circle (the data's own
  fraction, below 1 because of the noise, for reference)."""
  generated, data = np.asarray(generated, np.float64), np.asarray(data, np.float64)
  gl, dl = np.asarray(generated_labels).reshape(-1), np.asarray(data_labels).reshape(-1)
  own_gen = np.argmin(moon_distances(generated), -1) == gl
  own_data = np.argmin(moon_distances(data), -1) == dl
  per = {}
  for k in np.unique(dl):
    g, d = generated[gl == k], data[dl == k]
    std_g, std_d = float(np.std(g[:, 1])), float(np.std(d[:, 1]))
    per[str(int(k))] = {
        "std_y_generated": std_g, "std_y_data": std_d, "std_ratio": std_g / std_d,
        "std_x_generated": float(np.std(g[:, 0])), "std_x_data": float(np.std(d[:, 0])),
        "nearest_own_moon": float(np.mean(own_gen[gl == k])),
        "nearest_own_moon_data": float(np.mean(own_data[dl == k])), "num_generated": len(g)}
  return {"per_class": per,
          "std_ratio_min": float(min(v["std_ratio"] for v in per.values())),
          "nearest_own_moon": float(np.mean(own_gen)),
          "nearest_own_moon_data": float(np.mean(own_data)),
          "num_generated": int(len(generated)), "num_data": int(len(data))}


def format_report(r: dict) -> str:
  rows = [f"| {k} | {v['std_y_generated']:.3f} | {v['std_y_data']:.3f} | {v['std_ratio']:.3f} "
          f"| {v['nearest_own_moon']:.3f} | {v['nearest_own_moon_data']:.3f} |"
          for k, v in r["per_class"].items()]
  return "\n".join(
      ["Class-conditional points (three moons): std of y, nearest own half circle",
       "| class | std y gen | std y data | ratio | own moon gen | own moon data |",
       "|---|---|---|---|---|---|", *rows,
       f"min std ratio {r['std_ratio_min']:.3f}; nearest own moon {r['nearest_own_moon']:.3f} "
       f"(data {r['nearest_own_moon_data']:.3f}); {r['num_generated']} generated"])


def scatter_image(panels, size: int = 360, extent=((-3.6, 3.6), (-1.2, 1.8)),
                  radius: int = 1) -> np.ndarray:
  """uint8 [size·h/w, size·len(panels), 3]: one scatter panel per (points, labels) pair,
  side by side, coloured by class, with the noise-free half circles in grey."""
  (x0, x1), (y0, y1) = extent
  h = int(round(size * (y1 - y0) / (x1 - x0)))
  out = []
  for points, labels in panels:
    img = np.full((h, size, 3), 255.0)
    t = np.linspace(0, np.pi, 400)
    for c in three_moons.CENTERS:
      _dots(img, np.stack([c + np.cos(t), np.sin(t)], -1), np.full((400, 3), 170.0),
            extent, 0)
    labels = np.asarray(labels).reshape(-1)
    _dots(img, np.asarray(points), _COLOURS[labels % len(_COLOURS)], extent, radius)
    img[:, -2:] = 0.0  # a rule between panels
    out.append(img)
  return np.concatenate(out, axis=1).astype(np.uint8)


def _dots(img, points, colours, extent, radius):
  (x0, x1), (y0, y1) = extent
  h, w = img.shape[:2]
  col = np.round((points[:, 0] - x0) / (x1 - x0) * (w - 1)).astype(int)
  row = np.round((y1 - points[:, 1]) / (y1 - y0) * (h - 1)).astype(int)
  for dr in range(-radius, radius + 1):
    for dc in range(-radius, radius + 1):
      r, c = row + dr, col + dc
      ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
      img[r[ok], c[ok]] = colours[ok]


def save_scatter(path: str, panels, **kwargs) -> str:
  from PIL import Image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(scatter_image(panels, **kwargs)).save(path)
  return path
