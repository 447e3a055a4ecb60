"""Several runs' evaluations in one table: ``python -m djax.report RUN_DIR... [--out=DIR]``.

Reads each ``RUN_DIR/eval.json`` (written by ``djax.evaluate`` or at the end of training;
a path to a JSON file works too), and writes ``DIR/report.md`` (default ``./report``) with
one row per headline number (each metric's ``headline`` in ``djax.evaluation.METRICS``) and one column per run,
plus, where a paper reports the number, a column with the paper's value
(``djax/metrics/paper_numbers.json``: the row djax's method reimplements, with the table it
comes from), and ``DIR/report.png``, a bar chart of the numbers that lie in [0, 1]
(drawn with Pillow), and ``DIR/curves.png``: every logged loss and metric of each run's
``metrics.jsonl`` against the step, one panel per quantity, the runs overlaid (a single run
gives that run's curves; a log scale where a positive quantity spans over 100x). The
markdown is also printed.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app, flags

PAPER_NUMBERS = os.path.join(os.path.dirname(__file__), "metrics", "paper_numbers.json")
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def load_eval(path: str) -> dict[str, Any]:
  """A run's eval.json with ``headline``, ``method`` and ``name`` filled in."""
  file = os.path.join(path, "eval.json") if os.path.isdir(path) else path
  with open(file) as f:
    ev = json.load(f)
  run_dir = os.path.dirname(os.path.abspath(file))
  if "headline" not in ev:
    from djax import evaluation
    ev["headline"] = evaluation.headline(ev.get("results", {}))
  if not ev.get("method"):
    try:
      with open(os.path.join(run_dir, "config.json")) as f:
        ev["method"] = json.load(f).get("method")
    except (OSError, ValueError):
      ev["method"] = None
  ev.setdefault("name", os.path.basename(run_dir.rstrip("/")) or run_dir)
  return ev


def paper_references(runs: list[dict]) -> list[dict]:
  """Entries of paper_numbers.json whose dataset and method match one of the runs."""
  with open(PAPER_NUMBERS) as f:
    table = json.load(f)
  refs = []
  for key, entry in table.items():
    if key.startswith("_"):
      continue
    for r in runs:
      base = str(r.get("dataset", "")).split("/")[0]
      if base == entry["dataset"] and r.get("method") == entry["method"]:
        refs.append({"id": key, **entry, "values": entry["rows"][entry["compare_row"]]})
        break
  return refs


def _fmt(v) -> str:
  if v is None:
    return ""
  return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def markdown(runs: list[dict], refs: list[dict]) -> str:
  keys: list[str] = []
  for r in runs:
    keys += [k for k in r["headline"] if k not in keys]
  header = ["metric"] + [f"{r['name']}" for r in runs] + [
      f"paper: {ref['compare_row']} [{i + 1}]" for i, ref in enumerate(refs)]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for k in keys:
    cells = [k] + [_fmt(r["headline"].get(k)) for r in runs] + [
        _fmt(ref["values"].get(k)) for ref in refs]
    lines.append("| " + " | ".join(cells) + " |")
  out = ["# djax evaluation report", ""]
  out.append("Runs: " + "; ".join(
      f"**{r['name']}** = {r.get('method')} on {r.get('dataset')}:{r.get('split')}, step "
      f"{r.get('step')}" for r in runs) + ".")
  out += ["", *lines, ""]
  for i, ref in enumerate(refs):
    note = f" {ref['note']}" if ref.get("note") else ""
    out.append(f"[{i + 1}] {ref['source']}; row '{ref['compare_row']}'.{note}")
  out.append("")
  out.append("Keys: nn_map/* = best chunk's retrieval mAP; mae/* lower is better; "
             "classifier_score is the Inception-Score formula with a djax-trained classifier, "
             "not the Inception Score.")
  return "\n".join(out) + "\n"


def bar_chart(runs: list[dict], refs: list[dict], path: str, x_max: float = 1.0,
              digits: int = 2) -> str:
  """Horizontal grouped bars, one group per headline number in [0, ``x_max``]."""
  from PIL import Image, ImageDraw, ImageFont

  series = [(r["name"], r["headline"]) for r in runs] + [
      (f"paper: {ref['compare_row']}", ref["values"]) for ref in refs]
  keys: list[str] = []
  for r in runs:
    keys += [k for k in r["headline"] if k not in keys]
  keys = [k for k in keys if all(0.0 <= s.get(k, 0.0) <= x_max for _, s in series)]
  font = ImageFont.load_default()
  bar_h, gap, label_w, plot_w, top = 9, 8, 230, 480, 20 + 14 * len(series)
  height = top + len(keys) * (len(series) * bar_h + gap) + 30
  img = Image.new("RGB", (label_w + plot_w + 60, max(height, top + 40)), "white")
  draw = ImageDraw.Draw(img)
  for i, (name, _) in enumerate(series):  # legend
    y = 8 + 14 * i
    draw.rectangle([label_w, y, label_w + 10, y + 10], fill=PALETTE[i % len(PALETTE)])
    draw.text((label_w + 16, y - 1), name, fill="black", font=font)
  y = top
  for k in keys:
    draw.text((8, y + (len(series) * bar_h) / 2 - 6), k, fill="black", font=font)
    for i, (_, vals) in enumerate(series):
      v = vals.get(k)
      if v is not None:
        x1 = label_w + int(round(v / x_max * plot_w))
        draw.rectangle([label_w, y, max(x1, label_w + 1), y + bar_h - 2],
                       fill=PALETTE[i % len(PALETTE)])
        draw.text((x1 + 4, y - 2), f"{v:.{digits}f}", fill="black", font=font)
      y += bar_h
    y += gap
  for t in (0.0, 0.25, 0.5, 0.75, 1.0):  # axis
    x = label_w + int(t * plot_w)
    draw.line([x, top - 4, x, y], fill=(200, 200, 200))
    draw.text((x - 8, y + 4), f"{t * x_max:.3g}", fill="black", font=font)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


_NOT_CURVES = ("step", "epoch", "steps_per_second")


def load_curves(path: str) -> dict[str, list[tuple[int, float]]]:
  """quantity -> [(step, value)] from a run's metrics.jsonl ({} when it has none)."""
  run_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  file = os.path.join(run_dir, "metrics.jsonl")
  out: dict[str, list[tuple[int, float]]] = {}
  if not os.path.exists(file):
    return out
  with open(file) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      for k, v in row.items():
        if k not in _NOT_CURVES and isinstance(v, (int, float)) and v == v:
          out.setdefault(k, []).append((int(row["step"]), float(v)))
  return out


def curves_chart(named: list[tuple[str, dict]], path: str, cols: int = 3) -> str | None:
  """One panel per quantity, every run's curve overlaid in its colour."""
  import math

  from PIL import Image, ImageDraw, ImageFont
  keys: list[str] = []
  for _, c in named:
    keys += [k for k in c if k not in keys]
  if not keys:
    return None
  font = ImageFont.load_default()
  pw, ph, m = 330, 190, 42
  rows = -(-len(keys) // cols)
  legend = 16 * len(named) + 10
  img = Image.new("RGB", (cols * pw, legend + rows * ph), "white")
  draw = ImageDraw.Draw(img)
  for i, (name, _) in enumerate(named):
    draw.rectangle([10, 6 + 16 * i, 20, 16 + 16 * i], fill=PALETTE[i % len(PALETTE)])
    draw.text((26, 5 + 16 * i), name, fill="black", font=font)
  for j, k in enumerate(keys):
    x0, y0 = (j % cols) * pw, legend + (j // cols) * ph
    pts = [p for _, c in named for p in c.get(k, [])]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    log = min(ys) > 0 and max(ys) / min(ys) > 100
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    lo_x, hi_x = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    lo_y, hi_y = f(min(ys)), f(max(ys))
    if hi_y <= lo_y:
      hi_y = lo_y + 1e-9 + abs(lo_y) * 1e-3
    box = (x0 + m, y0 + 18, x0 + pw - 10, y0 + ph - 24)
    draw.rectangle(box, outline=(180, 180, 180))
    draw.text((x0 + m, y0 + 3), k + (" (log)" if log else ""), fill="black", font=font)
    draw.text((x0 + 2, box[1]), f"{max(ys):.3g}", fill="black", font=font)
    draw.text((x0 + 2, box[3] - 10), f"{min(ys):.3g}", fill="black", font=font)
    draw.text((box[0], box[3] + 4), str(lo_x), fill="black", font=font)
    draw.text((box[2] - 40, box[3] + 4), str(hi_x), fill="black", font=font)

    def xy(step, v):
      return (box[0] + (step - lo_x) / (hi_x - lo_x) * (box[2] - box[0]),
              box[3] - (f(v) - lo_y) / (hi_y - lo_y) * (box[3] - box[1]))

    for i, (_, c) in enumerate(named):
      line = [xy(st, v) for st, v in c.get(k, [])]
      if len(line) > 1:
        draw.line(line, fill=PALETTE[i % len(PALETTE)], width=2)
      elif line:
        draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2],
                     fill=PALETTE[i % len(PALETTE)])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


def with_untrained(runs: list[dict], paths: list[str]) -> tuple[list[dict], list[str]]:
  """Each run followed by its eval.json's ``untrained`` row (the same metrics on the initial
  parameters), as a column of its own."""
  out, out_paths = [], []
  for r, p in zip(runs, paths):
    out.append(r)
    out_paths.append(p)
    u = r.get("untrained")
    if u and u.get("headline"):
      out.append({**{k: r.get(k) for k in ("method", "dataset", "split")},
                  "name": f"{r['name']} untrained", "step": u.get("step", 0),
                  "headline": u["headline"]})
      out_paths.append(None)
  return out, out_paths


def variant_table(config, results: dict[str, Any], workdir: str) -> str:
  """A cross-method table of a ``config.variants`` run, beside a paper's table.

  ``config.table``: ``paper`` (an entry of paper_numbers.json), ``columns`` (headline keys,
  the last one ranks), ``rows`` (variant -> the paper's row it reimplements) and optionally
  ``families`` (paper row -> variants of a sweep, of which the one with the lowest last
  column is reported, as a paper reporting "the best results" of a sweep does) and
  ``control`` (a further headline key shown in its own column). Draws WORKDIR/variants.png
  (djax's and the paper's value of the last column per row) and returns the markdown (the
  stage runner writes it to variants.md). Adding a row is one more variant and one more ``rows`` entry.
  """
  t = config.table
  cols = list(t.columns)
  with open(PAPER_NUMBERS) as f:
    paper = json.load(f)[t.paper]
  head = {name: ((r["rows"][-1].get("eval") or {}).get("headline") or {})
          for name, r in results.items()}
  cost = {name: r.get("cost", {}).get("seconds_per_step") for name, r in results.items()}
  families = {k: list(v) for k, v in dict(t.get("families") or {}).items()}
  rank = cols[-1]

  def best(variants):
    done = [v for v in variants if rank in head.get(v, {})]
    return min(done, key=lambda v: head[v][rank]) if done else None

  chosen = []  # (paper row, variant)
  order = list(t.get("order") or t.rows)
  for variant in order:
    row = t.rows[variant]
    if row in families:
      pick = best(families[row])
      if pick is not None and (row, pick) not in chosen:
        chosen.append((row, pick))
    elif variant in results:
      chosen.append((row, variant))
  control = t.get("control")
  header = ["row", "variant"] + cols + [f"paper {cols[-1]}"] + (
      [f"{control} (control)"] if control else []) + ["ms/step"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row, v in chosen:
    h = head.get(v, {})
    cells = [row, v] + [_fmt(h.get(k)) for k in cols] + [
        _fmt(paper["rows"].get(row, {}).get(rank))] + (
        [_fmt(h.get(control))] if control else []) + [
        "" if cost.get(v) is None else f"{1e3 * cost[v]:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  out = [f"# {paper['source']}", "", *lines, ""]
  swept = [(row, vs) for row, vs in families.items() if len(vs) > 1]
  if swept:
    out.append("Sweeps (the best is the row above): " + "; ".join(
        f"{row}: " + ", ".join(f"{v} {_fmt(head.get(v, {}).get(rank))}" for v in vs)
        for row, vs in swept) + ".")
    out.append("")
  ordered = sorted(chosen, key=lambda rv: head.get(rv[1], {}).get(rank, float("inf")))
  out.append("djax's ranking by " + rank + ": " + " < ".join(r for r, _ in ordered) + ".")
  paper_order = sorted((r for r, _ in chosen if rank in paper["rows"].get(r, {})),
                       key=lambda r: paper["rows"][r][rank])
  out.append("The paper's: " + " < ".join(paper_order) + ".")
  out += ["", "![djax and the paper, " + rank + "](variants.png)", ""]
  md = "\n".join(out) + "\n"
  series = [{"name": "djax", "headline": {r: head[v][rank] for r, v in chosen
                                          if rank in head.get(v, {})}},
            {"name": "paper", "headline": {r: paper["rows"][r][rank] for r, _ in chosen
                                           if rank in paper["rows"].get(r, {})}}]
  # The axis spans the values (MAEs of 0.05-0.1 are indistinguishable on [0, 1]).
  top = max([v for s in series for v in s["headline"].values()] + [1e-9])
  bar_chart(series, [], os.path.join(workdir, "variants.png"), x_max=1.15 * top, digits=3)
  return md


def make_report(paths: list[str], out_dir: str) -> tuple[str, str, str]:
  runs, paths = with_untrained([load_eval(p) for p in paths], list(paths))
  names = [r["name"] for r in runs]
  for i, r in enumerate(runs):  # disambiguate equal directory names
    if names.count(r["name"]) > 1:
      r["name"] = f"{r['name']}#{i + 1}"
  refs = paper_references(runs)
  md = markdown(runs, refs)
  os.makedirs(out_dir, exist_ok=True)
  md_path = os.path.join(out_dir, "report.md")
  png_path = bar_chart(runs, refs, os.path.join(out_dir, "report.png"))
  md += "\n![scores in [0, 1]](report.png)\n"
  curves = curves_chart([(r["name"], load_curves(p)) for r, p in zip(runs, paths) if p],
                        os.path.join(out_dir, "curves.png"))
  if curves:
    md += "\n![losses and metrics against the step](curves.png)\n"
  with open(md_path, "w") as f:
    f.write(md)
  return md, md_path, png_path


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("usage: python -m djax.report RUN_DIR [RUN_DIR ...] [--out=DIR]")
  md, md_path, png_path = make_report(argv[1:], flags.FLAGS.out)
  print(md)
  print(f"wrote {md_path} and {png_path}" + (
      f" and {os.path.join(os.path.dirname(md_path), 'curves.png')}"
      if os.path.exists(os.path.join(os.path.dirname(md_path), "curves.png")) else ""))


if __name__ == "__main__":
  flags.DEFINE_string("out", "report", "Directory for report.md and report.png.")
  app.run(main)
