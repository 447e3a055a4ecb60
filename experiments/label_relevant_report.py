"""Pictures and numbers of a finished label_relevant_vae run.

    python experiments/label_relevant_report.py runs/moons_paper          # three moons
    python experiments/label_relevant_report.py runs/mnist --n 100        # images
    python experiments/label_relevant_report.py runs/mnist --n 100 --class_sampling=encoded

Reads the run's config.json and latest checkpoint. Three moons: the class-conditional
numbers (djax.toy_points), where the encoded z_s of each class lies against the mixture's
μ_c and σ_c, and ``points.png`` (test points | generated points, as the paper's Fig. 2).
Images: ``class_samples.png`` (row c: class c), the fraction of n samples per class that
djax's dataset classifier gives their conditioning class, and the intra-class diversity
(1 − MS-SSIM) of the samples against that of the real test images.
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from djax import checkpoint, methods, toy_points, train, viz  # noqa: E402
from djax.data import pipeline  # noqa: E402
from djax.methods import label_relevant  # noqa: E402


def load(workdir, class_sampling=None):
  config = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "config.json"))))
  if class_sampling:  # evaluation only: the same checkpoint, another sampler of z_s
    config.model.class_sampling = class_sampling
  method = methods.create(config, axis_name=None)
  data = pipeline.get_dataset(config.data, "train", batch_size=config.train.batch_size,
                              num_devices=1, seed=config.seed)
  like = train.create_state(method, config, data)
  state = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(like)[0]
  return config, method, state


def _name(stem, config):
  """points.png / class_samples.png under the paper's sampler, STEM_encoded.png else."""
  sampling = config.model.get("class_sampling", "mixture")
  return f"{stem}.png" if sampling == "mixture" else f"{stem}_{sampling}.png"


def points_report(config, method, state, workdir, n):
  source, meta = pipeline.load_split(config.data, "test")
  ex = source.take(np.arange(len(source)))
  x = pipeline.model_inputs(ex, meta, config.data)
  y = np.asarray(ex["label"])
  labels = np.arange(n) % method.num_classes
  gen = np.asarray(method.sample(state.params, state.batch_stats, jax.random.PRNGKey(0), n,
                                 jnp.asarray(labels)))
  r = toy_points.class_conditional_report(gen, labels, x, y)
  print(toy_points.format_report(r))
  zs = np.asarray(method.encode(state.params, state.batch_stats, jnp.asarray(x)))[:, :method.zs_dim]
  mu, lam = (np.asarray(a) for a in method.mixture(state.params))
  for k in range(method.num_classes):
    print(f"class {k}: encoded z_s mean {np.round(zs[y == k].mean(0), 3)} std "
          f"{np.round(zs[y == k].std(0), 3)} | mixture mu {np.round(mu[k], 3)} sigma "
          f"{np.round(1 / np.sqrt(lam[k]), 3)}")
  acc = np.mean(np.asarray(method.classify(state.params, state.batch_stats, jnp.asarray(x))) == y)
  print(f"mixture classifier accuracy on test: {acc:.4f}")
  path = toy_points.save_scatter(os.path.join(workdir, _name("points", config)),
                                 [(x, y), (gen[:len(x)], labels[:len(x)])])
  print("wrote", path)
  return r


def spread_report(method, state) -> None:
  """The mixture's σ_c against the spread of the training codes (their running moments):
  samples N(μ_c, Σ_c) land where the codes are only when the two agree."""
  mu, lam = (np.asarray(a) for a in method.mixture(state.params))
  mean, prec = (np.asarray(a) for a in label_relevant.moment_gaussians(
      state.batch_stats["moments"]))
  sigma, spread = 1 / np.sqrt(lam), 1 / np.sqrt(prec)
  q = lambda a: f"median {np.median(a):.3f} ({np.min(a):.3f}-{np.max(a):.3f})"
  print(f"mixture sigma_c {q(sigma)}; codes' std {q(spread)}; sigma_c / codes' std "
        f"{q(sigma / spread)}; |mu_c - codes' mean| {q(np.linalg.norm(mu - mean, axis=1))}")


def image_report(config, method, state, workdir, n):
  from djax.metrics import classifier
  spread_report(method, state)
  clf = classifier.get_classifier(config.data, ["label"], steps=int(config.eval.get(
      "classifier_steps", 800)), seed=config.seed)
  labels = np.arange(n * method.num_classes) % method.num_classes
  gen = np.asarray(method.sample(state.params, state.batch_stats, jax.random.PRNGKey(0),
                                 len(labels), jnp.asarray(labels)))
  pred = clf.predict(gen)["label"]
  per = [float(np.mean(pred[labels == k] == k)) for k in range(method.num_classes)]
  print(f"generated classified as their class: {np.mean(pred == labels):.4f} "
        f"(per class {np.round(per, 3).tolist()}); classifier test accuracy "
        f"{clf.test_accuracy['label']:.4f}")
  from djax.metrics import generation
  lo, hi = config.data.value_range
  source, meta = pipeline.load_split(config.data, "test")
  ex = source.take(np.arange(len(source)))
  real = pipeline.model_inputs(ex, meta, config.data)
  d_real = generation.intra_class_diversity(real, np.asarray(ex["label"]), max_val=hi - lo)
  d_gen = generation.intra_class_diversity(gen, labels, max_val=hi - lo)
  print(f"intra-class diversity 1 - MS-SSIM, grouped by conditioning class: generated "
        f"{d_gen['diversity']:.4f}, real test digits {d_real['diversity']:.4f} (ratio "
        f"{d_gen['diversity'] / d_real['diversity']:.3f})")
  grid = gen[:10 * method.num_classes].reshape(10, method.num_classes, *gen.shape[1:])
  grid = np.swapaxes(grid, 0, 1)
  path = viz.save_grid(os.path.join(workdir, _name("class_samples", config)), grid,
                       tuple(config.data.value_range))
  print("wrote", path)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("workdir")
  ap.add_argument("--n", type=int, default=3000, help="points in all / images per class")
  ap.add_argument("--class_sampling", choices=("mixture", "encoded"), default=None,
                  help="z_s of class-conditional samples (default: the run's config)")
  a = ap.parse_args()
  config, method, state = load(a.workdir, a.class_sampling)
  assert isinstance(method, label_relevant.LabelRelevantVAE)
  print(f"{a.workdir}: step {int(state.step)}")
  if config.data.get("input_key", "image") == "point":
    points_report(config, method, state, a.workdir, a.n)
  else:
    image_report(config, method, state, a.workdir, a.n)


if __name__ == "__main__":
  main()
