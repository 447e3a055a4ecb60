"""The exact-vs-approximate Jacobian ablation (djax's own; Lezama 2019 Table 1 setting).

    python -m djax.main --config=experiments/jacobian_ablation_mnist.py --workdir=runs/jac-ablation

Runs the progressive schedule of ``jacobian_mnist.py:small`` (mnist_5k) four times with the
same seed and schedule — the three estimators of eq. 9's difference term and the
no-Jacobian baseline (λ_y = λ_diff = 0, cross-covariance only, as in the paper) — sharing
the teacher (stage 0), and writes WORKDIR/variants.md: swap success of units 0:2 and test
MSE of the final student, seconds per train step and the compiled step's memory per
estimator. ``:elastic`` trains on mnist_5k_elastic (mnist_5k's training digits and 14
elastic distortions of each: 60,000, as many as the paper's MNIST) with as many steps per
stage; ``:full`` uses the paper-sized schedule (tfds mnist, 100 epochs per stage).
"""

import importlib.util
import os

import ml_collections


def _base(variant):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jacobian_mnist.py")
  spec = importlib.util.spec_from_file_location("jacobian_mnist_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = _base({"full": "full", "elastic": "small,elastic"}.get(variant or "", "small"))
  c.progress_bar = False
  # One run per estimator of eq. 9's difference term, and the no-Jacobian baseline; stage 0
  # (the teacher) is the same for all and trained once (djax.stages.run_variants).
  c.variants = ml_collections.ConfigDict({
      "finite_difference": {"loss": {"estimator": "finite_difference"}},
      "jvp": {"loss": {"estimator": "jvp"}},
      "full": {"loss": {"estimator": "full"}},
      "no_jacobian": {"loss": {"lambda_y": 0.0, "lambda_diff": 0.0}},
  })
  c.variants_share_stages = 1
  if variant not in (None, "", "small", "elastic", "full"):
    raise ValueError(f"unknown variant {variant!r} of jacobian_ablation_mnist; use small, "
                     f"elastic or full")
  return c
