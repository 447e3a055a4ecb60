"""The generic evaluator: what a method's config asks to be computed on held-out data.

Array work only (codes, scores, grids); the trainer decides where results are written.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from djax.data import pipeline
from djax.metrics import retrieval


def encode_split(method, params, stats, source, data_cfg, batch_size: int = 256,
                 factor_names=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Codes of a whole split (eval mode, one device) and its ground-truth factors."""
  encode = jax.jit(method.encode)
  n = len(source)
  feats, factors = [], {}
  for start in range(0, n, batch_size):
    ex = source.take(np.arange(start, min(start + batch_size, n)))
    x = pipeline.to_model_images(ex["image"], data_cfg.image_size, tuple(data_cfg.value_range))
    feats.append(np.asarray(encode(params, stats, jnp.asarray(x))))
    for k in factor_names or ():
      factors.setdefault(k, []).append(ex[k])
  return np.concatenate(feats), {k: np.concatenate(v) for k, v in factors.items()}


def evaluate_representation(method, params, stats, config, source) -> dict[str, Any]:
  """Scores named in ``config.eval.metrics`` on a split's codes."""
  results: dict[str, Any] = {}
  factor_names = list(config.eval.factors)
  features, factors = encode_split(method, params, stats, source, config.data,
                                   factor_names=factor_names)
  for name in config.eval.metrics:
    if name == "chunk_retrieval_map":
      results[name] = retrieval.chunk_attribute_map(features, factors, method.n_chunks)
    else:
      raise ValueError(f"unknown metric {name!r} in config.eval.metrics; "
                       f"known: ['chunk_retrieval_map']")
  return results


@functools.lru_cache(maxsize=None)
def _jit_eval_images(method):
  return jax.jit(method.eval_images)


def eval_images(method, params, stats, images) -> dict[str, np.ndarray]:
  return jax.device_get(_jit_eval_images(method)(params, stats, jnp.asarray(images)))
