"""Headline numbers and plain-text tables of evaluation results (``djax.evaluate``/``report``).

:func:`headline` flattens the results of :data:`djax.evaluation.METRICS` into
``"group/name" -> float`` (the keys ``djax/metrics/paper_numbers.json`` uses), e.g.
``nn_map/body`` (best chunk's retrieval mAP), ``mig``, ``dci/disentanglement``,
``probe/<factor>``, ``mae/<factor>``, ``swap/<factor>``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from djax.metrics import retrieval

__all__ = ["headline", "format_results", "format_table"]

# Headline keys where smaller is better (the report marks them).
LOWER_IS_BETTER_PREFIXES = ("mae/",)


# metric -> (headline prefix, its per-factor dict, its average) for the per-factor metrics
_PER_FACTOR = {
    "chunk_retrieval_map": (lambda r: "nn_map", "best_map", "best_average"),
    "retrieval_map": (lambda r: f"map[{r['dims']}]", "map", "average"),
    "linear_probe": (lambda r: "probe", "accuracy", "average"),
    "linear_regression_mae": (lambda r: "mae", "mae", "average"),
}


def headline(results: Mapping[str, Any]) -> dict[str, float]:
  out: dict[str, float] = {}
  for name, r in results.items():
    if name in _PER_FACTOR:
      prefix, per_factor, average = _PER_FACTOR[name]
      prefix = prefix(r)
      for k, v in r[per_factor].items():
        out[f"{prefix}/{k}"] = v
      out[f"{prefix}/average"] = r[average]
    elif name in ("mig", "sap", "factor_vae", "beta_vae"):
      out[name] = r["score"]
    elif name == "dci":
      for k in ("disentanglement", "completeness", "informativeness_test"):
        out[f"dci/{k}"] = r[k]
    elif name == "swap_success":
      for k, v in r["best"].items():
        out[f"swap/{k}"] = v
    elif name == "attribute_flip":
      out["attribute_flip/average"] = r["average"]
    elif name in ("classifier_score", "inception_score"):
      out[name] = r["score"]
    elif name == "ms_ssim_diversity":
      out["ms_ssim_diversity"] = r["diversity"]
    elif name == "reconstruction_mse":
      out["reconstruction_mse"] = r["mse"]
  return {k: float(v) for k, v in out.items()}


def format_table(rows: list[list[str]], header_rule: bool = True) -> str:
  widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
  lines = []
  for i, r in enumerate(rows):
    lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                           for j, c in enumerate(r)))
    if i == 0 and header_rule:
      lines.append("-" * len(lines[-1]))
  return "\n".join(lines)


def _f(v, p=3) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "-"
  return f"{v:.{p}f}"


def _per_factor_table(title: str, columns: dict[str, Mapping[str, float]]) -> str:
  names = list(next(iter(columns.values())))
  rows = [["", *names]]
  for label, vals in columns.items():
    rows.append([label, *(_f(vals.get(k)) for k in names)])
  return f"{title}\n{format_table(rows)}"


def format_results(results: Mapping[str, Any]) -> str:
  """Every metric's table, in the order of ``results``."""
  parts = []
  for name, r in results.items():
    if name == "chunk_retrieval_map":
      parts.append("Nearest-neighbour retrieval mAP per chunk (Hu et al. Table 2)\n"
                   + retrieval.format_map_table(r))
    elif name == "retrieval_map":
      parts.append(_per_factor_table(f"Nearest-neighbour retrieval mAP, code[{r['dims']}]",
                                     {"mAP": r["map"], "random": r["chance"]}))
    elif name == "linear_probe":
      parts.append(_per_factor_table(
          f"Linear probe accuracy (fit on {r.get('fit_split')}, code[{r['dims']}])",
          {"accuracy": r["accuracy"], "balanced": r["balanced_accuracy"],
           "majority": r["majority"]}))
    elif name == "linear_regression_mae":
      parts.append(_per_factor_table(
          f"Linear regression MAE (fit on {r.get('fit_split')}, code[{r['dims']}]"
          f"{', factors scaled to [0, 1]' if r.get('scaled') else ''}; lower is better)",
          {"MAE": r["mae"], "predict mean": r["baseline"]}))
    elif name == "mig":
      parts.append(_per_factor_table(f"MIG = {_f(r['score'])}  (gap / entropy per factor)",
                                     {"MIG": r["per_factor"]}))
    elif name == "sap":
      parts.append(_per_factor_table(f"SAP = {_f(r['score'])}", {"SAP": r["per_factor"]}))
    elif name == "dci":
      parts.append(_per_factor_table(
          f"DCI: disentanglement {_f(r['disentanglement'])}, completeness "
          f"{_f(r['completeness'])}, informativeness (test accuracy) "
          f"{_f(r['informativeness_test'])} (train {_f(r['informativeness_train'])})",
          {"completeness": r["per_factor_completeness"],
           "test accuracy": r["per_factor_test_accuracy"]}))
    elif name == "factor_vae":
      parts.append(f"FactorVAE score = {_f(r['score'])} (train {_f(r.get('train_accuracy'))}, "
                   f"{r.get('num_active_dims')} active dimensions)")
    elif name == "beta_vae":
      parts.append(f"BetaVAE score = {_f(r['score'])} (train {_f(r.get('train_accuracy'))})")
    elif name == "swap_success":
      success = np.asarray(r["success"])
      rows = [["", *r["factors"]]]
      for i, p in enumerate(r["parts"]):
        rows.append([p, *(_f(v) for v in success[i])])
      rows.append(["best", *(_f(r["best"][k]) for k in r["factors"])])
      rows.append(["classifier acc.", *(_f(r["classifier_test_accuracy"].get(k))
                                        for k in r["factors"])])
      parts.append("Swap success (Lezama Table 1): swap the part into another code, decode, "
                   "the dataset classifier must see the swapped-in value\n" + format_table(rows))
    elif name == "attribute_flip":
      parts.append(_per_factor_table(
          f"Attribute flip success (Lezama Table 2, alpha {r['alpha']}) = {_f(r['average'])}",
          {"success": r["success"], "classifier acc.": r["classifier_test_accuracy"]}))
    elif name == "classifier_score":
      parts.append(f"{r['label']}: {_f(r['score'], 3)} on {r['num_samples']} images "
                   f"({r['generated_by']}); classifier test accuracy "
                   f"{_f(r['classifier_test_accuracy'])}")
    elif name == "inception_score":
      parts.append(f"Inception Score: {_f(r['score'], 3)} +- {_f(r['std'], 3)} on "
                   f"{r['num_samples']} images ({r['generated_by']})")
    elif name == "ms_ssim_diversity":
      parts.append(f"Intra-class diversity 1 - MS-SSIM (Zheng & Sun Table 2): "
                   f"{_f(r['diversity'], 4)} ({r['generated_by']}; classes = "
                   f"{r['grouped_by']} of '{r['factor']}')")
    else:
      parts.append(f"{name}: {r}")
  return "\n\n".join(parts)
