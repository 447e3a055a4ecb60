"""Image grids as PNG files."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray, value_range=(-1.0, 1.0)) -> np.ndarray:
  lo, hi = value_range
  x = (np.asarray(images, np.float32) - lo) / (hi - lo)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def tile(grid: np.ndarray, pad: int = 2, pad_value: int = 255) -> np.ndarray:
  """[R, C, H, W, ch] uint8 -> one [R·(H+pad)+pad, C·(W+pad)+pad, 3] image."""
  grid = np.asarray(grid)
  if grid.ndim != 5:
    raise ValueError(f"tile expects [rows, cols, H, W, C], got shape {grid.shape}")
  if grid.shape[-1] == 1:
    grid = np.repeat(grid, 3, axis=-1)
  r, c, h, w, ch = grid.shape
  out = np.full((r * (h + pad) + pad, c * (w + pad) + pad, ch), pad_value, np.uint8)
  for i in range(r):
    for j in range(c):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = grid[i, j]
  return out


def upscale(image: np.ndarray, min_size: int = 256) -> np.ndarray:
  """Nearest-neighbour enlargement so that small (e.g. 32x32) samples stay legible."""
  f = max(1, -(-min_size // max(image.shape[:2])))
  return image.repeat(f, 0).repeat(f, 1) if f > 1 else image


def save_png(path: str, image: np.ndarray) -> str:
  """Writes atomically: a reader never sees a half-written PNG."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  Image.fromarray(np.asarray(image, np.uint8)).save(tmp)
  os.replace(tmp, path)
  return path


def save_grid(path: str, grid: np.ndarray, value_range=(-1.0, 1.0), pad: int = 2) -> str:
  return save_png(path, upscale(tile(to_uint8(grid, value_range), pad)))


def side_by_side(images: list[np.ndarray], cols: int, pad: int = 8) -> np.ndarray:
  """Lays out equally sized uint8 images in a ``cols``-wide table (e.g. one grid per chunk)."""
  h, w = images[0].shape[:2]
  rows = -(-len(images) // cols)
  blank = np.full_like(images[0], 255)
  cells = images + [blank] * (rows * cols - len(images))
  return tile(np.stack(cells).reshape((rows, cols, h, w, -1)), pad)
