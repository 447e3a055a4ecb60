"""A look at a dataset: a PNG grid of samples annotated with their factors, and its card.

    python -m djax.data.show --dataset=mnist_5k
    python -m djax.data.show --dataset=styled_mnist --split=reference,unlabelled
    python -m djax.data.show --dataset=three_moons
    python -m djax.data.show --dataset=sprites/small --out=/tmp/sprites.png

Writes ``--out`` (default ``data_<name>.png`` in the working directory; a default path that
git tracks is refused, so the repository's docs/ images change only when named with
``--out``) and prints the dataset card: source, splits and their sizes, stored shape,
discrete factors with their cardinalities, continuous factors with their ranges, the class
label. Datasets that are djax builders are prepared on first use (offline); tfds datasets
must be prepared under ``--data_dir``. Point datasets (three_moons) are drawn as a scatter
plot coloured by label.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def data_config(name: str, data_dir: str = "", manual_dir: str = "", image_size=None):
  import ml_collections
  return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, manual_dir=manual_dir,
                                        image_size=image_size, value_range=(0.0, 1.0),
                                        in_memory_max_gb=4.0))


def _fmt(meta, key, value) -> str:
  if key in meta.continuous_factors:
    return f"{key}={float(value):.2f}"
  names = meta.factor_values.get(key)
  v = int(value)
  if names and 0 <= v < len(names) and names[v] != str(v):
    return f"{key}={names[v][:12]}"
  return f"{key}={v}"


def annotation_keys(meta, max_lines: int) -> list[str]:
  keys = list(meta.factors) + list(meta.continuous_factors)
  if meta.label_key in keys:  # the class label first, or last when it is an identity
    keys.remove(meta.label_key)
    keys.insert(0 if meta.factors.get(meta.label_key, 0) <= 100 else len(keys), meta.label_key)
  return keys[:max_lines]


def sample_indices(n: int, num: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).choice(n, size=min(num, n), replace=False))


def image_grid(blocks, columns: int = 8, max_lines: int = 6, min_cell: int = 84):
  """blocks: [(title, meta, examples dict)] -> a PIL image, one titled block per split."""
  from PIL import Image, ImageDraw
  line_h, pad, title_h = 11, 6, 16
  metas = [m for _, m, _ in blocks]
  h = max(m.image_shape[0] for m in metas)
  scale = max(1, -(-min_cell // h))
  img_px = h * scale
  lines = max(len(annotation_keys(m, max_lines)) for m in metas)
  cell_w, cell_h = max(img_px, 96) + pad, img_px + lines * line_h + pad
  heights = [title_h + -(-len(ex["image"]) // columns) * cell_h for _, _, ex in blocks]
  sheet = Image.new("RGB", (columns * cell_w + pad, sum(heights) + pad), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  y0 = pad
  for (title, meta, ex), bh in zip(blocks, heights):
    draw.text((pad, y0), title, fill=(0, 0, 0))
    keys = annotation_keys(meta, max_lines)
    for i, image in enumerate(ex["image"]):
      r, c = divmod(i, columns)
      x, y = pad + c * cell_w, y0 + title_h + r * cell_h
      im = np.asarray(image)
      if im.shape[-1] == 1:
        im = np.repeat(im, 3, axis=-1)
      im = np.kron(im, np.ones((scale, scale, 1), np.uint8))
      sheet.paste(Image.fromarray(im), (x, y))
      for j, k in enumerate(keys):
        if k in ex:
          draw.text((x, y + img_px + 1 + j * line_h), _fmt(meta, k, ex[k][i]), fill=(0, 0, 0))
    y0 += bh
  return sheet


def scatter(blocks, size: int = 420):
  """Point datasets: one scatter panel per split, coloured by label."""
  from PIL import Image, ImageDraw
  pad, title_h, legend_h = 10, 16, 14
  sheet = Image.new("RGB", (len(blocks) * (size + pad) + pad, size + title_h + legend_h + 2 * pad),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for b, (title, meta, ex) in enumerate(blocks):
    pts = np.asarray(ex[meta.data_key], np.float64)
    labels = np.asarray(ex[meta.label_key]) if meta.label_key else np.zeros(len(pts), int)
    lo, hi = pts.min(0), pts.max(0)
    span = (hi - lo).max() * 1.05
    mid = (hi + lo) / 2
    x0, y0 = pad + b * (size + pad), pad + title_h
    draw.rectangle([x0, y0, x0 + size, y0 + size], outline=(0, 0, 0))
    draw.text((x0, pad), f"{title} ({len(pts)} points)", fill=(0, 0, 0))
    to_px = lambda p: (x0 + size / 2 + (p[0] - mid[0]) / span * size,  # noqa: E731
                       y0 + size / 2 - (p[1] - mid[1]) / span * size)
    for p, l in zip(pts, labels):
      u, v = to_px(p)
      draw.ellipse([u - 1.5, v - 1.5, u + 1.5, v + 1.5], fill=PALETTE[int(l) % len(PALETTE)])
    names = meta.class_names or tuple(str(i) for i in range(int(labels.max()) + 1))
    for i, name in enumerate(names):
      lx = x0 + 4 + i * 90
      draw.rectangle([lx, y0 + size + 4, lx + 8, y0 + size + 12], fill=PALETTE[i % len(PALETTE)])
      draw.text((lx + 12, y0 + size + 2), f"{meta.label_key}={name}", fill=(0, 0, 0))
  return sheet


def card(name: str, metas: Sequence, split_sizes: dict[str, int], location: str = "") -> str:
  meta = metas[0]
  lines = [f"dataset      {name}", f"source       {meta.source}"]
  if meta.description:
    lines.append(f"description  {meta.description}")
  lines.append("splits       " + ", ".join(f"{k}: {v:,}" for k, v in split_sizes.items()))
  kind = "image" if meta.is_image else meta.data_key
  lines.append(f"{kind:<12} {meta.image_shape} "
               f"{'uint8 stored, float32 in the config value_range' if meta.is_image else 'float32'}")
  if meta.label_key:
    names = ", ".join(meta.class_names[:12]) + (" ..." if len(meta.class_names) > 12 else "")
    lines.append(f"label        {meta.label_key} ({len(meta.class_names)} classes: {names})")
  if meta.factors:
    lines.append("factors      " + ", ".join(f"{k} ({n})" for k, n in meta.factors.items()))
  if meta.continuous_factors:
    lines.append("continuous   " + ", ".join(f"{k} [{lo:g}, {hi:g}]"
                                               for k, (lo, hi) in meta.continuous_factors.items()))
  if location:
    lines.append(f"stored in    {location}")
  return "\n".join(lines)


def default_out(name: str) -> str:
  """``data_<name>.png`` in the working directory; an error if git tracks that file."""
  out = f"data_{name.replace('/', '_')}.png"
  if os.path.exists(out) and _git_tracked(out):
    raise ValueError(f"{os.path.abspath(out)} is tracked by git; pass --out=PATH to write "
                     f"the grid (naming a tracked file there overwrites it)")
  return out


def _git_tracked(path: str) -> bool:
  import subprocess
  try:
    r = subprocess.run(["git", "ls-files", "--error-unmatch", "--", os.path.basename(path)],
                       cwd=os.path.dirname(os.path.abspath(path)), capture_output=True,
                       timeout=30)
  except (OSError, subprocess.SubprocessError):  # no git: nothing is tracked
    return False
  return r.returncode == 0


def show(name: str, splits: Sequence[str] | None = None, out: str | None = None, num: int = 24,
         seed: int = 0, data_dir: str = "", manual_dir: str = "", image_size=None,
         columns: int = 8, max_lines: int = 8) -> tuple[str, str]:
  """Writes the PNG, returns (its path, the card)."""
  from djax.data import registry
  out = out or default_out(name)
  cfg = data_config(name, data_dir, manual_dir, image_size)
  if image_size is not None:
    registry.check_config(cfg)
  opened = [registry.open_split(cfg, s) for s in (splits or ["train"])]  # prepares if needed
  if name in registry._IN_MEMORY:
    split_sizes = {k: len(v) for k, v in registry._IN_MEMORY[name][0].items()}
    location = "memory"
  else:
    b = registry.builder(cfg)  # prepared now: its info lists the splits
    split_sizes = {k: v.num_examples for k, v in b.info.splits.items()}
    location = str(b.data_dir)
  blocks = []
  for source, meta in opened:
    if meta.is_image:
      idx = sample_indices(len(source), num, seed)
    else:
      idx = np.arange(min(len(source), 3000))
    blocks.append((f"{name} : {meta.split}", meta, source.take(idx)))
  metas = [m for _, m, _ in blocks]
  sheet = image_grid(blocks, columns, max_lines) if metas[0].is_image else scatter(blocks)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  sheet.save(out)
  return out, card(name, metas, split_sizes, location)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m djax.data.show", description=__doc__.split("\n")[0])
  p.add_argument("--dataset", required=True, help="a djax builder (mnist_5k, styled_mnist, "
                 "three_moons, sprites/small, ...) or a prepared tfds name")
  p.add_argument("--split", default=None, help="split(s), comma-separated (default: train)")
  p.add_argument("--out", default=None,
                 help="PNG path (default: data_<name>.png in the working directory)")
  p.add_argument("--num", type=int, default=24, help="images per split")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--columns", type=int, default=8)
  p.add_argument("--max_lines", type=int, default=8, help="factor lines under each image")
  p.add_argument("--data_dir", default="")
  p.add_argument("--manual_dir", default="")
  p.add_argument("--image_size", type=int, default=None,
                 help="for tfds datasets with per-paper crops (celeb_a: 64 or 128)")
  args = p.parse_args(argv)
  splits = args.split.split(",") if args.split else None
  try:
    out, text = show(args.dataset, splits, args.out, args.num, args.seed, args.data_dir,
                     args.manual_dir, args.image_size, args.columns, args.max_lines)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
