"""How metric results print and which numbers head them: small pure functions that each
entry of :data:`djax.evaluation.METRICS` names (its ``headline`` and ``format``).

Headline keys are ``"group/name"`` (the keys ``djax/metrics/paper_numbers.json`` uses), e.g.
``nn_map/body`` (best chunk's retrieval mAP), ``mig``, ``dci/disentanglement``,
``probe/<factor>``, ``mae/<factor>``, ``swap/<factor>``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from djax.metrics import retrieval

# ----------------------------------------------------------------------------- headlines


def per_factor(prefix, per_factor_key: str, average_key: str) -> Callable[[Mapping], dict]:
  """``prefix/<factor>`` for each factor and ``prefix/average``; ``prefix`` may be a
  function of the result (e.g. the code slice it was computed on)."""
  def headline(r):
    p = prefix(r) if callable(prefix) else prefix
    out = {f"{p}/{k}": v for k, v in r[per_factor_key].items()}
    out[f"{p}/average"] = r[average_key]
    return out
  return headline


def score(name: str, key: str = "score") -> Callable[[Mapping], dict]:
  return lambda r: {name: r[key]}


value = score


def dci_headline(r) -> dict:
  return {f"dci/{k}": r[k] for k in ("disentanglement", "completeness", "informativeness_test")}


def swap_headline(prefix: str) -> Callable[[Mapping], dict]:
  return lambda r: {f"{prefix}/{k}": v for k, v in r["best"].items()}


def attribute_flip_headline(r) -> dict:
  return {"attribute_flip/average": r["average"]}


# ----------------------------------------------------------------------------- tables

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


def format_chunk_map(r) -> str:
  return ("Nearest-neighbour retrieval mAP per chunk (Hu et al. Table 2)\n"
          + retrieval.format_map_table(r))


def format_retrieval_map(r) -> str:
  return _per_factor_table(f"Nearest-neighbour retrieval mAP, code[{r['dims']}]",
                           {"mAP": r["map"], "random": r["chance"]})


def format_linear_probe(r) -> str:
  return _per_factor_table(
      f"Linear probe accuracy (fit on {r.get('fit_split')}, code[{r['dims']}])",
      {"accuracy": r["accuracy"], "balanced": r["balanced_accuracy"],
       "majority": r["majority"]})


def format_regression_mae(r) -> str:
  return _per_factor_table(
      f"Linear regression MAE (fit on {r.get('fit_split')}, code[{r['dims']}]"
      f"{', factors scaled to [0, 1]' if r.get('scaled') else ''}; lower is better)",
      {"MAE": r["mae"], "predict mean": r["baseline"]})


def format_mig(r) -> str:
  return _per_factor_table(f"MIG = {_f(r['score'])}  (gap / entropy per factor)",
                           {"MIG": r["per_factor"]})


def format_sap(r) -> str:
  return _per_factor_table(f"SAP = {_f(r['score'])}", {"SAP": r["per_factor"]})


def format_dci(r) -> str:
  return _per_factor_table(
      f"DCI: disentanglement {_f(r['disentanglement'])}, completeness "
      f"{_f(r['completeness'])}, informativeness (test accuracy) "
      f"{_f(r['informativeness_test'])} (train {_f(r['informativeness_train'])})",
      {"completeness": r["per_factor_completeness"],
       "test accuracy": r["per_factor_test_accuracy"]})


def format_factor_vae(r) -> str:
  return (f"FactorVAE score = {_f(r['score'])} (train {_f(r.get('train_accuracy'))}, "
          f"{r.get('num_active_dims')} active dimensions)")


def format_beta_vae(r) -> str:
  return f"BetaVAE score = {_f(r['score'])} (train {_f(r.get('train_accuracy'))})"


def format_swap_success(r) -> str:
  success = np.asarray(r["success"])
  rows = [["", *r["factors"]]]
  for i, p in enumerate(r["parts"]):
    rows.append([p, *(_f(v) for v in success[i])])
  rows.append(["best", *(_f(r["best"][k]) for k in r["factors"])])
  rows.append(["classifier acc.", *(_f(r["classifier_test_accuracy"].get(k))
                                    for k in r["factors"])])
  return (f"Swap success (Lezama Table 1; reference: {r.get('reference')}): swap the part into "
          f"another code, decode, the dataset classifier must see the swapped-in value\n"
          + format_table(rows))


def format_attribute_flip(r) -> str:
  return _per_factor_table(
      f"Attribute flip success (Lezama Table 2, alpha {r['alpha']}) = {_f(r['average'])}",
      {"success": r["success"], "classifier acc.": r["classifier_test_accuracy"]})


def format_reconstruction_mse(r) -> str:
  return f"Reconstruction MSE per pixel on {r['scale']}: {r['mse']:.5f} ({r['num_images']} images)"


def format_classifier_score(r) -> str:
  return (f"{r['label']}: {_f(r['score'], 3)} on {r['num_samples']} images "
          f"({r['generated_by']}); classifier test accuracy {_f(r['classifier_test_accuracy'])}")


def format_inception_score(r) -> str:
  return (f"Inception Score: {_f(r['score'], 3)} +- {_f(r['std'], 3)} on "
          f"{r['num_samples']} images ({r['generated_by']})")


def part_probe_headline(name: str) -> Callable[[Mapping], dict]:
  return lambda r: {f"{name}[{p}]/{k}": v for p, pr in r["parts"].items()
                    for k, v in pr["accuracy"].items()}


def format_part_probe(note: str) -> Callable[[Mapping], str]:
  return lambda r: "\n\n".join(f"code part {p}{note}: " + format_linear_probe(pr)
                                 for p, pr in r["parts"].items())


def conditional_generation_headline(r) -> dict:
  return {"conditional/accuracy": r["accuracy"],
          "conditional/diversity_ratio": r["diversity_ratio"]}


def format_conditional_generation(r) -> str:
  per = ", ".join(f"{k}: {_f(v)}" for k, v in r["per_class"].items())
  return (f"Class-conditional samples ({r['num_generated']}, {r['sampling']}) classified as "
          f"their class: {_f(r['accuracy'])} (per class {per}; classifier test accuracy "
          f"{_f(r['classifier_test_accuracy'])})\n"
          f"Intra-class diversity 1 - MS-SSIM by conditioning class: generated "
          f"{_f(r['diversity'], 4)}, real {_f(r['diversity_real'], 4)}, ratio "
          f"{_f(r['diversity_ratio'], 3)}")


def format_ms_ssim_diversity(r) -> str:
  return (f"Intra-class diversity 1 - MS-SSIM (Zheng & Sun Table 2): {_f(r['diversity'], 4)} "
          f"({r['generated_by']}; classes = {r['grouped_by']} of '{r['factor']}')")
