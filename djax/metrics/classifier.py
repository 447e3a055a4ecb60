"""A dataset's factor classifier, trained once by djax and cached on disk.

Swap success, attribute flips and the classifier score judge *decoded* images with "a
separately trained classifier" (Lezama 2019).  This module trains one small convnet per
dataset with one softmax head per ground-truth factor (pure JAX/Flax/optax), on the
dataset's train split, reports its accuracy per factor on the test split, and caches
parameters + accuracies under ``<data_dir>/djax_classifiers/<key>/`` so every later
evaluation reuses it.  The key contains the dataset name, image size, value range, factors
and every training hyperparameter, so changing any of them trains a new one.

Network (``conv`` = 3x3, ReLU): conv32 s2 - conv64 s2 - conv64 s2 - flatten -
dense 128 - one dense head per factor.  Adam 1e-3, 800 steps of batch 128, cross-entropy
summed over heads, random circular shifts of up to 2 pixels as augmentation (about 2
minutes for 32x32 Sprites on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

__all__ = ["FactorClassifier", "train_classifier", "get_classifier", "ClassifierNet"]

VERSION = "3"


class ClassifierNet(nn.Module):
  heads: tuple[tuple[str, int], ...]
  width: int = 32

  @nn.compact
  def __call__(self, x):
    w = self.width
    for feat, stride in ((w, 2), (2 * w, 2), (2 * w, 2)):
      x = nn.relu(nn.Conv(feat, (3, 3), strides=(stride, stride))(x))
    x = x.reshape(x.shape[0], -1)  # keep where things are: pose and small parts need it
    x = nn.relu(nn.Dense(4 * w)(x))
    return {name: nn.Dense(k, name=f"head_{name}")(x) for name, k in self.heads}


@dataclasses.dataclass
class FactorClassifier:
  """A trained classifier: ``probs(images)`` -> name -> ``[N, K]``; images as the model
  sees them (float ``[N, H, W, C]`` in ``value_range``)."""
  heads: tuple[tuple[str, int], ...]
  params: dict
  width: int
  test_accuracy: dict
  info: dict

  def __post_init__(self):
    self.net = ClassifierNet(self.heads, self.width)
    self._apply = jax.jit(lambda p, x: jax.tree_util.tree_map(jax.nn.softmax,
                                                              self.net.apply({"params": p}, x)))

  def probs(self, images, batch_size: int = 512) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for s in range(0, len(images), batch_size):
      chunk = np.asarray(images[s:s + batch_size], np.float32)
      n = len(chunk)  # pad to the batch size: one compilation for every batch
      chunk = np.pad(chunk, ((0, batch_size - n),) + ((0, 0),) * (chunk.ndim - 1))
      y = self._apply(self.params, jnp.asarray(chunk))
      for k, v in y.items():
        out.setdefault(k, []).append(np.asarray(v)[:n])
    return {k: np.concatenate(v) for k, v in out.items()}

  def predict(self, images, batch_size: int = 512) -> dict[str, np.ndarray]:
    return {k: v.argmax(-1) for k, v in self.probs(images, batch_size).items()}


def _shift(rng, x, max_shift=2):
  """Random circular translation by up to ``max_shift`` pixels, one shift per batch."""
  dy, dx = rng.integers(-max_shift, max_shift + 1, 2)
  x = np.roll(x, (dy, dx), axis=(1, 2))
  return x


def train_classifier(train_images, train_labels: Mapping[str, np.ndarray], test_images,
                     test_labels: Mapping[str, np.ndarray], *, cardinalities: Mapping[str, int],
                     steps: int = 800, batch_size: int = 128, learning_rate: float = 1e-3,
                     width: int = 32, seed: int = 0) -> FactorClassifier:
  """Trains the multi-head classifier; images float ``[N, H, W, C]``, labels int ``[N]``."""
  heads = tuple((k, int(cardinalities[k])) for k in train_labels)
  net = ClassifierNet(heads, width)
  key = jax.random.PRNGKey(seed)
  params = net.init(key, jnp.zeros((1,) + tuple(train_images.shape[1:]), jnp.float32))["params"]
  tx = optax.adam(learning_rate)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, ys):
    def loss_fn(p):
      logits = net.apply({"params": p}, x)
      return sum(optax.softmax_cross_entropy_with_integer_labels(logits[k], ys[k]).mean()
                 for k in ys)
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  rng = np.random.default_rng(seed)
  n = len(train_images)
  order, pos = rng.permutation(n), 0
  loss = np.nan
  for _ in range(steps):
    if pos + batch_size > n:
      order, pos = rng.permutation(n), 0
    idx = order[pos:pos + batch_size]
    pos += batch_size
    x = _shift(rng, np.asarray(train_images[idx], np.float32))
    ys = {k: jnp.asarray(np.asarray(v)[idx], jnp.int32) for k, v in train_labels.items()}
    params, opt, loss = step(params, opt, jnp.asarray(x), ys)
  clf = FactorClassifier(heads, jax.device_get(params), width, {}, {})
  pred = clf.predict(np.asarray(test_images, np.float32))
  clf.test_accuracy = {k: float(np.mean(pred[k] == np.asarray(test_labels[k]))) for k in pred}
  clf.info = {"final_train_loss": float(loss), "steps": steps, "batch_size": batch_size,
              "learning_rate": learning_rate, "width": width, "seed": seed,
              "num_train": int(n), "num_test": int(len(test_images)), "version": VERSION}
  return clf


def _cache_key(data_cfg, factor_names: Sequence[str], hparams: dict) -> str:
  spec = {"dataset": data_cfg.name, "image_size": int(data_cfg.image_size),
          "value_range": [float(v) for v in data_cfg.value_range],
          "factors": list(factor_names), "hparams": hparams, "version": VERSION}
  digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
  return f"{data_cfg.name.replace('/', '_')}-{int(data_cfg.image_size)}px-{digest}"


def get_classifier(data_cfg, factor_names: Sequence[str], *, cache_dir: str | None = None,
                   train_split: str = "train", test_split: str = "test", steps: int = 800,
                   batch_size: int = 128, learning_rate: float = 1e-3, width: int = 32,
                   seed: int = 0, verbose: bool = True) -> FactorClassifier:
  """The cached classifier of ``data_cfg``'s dataset for ``factor_names``, training it on
  first use.  ``cache_dir`` defaults to ``<data_dir>/djax_classifiers``."""
  from djax.data import pipeline

  hparams = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
             "width": width, "seed": seed, "train_split": train_split,
             "test_split": test_split}
  root = cache_dir or os.path.join(data_cfg.get("data_dir") or pipeline.default_data_dir(),
                                   "djax_classifiers")
  path = os.path.join(root, _cache_key(data_cfg, factor_names, hparams))
  train_src, meta = pipeline.load_split(data_cfg, train_split)
  heads = tuple((k, int(meta.factors[k])) for k in factor_names)
  meta_path = os.path.join(path, "meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      info = json.load(f)
    net = ClassifierNet(heads, width)
    shape = (1, data_cfg.image_size, data_cfg.image_size, meta.image_shape[-1])
    like = net.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32))["params"]
    with open(os.path.join(path, "params.msgpack"), "rb") as f:
      params = serialization.from_bytes(like, f.read())
    return FactorClassifier(heads, params, width, info["test_accuracy"], info["info"])

  def arrays(src):
    ex = src.take(np.arange(len(src)))
    x = pipeline.to_model_images(ex["image"], data_cfg.image_size, tuple(data_cfg.value_range))
    return x, {k: ex[k] for k in factor_names}

  if verbose:
    print(f"training the {data_cfg.name} factor classifier ({steps} steps; cached in {path})",
          flush=True)
  test_src, _ = pipeline.load_split(data_cfg, test_split)
  xtr, ytr = arrays(train_src)
  xte, yte = arrays(test_src)
  clf = train_classifier(xtr, ytr, xte, yte, cardinalities=dict(heads), steps=steps,
                         batch_size=batch_size, learning_rate=learning_rate, width=width,
                         seed=seed)
  os.makedirs(path, exist_ok=True)
  # Temporary names of this process's own: two runs that train the same classifier at
  # once each write whole files, and either one's rename leaves a complete cache.
  tmp = os.path.join(path, f"params.msgpack.{os.getpid()}.tmp")
  meta_tmp = f"{meta_path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(serialization.to_bytes(clf.params))
  os.replace(tmp, os.path.join(path, "params.msgpack"))
  with open(meta_tmp, "w") as f:
    json.dump({"test_accuracy": clf.test_accuracy, "info": clf.info, "heads": heads}, f, indent=2)
  os.replace(meta_tmp, meta_path)
  return clf
