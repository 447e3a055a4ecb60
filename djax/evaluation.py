"""The generic evaluator: what a method's config asks to be computed on held-out data.

``config.eval.metrics`` names metrics of :data:`METRICS`; each is a function of an
:class:`EvalContext` (the split's codes and factors, the method and its variables, lazily: a
second split's codes for probes, the dataset classifier, decoded images) and returns a
JSON-able dict (numpy arrays allowed). Each metric declares the method capabilities it
needs (``djax.methods.base``), its headline numbers and how it prints; a new metric is one
function and one entry. :func:`evaluate_and_write` is the report the trainer and
``djax.evaluate`` write (eval.json, atomically).

Optional ``config.eval`` keys (all have defaults):

* ``code_slice`` (``retrieval_map``, ``linear_probe``, ``linear_regression_mae``): the part
  of the code to score, ``"start:stop"``; default the whole code.
* ``probe_split`` (probes): the split the probes are fitted on (default ``validation``);
  they are scored on ``eval.split``.
* ``continuous_factors`` (``linear_regression_mae``): names; default the dataset's.
* ``swap_dims`` (``swap_success``): the swapped part y, ``"start:stop"``; default each chunk
  of the method's ``code_parts`` (e.g. each chunk) in turn.  ``swap_factors``: factors the classifier
  judges (default ``eval.factors``).  ``swap_labels``: what a swap must reach,
  ``'reconstruction'`` (default; the authors' code: the classifier's label of the partner's
  reconstruction, pairs whose reconstructions get different labels) or ``'true'`` (the
  paper's text, "two images of different digits": the partner's true label, pairs of
  different true labels; the teacher then scores the classifier's accuracy on its
  reconstructions, as Table 1's 94.3 % does).
* ``attribute_units`` (``attribute_flip``): factor -> code unit (default: the method's
  ``attribute_units``, e.g. Lezama's CelebA model); ``flip_alpha`` (40).
* ``score_factor`` (``classifier_score``, ``inception_score``, ``ms_ssim_diversity``): the
  factor whose classes group generated images (default the first of ``eval.factors``);
  ``num_generated`` (default 2000); ``inception_weights``: path of the Inception file.
* ``classifier_dir``, ``classifier_steps``, ``classifier_batch_size``: the dataset
  classifier's cache and training.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from djax import fileio
from djax.data import pipeline
from djax.methods import base
from djax.metrics import disentanglement, generation, probes, retrieval, summary


def encode_split(method, params, stats, source, data_cfg, batch_size: int = 256,
                 factor_names=None, meta=None,
                 sample_rng=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Codes of a whole split (eval mode, one device) and its ground-truth factors. The
  inputs are read under the dataset's key (``meta.data_key``; images by default).
  ``sample_rng``: codes drawn from the posterior (``method.encode_sample``) instead."""
  if sample_rng is None:
    jitted = jax.jit(method.encode)
    encode = lambda x, start: jitted(params, stats, x)
  else:  # a batch's draw depends on its place in the split only
    jitted = jax.jit(method.encode_sample)
    encode = lambda x, start: jitted(params, stats, jax.random.fold_in(sample_rng, start), x)
  meta = meta or pipeline.DatasetMeta("", "", 0, (), (0.0, 1.0), {})
  n = len(source)
  feats, factors = [], {}
  for start in range(0, n, batch_size):
    ex = source.take(np.arange(start, min(start + batch_size, n)))
    x = pipeline.model_inputs(ex, meta, data_cfg)
    feats.append(np.asarray(encode(jnp.asarray(x), start)))
    for k in factor_names or ():
      factors.setdefault(k, []).append(ex[k])
  return np.concatenate(feats), {k: np.concatenate(v) for k, v in factors.items()}


@dataclasses.dataclass
class EvalContext:
  """What metrics are computed from; expensive parts are built on first use and kept."""
  method: Any
  params: Any
  stats: Any
  config: Any
  source: Any  # the evaluated split
  features: np.ndarray  # [N, D] codes of ``source``
  factors: dict[str, np.ndarray]  # eval.factors of ``source``
  _cache: dict = dataclasses.field(default_factory=dict)

  @property
  def eval_cfg(self):
    return self.config.eval

  def opt(self, key: str, default=None):
    value = self.config.eval.get(key, default)
    return default if value is None else value

  @property
  def seed(self) -> int:
    return int(self.config.get("seed", 0))

  def split_meta(self):
    if "meta" not in self._cache:
      self._cache["meta"] = pipeline.load_split(self.config.data, self.config.eval.split)[1]
    return self._cache["meta"]

  def probe_split(self) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Codes and factors (eval.factors + continuous ones) of ``eval.probe_split``."""
    if "probe" not in self._cache:
      split = self.opt("probe_split", "validation")
      src, _ = pipeline.load_split(self.config.data, split)
      names = list(self.config.eval.factors) + self.continuous_names()
      feats, facs = encode_split(self.method, self.params, self.stats, src, self.config.data,
                                 factor_names=names, meta=self.split_meta())
      self._cache["probe"] = (feats, facs, split)
    return self._cache["probe"]

  def continuous_names(self) -> list[str]:
    names = self.opt("continuous_factors", None)
    if names is None:
      names = list(getattr(self.split_meta(), "continuous_factors", {}) or {})
    return list(names)

  def eval_factors_with(self, names) -> dict[str, np.ndarray]:
    """The evaluated split's values of ``names`` (read from the source if not loaded)."""
    missing = [k for k in names if k not in self.factors]
    if missing:
      ex = self.source.take(np.arange(len(self.source)))
      for k in missing:
        self.factors[k] = np.asarray(ex[k])
    return {k: self.factors[k] for k in names}

  def classifier(self):
    if "classifier" not in self._cache:
      from djax.metrics import classifier
      names = list(self.opt("swap_factors", None) or self.config.eval.factors)
      for k in self.attribute_units():
        if k not in names:
          names.append(k)
      self._cache["classifier"] = classifier.get_classifier(
          self.config.data, names, cache_dir=self.opt("classifier_dir", None) or None,
          steps=int(self.opt("classifier_steps", 800)),
          batch_size=int(self.opt("classifier_batch_size", 128)), seed=self.seed)
    return self._cache["classifier"]

  def attribute_units(self) -> dict[str, int]:
    """``eval.attribute_units``, else the method's own ``attribute_units`` (factor -> unit)."""
    units = self.opt("attribute_units", None)
    if not units and "attribute_units" in base.capabilities(self.method):
      units = self.method.attribute_units()
    return {str(k): int(v) for k, v in dict(units).items()} if units else {}

  def decode(self, codes: np.ndarray, batch_size: int = 256) -> np.ndarray:
    fn = self._cache.get("decode_fn")
    if fn is None:
      base.require(self.method, ("decode",), "decoding codes")
      fn = jax.jit(self.method.decode)
      self._cache["decode_fn"] = fn
    out = []
    for s in range(0, len(codes), batch_size):
      chunk = np.asarray(codes[s:s + batch_size], np.float32)
      n = len(chunk)  # pad to the batch size: one compilation for every batch
      chunk = np.pad(chunk, ((0, batch_size - n),) + ((0, 0),) * (chunk.ndim - 1))
      out.append(np.asarray(fn(self.params, self.stats, jnp.asarray(chunk)))[:n])
    return np.concatenate(out)

  def parts(self) -> dict[str, np.ndarray]:
    """Name -> column indices of each swappable part of the code."""
    dims = self.opt("swap_dims", None)
    d = self.features.shape[1]
    if dims:
      return {f"y[{dims}]": retrieval.select_dims(np.arange(d)[None], dims)[0]}
    if "code_parts" in base.capabilities(self.method):
      return base.code_part_columns(self.method, d)
    raise ValueError("swap_success needs config.eval.swap_dims (the y part of the code) for a "
                     "method that declares no code_parts")

  def pairs(self) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index pairs over the split: a = every example, b = a random other one."""
    if "pairs" not in self._cache:
      rng = np.random.default_rng([self.seed, 1])
      n = len(self.features)
      a = np.arange(n)
      b = (a + rng.integers(1, n, n)) % n
      self._cache["pairs"] = (a, b)
    return self._cache["pairs"]

  def generated(self) -> tuple[np.ndarray, str]:
    """Images the model generates, and how: a method's ``sample`` if it has one, else
    decoded random chunk mixes of two test codes (Hu et al.'s x3), else decoded swaps of
    ``swap_dims``, else reconstructions."""
    if "generated" in self._cache:
      return self._cache["generated"]
    n = min(int(self.opt("num_generated", 2000)), len(self.features))
    rng = np.random.default_rng([self.seed, 2])
    caps = base.capabilities(self.method)
    if "sample" in caps:
      imgs = np.asarray(self.method.sample(self.params, self.stats,
                                           jax.random.PRNGKey(self.seed), n))
      how = "method.sample"
    else:
      a = rng.choice(len(self.features), n, replace=False)
      b = rng.choice(len(self.features), n, replace=True)
      fa, fb = self.features[a], self.features[b]
      if "code_parts" in caps:
        parts = list(base.code_part_columns(self.method, fa.shape[1]).values())
        take = rng.integers(0, 2, (n, len(parts))).astype(bool)
        mask = np.zeros(fa.shape, bool)
        for j, cols in enumerate(parts):
          mask[:, cols] = take[:, j:j + 1]
        codes, how = np.where(mask, fa, fb), "decoded random part mixes of two test codes"
      elif self.opt("swap_dims", None):
        cols = retrieval.select_dims(np.arange(fa.shape[1])[None], self.opt("swap_dims"))[0]
        codes = fa.copy()
        codes[:, cols] = fb[:, cols]
        how = f"decoded swaps of y = {self.opt('swap_dims')} between two test codes"
      else:
        codes, how = fa, "reconstructions of test images"
      imgs = self.decode(codes.astype(np.float32))
    self._cache["generated"] = (imgs, how)
    return self._cache["generated"]


# ----------------------------------------------------------------------------- metrics

def _chunk_retrieval_map(ctx: EvalContext):
  parts = list(base.code_part_columns(ctx.method, ctx.features.shape[1]).values())
  size = len(parts[0])
  if any(not np.array_equal(c, np.arange(i * size, (i + 1) * size)) for i, c in enumerate(parts)):
    raise ValueError("chunk_retrieval_map needs code_parts that are equal, consecutive chunks; "
                     "use retrieval_map with eval.code_slice for other parts")
  return retrieval.chunk_attribute_map(ctx.features, ctx.factors, len(parts))


def _retrieval_map(ctx: EvalContext):
  return retrieval.factor_map(ctx.features, ctx.factors, dims=ctx.opt("code_slice", None))


def _linear_probe(ctx: EvalContext):
  feats, facs, split = ctx.probe_split()
  names = list(ctx.config.eval.factors)
  out = probes.linear_classifier_accuracy(feats, {k: facs[k] for k in names}, ctx.features,
                                          ctx.factors, dims=ctx.opt("code_slice", None))
  out["fit_split"] = split
  return out


def _part_probe(ctx: EvalContext):
  """``linear_probe`` on each of the method's ``code_parts`` (e.g. Mathieu's s and z) from
  one encoding of the splits."""
  feats, facs, split = ctx.probe_split()
  names = list(ctx.config.eval.factors)
  return _probe_each_part(ctx, feats, {k: facs[k] for k in names}, ctx.features, ctx.factors,
                          {"fit_split": split})


def _probe_each_part(ctx, fit, fit_factors, test, test_factors, extra: dict) -> dict:
  out = {}
  for part, cols in base.code_part_columns(ctx.method, test.shape[1]).items():
    r = probes.linear_classifier_accuracy(fit, fit_factors, test, test_factors,
                                          dims=f"{cols[0]}:{cols[-1] + 1}")
    out[part] = {**r, **extra}
  return {"parts": out}


def _part_probe_sampled(ctx: EvalContext):
  """``part_probe`` on codes drawn from the posterior (``method.encode_sample``, one draw
  per example of each split), so that a part is credited only with what survives its noise."""
  split = ctx.opt("probe_split", "validation")
  names = list(ctx.config.eval.factors)
  key = jax.random.PRNGKey(ctx.seed)
  src, _ = pipeline.load_split(ctx.config.data, split)
  fit, fit_f = encode_split(ctx.method, ctx.params, ctx.stats, src, ctx.config.data,
                            factor_names=names, meta=ctx.split_meta(),
                            sample_rng=jax.random.fold_in(key, 1))
  test, _ = encode_split(ctx.method, ctx.params, ctx.stats, ctx.source, ctx.config.data,
                         meta=ctx.split_meta(), sample_rng=jax.random.fold_in(key, 2))
  return _probe_each_part(ctx, fit, fit_f, test, ctx.eval_factors_with(names),
                          {"fit_split": split, "codes": "posterior samples"})


def _linear_regression_mae(ctx: EvalContext, dims: str | None = None):
  names = ctx.continuous_names()
  if not names:
    raise ValueError("linear_regression_mae needs continuous factors: the dataset has none and "
                     "config.eval.continuous_factors is not set")
  feats, facs, split = ctx.probe_split()
  # Ruiz et al.'s MAEs (~0.05-0.1 for width in 1..10 px) imply factors scaled to [0, 1]:
  # scale by the dataset's declared ranges where it declares them.
  ranges = dict(getattr(ctx.split_meta(), "continuous_factors", {}) or {})

  def scaled(values):
    out = {}
    for k in names:
      v = np.asarray(values[k], np.float64)
      if k in ranges:
        lo, hi = ranges[k]
        v = (v - lo) / (hi - lo)
      out[k] = v
    return out

  out = probes.linear_regression_mae(feats, scaled(facs), ctx.features,
                                     scaled(ctx.eval_factors_with(names)),
                                     dims=dims or ctx.opt("code_slice", None))
  out["fit_split"] = split
  out["scaled"] = sorted(k for k in names if k in ranges)
  return out


def _part_regression_mae(ctx: EvalContext):
  """``linear_regression_mae`` on each of the method's ``code_parts`` (Ruiz et al. §5.3:
  from e, and the control from z, "significantly worse")."""
  cols = base.code_part_columns(ctx.method, ctx.features.shape[1])
  return {"parts": {part: _linear_regression_mae(ctx, f"{c[0]}:{c[-1] + 1}")
                    for part, c in cols.items()}}


def _dis(name):
  def fn(ctx: EvalContext):
    return getattr(disentanglement, name)(ctx.features, ctx.factors, seed=ctx.seed)
  fn.__name__ = name
  return fn


def _recon_predictions(ctx: EvalContext) -> dict[str, np.ndarray]:
  if "recon_pred" not in ctx._cache:
    clf = ctx.classifier()
    ctx._cache["recon_pred"] = clf.predict(ctx.decode(ctx.features.astype(np.float32)))
  return ctx._cache["recon_pred"]


def _swap_success(ctx: EvalContext, labels: str | None = None):
  clf = ctx.classifier()
  names = list(ctx.opt("swap_factors", None) or ctx.config.eval.factors)
  labels = labels or ctx.opt("swap_labels", "reconstruction")
  if labels == "reconstruction":
    recon = _recon_predictions(ctx)
  elif labels == "true":
    recon = {k: np.asarray(ctx.factors[k]) for k in names}
  else:
    raise ValueError(f"unknown eval.swap_labels {labels!r}; use 'reconstruction' (the "
                     f"authors' code) or 'true' (ground-truth labels)")
  a, b = ctx.pairs()
  table = {}
  for part, cols in ctx.parts().items():
    codes = ctx.features[a].astype(np.float32).copy()
    codes[:, cols] = ctx.features[b][:, cols]
    pred = clf.predict(ctx.decode(codes))
    table[part] = {k: generation.swap_success(pred[k], recon[k][b], recon[k][a]) for k in names}
  success = np.array([[table[p][k]["success"] for k in names] for p in table])
  # NaN where no pair qualifies (the classifier gives every reconstruction one label)
  has = ~np.all(np.isnan(success), axis=0)
  best = {k: float(np.nanmax(success[:, j])) if has[j] else float("nan")
          for j, k in enumerate(names)}
  best_part = {k: list(table)[int(np.nanargmax(success[:, j]))] if has[j] else None
               for j, k in enumerate(names)}
  return {"parts": list(table), "factors": names, "success": success,
          "best": best, "best_part": best_part,
          "details": table, "classifier_test_accuracy": clf.test_accuracy,
          "reference": ("classifier label of the reconstructions (Lezama's code)"
                        if labels == "reconstruction" else "true labels")}


def _attribute_flip(ctx: EvalContext):
  units = ctx.attribute_units()
  if not units:
    raise ValueError("attribute_flip needs config.eval.attribute_units (factor -> code unit)")
  clf = ctx.classifier()
  recon = _recon_predictions(ctx)
  alpha = float(ctx.opt("flip_alpha", 40.0))
  per = {}
  for k, unit in units.items():
    pred = clf.predict(ctx.decode(generation.flip_codes(ctx.features, unit, alpha)))[k]
    per[k] = generation.attribute_flip_success(pred, recon[k])
  return {"success": {k: v["success"] for k, v in per.items()},
          "average": float(np.mean([v["success"] for v in per.values()])), "alpha": alpha,
          "classifier_test_accuracy": {k: ctx.classifier().test_accuracy[k] for k in units}}


def _reconstruction_mse(ctx: EvalContext, batch_size: int = 256):
  """Mean squared error per pixel of the reconstructions D(E(x)) of ``eval.split``, with the
  data's value range rescaled to [0, 1] (the scale of Lezama Tables 1 and 2)."""
  # Images on the data's value range rescaled to [0, 1]; other inputs (points) as they are.
  lo, hi = (tuple(ctx.config.data.value_range) if ctx.split_meta().is_image else (0.0, 1.0))
  n = len(ctx.features)
  total, count = 0.0, 0
  for s in range(0, n, batch_size):
    ex = ctx.source.take(np.arange(s, min(s + batch_size, n)))
    x = pipeline.model_inputs(ex, ctx.split_meta(), ctx.config.data)
    x_hat = ctx.decode(ctx.features[s:s + len(x)].astype(np.float32), batch_size)
    total += float(np.sum(np.square(x_hat.astype(np.float64) - x)))
    count += x.size
  return {"mse": total / count / (hi - lo) ** 2, "num_images": int(n),
          "scale": "[0, 1]" if ctx.split_meta().is_image else "data units"}


def _score_factor(ctx: EvalContext) -> str:
  return str(ctx.opt("score_factor", None) or list(ctx.config.eval.factors)[0])


def _classifier_score(ctx: EvalContext):
  imgs, how = ctx.generated()
  k = _score_factor(ctx)
  clf = ctx.classifier()
  out = generation.inception_score(clf.probs(imgs)[k])
  out.update({"label": f"classifier score (djax-trained {ctx.config.data.name} classifier of "
                       f"'{k}', not the Inception Score)", "factor": k, "generated_by": how,
              "classifier_test_accuracy": clf.test_accuracy[k]})
  return out


def _inception_score(ctx: EvalContext):
  path = ctx.opt("inception_weights", None)
  if not path:
    raise ValueError("inception_score needs config.eval.inception_weights (see "
                     "djax/metrics/inception.py for the file); use 'classifier_score' for the "
                     "same score with a djax-trained classifier of the dataset")
  from djax.metrics import inception
  imgs, how = ctx.generated()
  probs = inception.InceptionV3.from_file(path).probs(imgs, tuple(ctx.config.data.value_range))
  out = generation.inception_score(probs, splits=10)
  out.update({"label": "Inception Score", "generated_by": how, "weights": str(path)})
  return out


def _ms_ssim_diversity(ctx: EvalContext):
  imgs, how = ctx.generated()
  k = _score_factor(ctx)
  labels = ctx.classifier().predict(imgs)[k]
  lo, hi = ctx.config.data.value_range
  out = generation.intra_class_diversity(imgs, labels, max_val=float(hi - lo), seed=ctx.seed)
  out.update({"factor": k, "grouped_by": "classifier prediction", "generated_by": how})
  return out


def _conditional_generation(ctx: EvalContext):
  """Samples for each class in turn (``num_generated`` in all): the fraction djax's
  classifier gives their conditioning class, and their intra-class diversity by
  conditioning class against the evaluated split's real images of the same classes."""
  k = _score_factor(ctx)
  real_labels = np.asarray(ctx.eval_factors_with([k])[k]).reshape(-1)
  n_classes = int(real_labels.max()) + 1
  n = max(int(ctx.opt("num_generated", 2000)) // n_classes, 2) * n_classes
  labels = np.arange(n) % n_classes
  gen = np.concatenate([np.asarray(ctx.method.sample(
      ctx.params, ctx.stats, jax.random.fold_in(jax.random.PRNGKey(ctx.seed), s), len(part),
      jnp.asarray(part))) for s, part in enumerate(np.array_split(labels, -(-n // 1000)))])
  clf = ctx.classifier()
  out = generation.conditional_accuracy(clf.predict(gen)[k], labels)
  lo, hi = ctx.config.data.value_range
  per = max(2, n // n_classes)
  d_gen = generation.intra_class_diversity(gen, labels, max_val=float(hi - lo), seed=ctx.seed,
                                           max_per_class=per)
  ex = ctx.source.take(np.arange(len(ctx.source)))
  real = pipeline.model_inputs(ex, ctx.split_meta(), ctx.config.data)
  d_real = generation.intra_class_diversity(real, real_labels, max_val=float(hi - lo),
                                            seed=ctx.seed, max_per_class=per)
  out.update({"factor": k, "sampling": str(ctx.config.model.get("class_sampling", "mixture")),
              "classifier_test_accuracy": clf.test_accuracy[k],
              "diversity": d_gen["diversity"], "diversity_real": d_real["diversity"],
              "diversity_ratio": d_gen["diversity"] / d_real["diversity"],
              "diversity_per_class": d_gen["per_class"]})
  return out


def _toy_points():
  from djax import toy_points  # imported when used: it reads the three-moons geometry
  return toy_points


def _class_conditional_points(ctx: EvalContext):
  """Zheng & Sun's toy (§4.1): points the method samples for each class (``num_generated``
  in all, classes in turn) against the evaluated split's points of that class."""
  toy_points = _toy_points()
  k = _score_factor(ctx)
  ex = ctx.source.take(np.arange(len(ctx.source)))
  data = pipeline.model_inputs(ex, ctx.split_meta(), ctx.config.data)
  data_labels = np.asarray(ctx.eval_factors_with([k])[k]).reshape(-1)
  n_classes = int(data_labels.max()) + 1
  n = int(ctx.opt("num_generated", 2000)) // n_classes * n_classes
  gen_labels = np.arange(n) % n_classes
  gen = np.asarray(ctx.method.sample(ctx.params, ctx.stats, jax.random.PRNGKey(ctx.seed), n,
                                     jnp.asarray(gen_labels)))
  out = toy_points.class_conditional_report(gen, gen_labels, data, data_labels)
  out["factor"] = k
  return out


@dataclasses.dataclass(frozen=True)
class Metric:
  fn: Callable[[EvalContext], dict]
  version: str
  description: str
  headline: Callable[[dict], dict]  # result -> {"group/name": number} (paper_numbers.json keys)
  format: Callable[[dict], str]  # result -> its printed table
  requires: tuple[str, ...] = ()  # method capabilities (djax.methods.base.OPTIONAL)


S = summary
METRICS: dict[str, Metric] = {
    "chunk_retrieval_map": Metric(
        _chunk_retrieval_map, retrieval.VERSIONS["chunk_retrieval_map"],
        "NN retrieval mAP per (chunk, factor), Hu et al. Table 2",
        S.per_factor("nn_map", "best_map", "best_average"), S.format_chunk_map,
        requires=("code_parts",)),
    "retrieval_map": Metric(
        _retrieval_map, retrieval.VERSIONS["retrieval_map"],
        "NN retrieval mAP per factor on eval.code_slice",
        S.per_factor(lambda r: f"map[{r['dims']}]", "map", "average"), S.format_retrieval_map),
    "linear_probe": Metric(
        _linear_probe, probes.VERSIONS["linear_probe"],
        "logistic-regression accuracy per discrete factor (Hu Table 3)",
        S.per_factor("probe", "accuracy", "average"), S.format_linear_probe),
    "part_probe": Metric(
        _part_probe, probes.VERSIONS["linear_probe"],
        "linear_probe on each code part (Mathieu: s should predict the label, z should not)",
        S.part_probe_headline("part_probe"), S.format_part_probe(""),
        requires=("code_parts",)),
    "part_probe_sampled": Metric(
        _part_probe_sampled, probes.VERSIONS["linear_probe"],
        "part_probe on posterior samples z ~ q(z | x) instead of the mean",
        S.part_probe_headline("part_probe_sampled"), S.format_part_probe(", posterior samples"),
        requires=("code_parts", "encode_sample")),
    "linear_regression_mae": Metric(
        _linear_regression_mae, probes.VERSIONS["linear_regression_mae"],
        "OLS MAE per continuous factor (Ruiz Table 1)",
        S.per_factor("mae", "mae", "average"), S.format_regression_mae),
    "part_regression_mae": Metric(
        _part_regression_mae, probes.VERSIONS["linear_regression_mae"],
        "linear_regression_mae on each code part (Ruiz: e should predict the style, z not)",
        lambda r: {f"part_mae[{p}]/{k}": v for p, pr in r["parts"].items()
                   for k, v in [*pr["mae"].items(), ("average", pr["average"])]},
        lambda r: "\n\n".join(f"code part {p}: " + S.format_regression_mae(pr)
                               for p, pr in r["parts"].items()),
        requires=("code_parts",)),
    "mig": Metric(_dis("mig"), disentanglement.VERSIONS["mig"], "Mutual Information Gap",
                  S.score("mig"), S.format_mig),
    "sap": Metric(_dis("sap"), disentanglement.VERSIONS["sap"], "SAP score", S.score("sap"),
                  S.format_sap),
    "dci": Metric(_dis("dci"), disentanglement.VERSIONS["dci"],
                  "DCI disentanglement, completeness, informativeness", S.dci_headline,
                  S.format_dci),
    "factor_vae": Metric(_dis("factor_vae"), disentanglement.VERSIONS["factor_vae"],
                         "FactorVAE score", S.score("factor_vae"), S.format_factor_vae),
    "beta_vae": Metric(_dis("beta_vae"), disentanglement.VERSIONS["beta_vae"], "BetaVAE score",
                       S.score("beta_vae"), S.format_beta_vae),
    "swap_success": Metric(
        _swap_success, generation.VERSIONS["swap_success"],
        "swap success per (part, factor), Lezama Table 1 (eval.swap_labels)",
        S.swap_headline("swap"), S.format_swap_success, requires=("decode",)),
    "swap_success_true": Metric(
        functools.partial(_swap_success, labels="true"), generation.VERSIONS["swap_success"],
        "swap success against the true labels (Lezama Table 1 as the text reads)",
        S.swap_headline("swap_true"), S.format_swap_success, requires=("decode",)),
    "attribute_flip": Metric(_attribute_flip, generation.VERSIONS["attribute_flip"],
                             "attribute flip success, Lezama Table 2",
                             S.attribute_flip_headline, S.format_attribute_flip,
                             requires=("decode",)),
    "reconstruction_mse": Metric(_reconstruction_mse, "1",
                                 "per-pixel reconstruction MSE on [0, 1], Lezama Tables 1-2",
                                 S.value("reconstruction_mse", "mse"),
                                 S.format_reconstruction_mse, requires=("decode",)),
    "classifier_score": Metric(_classifier_score, generation.VERSIONS["classifier_score"],
                               "Inception-Score formula with a djax-trained classifier",
                               S.score("classifier_score"), S.format_classifier_score,
                               requires=("decode",)),
    "inception_score": Metric(_inception_score, generation.VERSIONS["inception_score"],
                              "Inception Score (needs eval.inception_weights)",
                              S.score("inception_score"), S.format_inception_score,
                              requires=("decode",)),
    "ms_ssim_diversity": Metric(_ms_ssim_diversity, generation.VERSIONS["ms_ssim_diversity"],
                                "intra-class diversity 1 - MS-SSIM (Zheng & Sun Table 2)",
                                S.value("ms_ssim_diversity", "diversity"),
                                S.format_ms_ssim_diversity, requires=("decode",)),
    "conditional_generation": Metric(
        _conditional_generation, generation.VERSIONS["conditional_generation"],
        "class-conditional samples: classified as their class, diversity vs real "
        "(Zheng & Sun §4.2)", S.conditional_generation_headline,
        S.format_conditional_generation, requires=("sample",)),
    "class_conditional_points": Metric(
        _class_conditional_points, "1",
        "three moons: per-class std of generated y vs the data's, nearest-own-moon fraction",
        lambda r: {"points/std_ratio_min": r["std_ratio_min"],
                   "points/nearest_own_moon": r["nearest_own_moon"]},
        lambda r: _toy_points().format_report(r),
        requires=("sample",)),
}


def check_metric_names(names, where: str = "config.eval.metrics") -> None:
  """Every name is a metric; ``where`` says where the names came from, for the message."""
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f"unknown metric(s) {unknown} in {where}; known: {sorted(METRICS)}")


def check_metrics(method, names, where: str = "config.eval.metrics") -> None:
  """Before any work: every name is a metric, and the method has what each one needs."""
  check_metric_names(names, where)
  for n in names:
    base.require(method, METRICS[n].requires, f"metric {n!r}")


def headline(results) -> dict[str, float]:
  """Every metric's headline numbers, flattened to ``"group/name" -> float``."""
  out: dict[str, float] = {}
  for name, r in results.items():
    if name in METRICS:
      out.update(METRICS[name].headline(r))
  return {k: float(v) for k, v in out.items()}


def format_results(results) -> str:
  """Every metric's table, in the order of ``results``."""
  return "\n\n".join(METRICS[n].format(r) if n in METRICS else f"{n}: {r}"
                      for n, r in results.items())


def evaluate_representation(method, params, stats, config, source, *, metrics=None,
                            timings: dict | None = None,
                            features=None, factors=None) -> dict[str, Any]:
  """Scores named in ``config.eval.metrics`` (or ``metrics``) on a split's codes.

  ``timings``, if given, receives seconds per metric (and 'encode').  ``features`` /
  ``factors`` skip the encoding when the caller already has them.
  """
  names = list(config.eval.metrics if metrics is None else metrics)
  check_metrics(method, names)
  t0 = time.time()
  if features is None:
    meta = pipeline.load_split(config.data, config.eval.split)[1]
    features, factors = encode_split(method, params, stats, source, config.data,
                                     factor_names=list(config.eval.factors), meta=meta)
  if timings is not None:
    timings["encode"] = time.time() - t0
  ctx = EvalContext(method, params, stats, config, source, features, dict(factors))
  results: dict[str, Any] = {}
  for name in names:
    t = time.time()
    results[name] = METRICS[name].fn(ctx)
    if timings is not None:
      timings[name] = time.time() - t
  return results


def metric_versions(names) -> dict[str, str]:
  return {n: METRICS[n].version for n in names}


@functools.lru_cache(maxsize=None)
def _jit_eval_images(method):
  return jax.jit(method.eval_images)


def eval_images(method, params, stats, images) -> dict[str, np.ndarray]:
  return jax.device_get(_jit_eval_images(method)(params, stats, jnp.asarray(images)))


def evaluate_and_write(method, state, config, workdir: str, *, step: int, metrics=None,
                       out: str | None = None, verbose: bool = True,
                       untrained: dict | None = None) -> dict[str, Any]:
  """Scores a state with ``config.eval``, prints the tables and writes eval.json (or ``out``)
  atomically: the step, dataset, split, probe split, metric versions, seconds per metric,
  the headline numbers and the full results. ``untrained``: the same report on the initial
  parameters (the trainer's ``eval_untrained.json``), kept as eval.json's ``untrained`` row.
  Returns the report."""
  names = list(config.eval.metrics if metrics is None else metrics)
  check_metrics(method, names, "config.eval.metrics" if metrics is None else "--metrics")
  source, meta = pipeline.load_split(config.data, config.eval.split)
  timings: dict[str, float] = {}
  t0 = time.time()
  results = evaluate_representation(method, state.params, state.batch_stats, config, source,
                                    metrics=names, timings=timings)
  report = {
      "step": int(step), "method": config.method, "dataset": meta.name,
      "split": config.eval.split, "num_examples": meta.size,
      "probe_split": config.eval.get("probe_split", None) or "validation",
      "factors": list(config.eval.factors), "seed": int(config.get("seed", 0)),
      "metric_versions": metric_versions(names),
      "seconds": {k: round(v, 3) for k, v in timings.items()},
      "total_seconds": round(time.time() - t0, 3),
      "headline": headline(results), "results": results,
  }
  if untrained:
    report["untrained"] = {k: untrained[k] for k in ("step", "headline", "results", "seconds")
                           if k in untrained}
  path = out or os.path.join(workdir, "eval.json")
  fileio.write_json(path, report)
  if verbose:
    print(f"\n{config.method} on {meta.name}:{config.eval.split} ({meta.size} examples), "
          f"step {step}\n")
    print(format_results(results))
    if untrained:
      print("\nuntrained (step 0): " + ", ".join(
          f"{k} {v:.3f}" for k, v in untrained.get("headline", {}).items()
          if k.endswith("average") or "/" not in k))
    print("\nseconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"wrote {path}")
  return report
