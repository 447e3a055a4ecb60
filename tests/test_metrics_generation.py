"""Generation-side scores: MS-SSIM against an independent implementation, the score formula,
swap success end to end with a dataset classifier trained on tiny_shapes."""

import jax
import jax.numpy as jnp
import numpy as np

from djax.methods import base
import pytest
from scipy import signal

from djax.metrics import generation


# ----------------------------------------------------------------------------- MS-SSIM

def _np_ms_ssim(x, y, max_val, weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), shrink=False):
  """Wang et al. 2003 written out directly in float64 with scipy: 11x11 Gaussian (sigma
  1.5), K1 0.01, K2 0.03, 2x2 mean pooling (odd sizes padded symmetrically).  Scales the
  window does not fit are dropped and the remaining power factors rescaled to sum to 1
  (TensorFlow with those power factors), or with ``shrink`` the window is truncated to
  the scale (djax's old extension)."""
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  x, y = x.astype(np.float64), y.astype(np.float64)
  sizes = [x.shape[:2]]
  for _ in weights[1:]:
    sizes.append(tuple(-(-v // 2) for v in sizes[-1]))
  if not shrink:
    fit = [min(sz) >= 11 for sz in sizes]
    weights = np.array(weights)[fit] / np.sum(np.array(weights)[fit])
  vals = []
  for ch in range(x.shape[-1]):
    a, b = x[..., ch], y[..., ch]
    terms = []
    for s in range(len(weights)):
      if s:
        a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2)), mode="symmetric")
        b = np.pad(b, ((0, b.shape[0] % 2), (0, b.shape[1] % 2)), mode="symmetric")
        a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean((1, 3))
        b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean((1, 3))
      size = min(11, *a.shape) if shrink else 11
      g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * 1.5 ** 2))
      w = np.outer(g, g) / np.outer(g, g).sum()
      f = lambda im: signal.correlate2d(im, w, mode="valid")  # noqa: E731
      mx, my = f(a), f(b)
      vx, vy, cxy = f(a * a) - mx ** 2, f(b * b) - my ** 2, f(a * b) - mx * my
      cs = (2 * cxy + c2) / (vx + vy + c2)
      lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
      terms.append(max(np.mean(lum * cs if s == len(weights) - 1 else cs), 0.0))
    vals.append(np.prod(np.power(terms, weights)))
  return float(np.mean(vals))


def _pair(size, seed=None):
  rng = np.random.default_rng(size if seed is None else seed)
  base = rng.uniform(0, 255, (2, size, size, 3))
  smooth = np.cumsum(np.cumsum(base, 1), 2) / (np.arange(1, size + 1)[None, :, None, None] *
                                               np.arange(1, size + 1)[None, None, :, None])
  return smooth, np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255)


@pytest.mark.parametrize("size", [176, 64, 37, 28])
def test_ms_ssim_matches_direct_computation(size):
  x, y = _pair(size)
  ours = generation.ms_ssim(x, y, max_val=255.0)
  for i in range(2):
    assert ours[i] == pytest.approx(_np_ms_ssim(x[i], y[i], 255.0), abs=2e-4)
  assert generation.ms_ssim(x[0], x[0]) == pytest.approx(1.0, abs=1e-5)
  n_scales = {176: 5, 64: 3, 37: 2, 28: 2}[size]
  assert len(generation.ms_ssim_scales(size, size)) == n_scales


def test_ms_ssim_small_images_options():
  x, y = _pair(64, seed=5)
  with pytest.raises(ValueError, match=r"64x64 images: scale 4 is 8x8, smaller than the "
                                       r"11-pixel window.*small_images="):
    generation.ms_ssim(x, y, small_images="raise")
  shrunk = generation.ms_ssim(x, y, small_images="shrink_window")
  for i in range(2):
    assert shrunk[i] == pytest.approx(_np_ms_ssim(x[i], y[i], 255.0, shrink=True), abs=2e-4)
  # the truncated-window statistic is another number: the option matters
  assert np.all(np.abs(shrunk - generation.ms_ssim(x, y)) > 5e-3)
  with pytest.raises(ValueError, match="small_images must be one of"):
    generation.ms_ssim(x, y, small_images="shrink")
  with pytest.raises(ValueError, match="10x10 images: scale 1 is 10x10"):
    generation.ms_ssim(x[:, :10, :10], y[:, :10, :10])


def test_intra_class_diversity():
  rng = np.random.default_rng(0)
  same = np.repeat(rng.uniform(0, 255, (1, 32, 32, 3)), 6, axis=0)
  varied = rng.uniform(0, 255, (6, 32, 32, 3))
  labels = np.array([0, 0, 0, 1, 1, 1])
  assert generation.intra_class_diversity(same, labels)["diversity"] == pytest.approx(0, abs=1e-5)
  d = generation.intra_class_diversity(varied, labels)
  assert 0.3 < d["diversity"] < 1.0 and set(d["per_class"]) == {"0", "1"}
  assert d["ms_ssim"]["power_factors"] == pytest.approx(generation.ms_ssim_scales(32, 32))
  assert len(d["ms_ssim"]["power_factors"]) == 2  # 32 -> 16 -> 8: the window fits twice


# ----------------------------------------------------------------------------- scores

def _original_inception_score(preds, splits=10):
  """The original Inception Score code's loop (Salimans et al.'s model.py), as printed."""
  scores = []
  for i in range(splits):
    part = preds[(i * preds.shape[0] // splits):((i + 1) * preds.shape[0] // splits), :]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
  return np.mean(scores), np.std(scores)


def test_inception_score_formula():
  k = 5
  assert generation.inception_score(np.eye(k)[np.arange(100) % k])["score"] == pytest.approx(k)
  assert generation.inception_score(np.full((50, k), 1 / k))["score"] == pytest.approx(1.0)
  assert generation.inception_score(np.eye(k)[np.zeros(50, int)])["score"] == pytest.approx(1.0)
  r = generation.inception_score(np.eye(k)[np.arange(100) % k], splits=10)
  assert r["score"] == pytest.approx(k) and r["std"] == pytest.approx(0)


def test_inception_score_splits_as_the_original_code():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1003, 10)) * 2 + np.eye(10)[rng.integers(0, 10, 1003)] * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  mean, std = _original_inception_score(p)
  r = generation.inception_score(p)  # the default: 10 splits
  assert r["splits"] == 10 and std > 0.01  # parts of ~100 samples do differ
  assert r["score"] == pytest.approx(mean, rel=1e-9) and r["std"] == pytest.approx(std, rel=1e-9)
  one = generation.inception_score(p, splits=1)
  assert one["score"] == pytest.approx(_original_inception_score(p, 1)[0], rel=1e-9)
  assert one["score"] != pytest.approx(mean, rel=1e-3)
  assert generation.inception_score(p[:3])["splits"] == 3  # never an empty part


def test_swap_and_flip_known_answers():
  target, source = np.array([1, 2, 3, 4, 4]), np.array([0, 2, 0, 1, 3])
  r = generation.swap_success(np.array([1, 9, 0, 4, 4]), target, source)
  assert r["num_pairs"] == 4 and r["num_skipped"] == 1 and r["success"] == pytest.approx(0.75)
  codes = np.array([[0.5, -2.0], [-0.1, 3.0]])
  np.testing.assert_allclose(generation.flip_codes(codes, 0, 40), [[-40, -2], [40, 3]])
  r = generation.attribute_flip_success(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
  assert r["success"] == 0.5


def test_conditional_accuracy_known_answer():
  r = generation.conditional_accuracy(np.array([0, 1, 1, 2, 0, 2]), np.array([0, 1, 2, 2, 0, 1]))
  assert r["accuracy"] == pytest.approx(4 / 6) and r["num_generated"] == 6
  assert r["per_class"] == {"0": 1.0, "1": 0.5, "2": 0.5}
  with pytest.raises(ValueError, match="predictions"):
    generation.conditional_accuracy(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------------- end to end

class ShapesOracle(base.Method):
  """A 'method' whose code is (one-hot colour | one-hot size) of tiny_shapes images and whose
  decoder draws exactly that square: swapping chunk 0 must swap the colour and nothing else."""

  def __init__(self):
    pass

  def code_parts(self):
    return base.chunk_parts(2, 3)
  palette = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220]], np.float32) / 127.5 - 1

  def encode(self, params, stats, x):
    fg = jnp.any(x < 0.9, axis=-1)  # background is 245 -> 0.92
    mean = (x * fg[..., None]).sum((1, 2)) / fg.sum((1, 2))[:, None]
    colour = jnp.argmin(((mean[:, None] - self.palette[None]) ** 2).sum(-1), axis=1)
    area = fg.sum((1, 2))
    size = jnp.digitize(area, jnp.array([30, 75]))
    return jnp.concatenate([jnp.eye(3)[colour], jnp.eye(3)[size]], axis=1)

  def decode(self, params, stats, f):
    colour, size = jnp.argmax(f[:, :3], 1), jnp.argmax(f[:, 3:], 1)
    s = 4 + 3 * size
    r = jnp.arange(16)
    inside = ((r[None, :, None] >= 3) & (r[None, :, None] < 3 + s[:, None, None]) &
              (r[None, None, :] >= 3) & (r[None, None, :] < 3 + s[:, None, None]))
    bg = jnp.full((f.shape[0], 16, 16, 3), 245 / 127.5 - 1)
    return jnp.where(inside[..., None], jnp.asarray(self.palette)[colour][:, None, None], bg)


def _shapes_eval(tmp_path):
  """The tiny_shapes config with a quickly trained, cached dataset classifier, and its test
  split."""
  from conftest import tiny_mixing_config
  from djax.data import pipeline

  c = tiny_mixing_config()
  c.eval.classifier_dir = str(tmp_path / "clf")
  c.eval.classifier_steps = 120
  c.eval.classifier_batch_size = 64
  return c, pipeline.load_split(c.data, "test")[0]


def test_swap_success_end_to_end_with_a_trained_classifier(tmp_path, monkeypatch):
  from djax import evaluation
  from djax.metrics import classifier

  c, source = _shapes_eval(tmp_path)
  c.eval.num_generated = 60
  c.eval.attribute_units = {"colour": 0}  # the 'red' unit of the one-hot colour
  res = evaluation.evaluate_representation(
      ShapesOracle(), {}, {}, c, source,
      metrics=["swap_success", "classifier_score", "ms_ssim_diversity", "attribute_flip"])
  sw = res["swap_success"]
  acc = sw["classifier_test_accuracy"]
  assert acc["colour"] > 0.95 and acc["size"] > 0.9, acc
  success = dict(zip(sw["parts"], sw["success"]))
  # chunk 0 carries the colour: swapping it swaps the colour, never the size
  assert success["chunk 0"][0] > 0.9 and success["chunk 0"][1] < 0.1, success
  assert success["chunk 1"][1] > 0.9 and success["chunk 1"][0] < 0.1, success
  cs = res["classifier_score"]
  assert "not the Inception Score" in cs["label"] and 1.5 < cs["score"] <= 3.0
  assert 0.0 < res["ms_ssim_diversity"]["diversity"] < 1.0
  # -40 * sign(unit): red squares (unit = 1) turn another colour, the others (unit = 0) stay
  red = np.mean(source.take(np.arange(len(source)))["colour"] == 0)
  assert res["attribute_flip"]["success"]["colour"] == pytest.approx(red, abs=0.03)
  # The classifier is cached: a second request loads it instead of training.
  monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
  again = classifier.get_classifier(c.data, ["colour", "size"], cache_dir=c.eval.classifier_dir,
                                    steps=120, batch_size=64)
  assert again.test_accuracy == acc


class ShiftedColourOracle(ShapesOracle):
  """Decodes colour c as colour c + 1: self-consistent, but never the true colour."""

  def decode(self, params, stats, f):
    return super().decode(params, stats,
                          jnp.concatenate([jnp.roll(f[:, :3], 1, axis=1), f[:, 3:]], axis=1))


class ColourSampler(ShapesOracle):
  """Samples of colour ``condition`` (colour 2 drawn as colour 0), of a random size, or of
  one size only (``one_size``): a known conditional accuracy of 2/3, and no diversity when
  every sample of a class is the same square."""

  def __init__(self, one_size=False):
    self.one_size = one_size

  def sample(self, params, stats, rng, n, condition=None):
    colour = jnp.where(condition == 2, 0, condition)
    size = jnp.zeros(n, jnp.int32) if self.one_size else jax.random.randint(rng, (n,), 0, 3)
    return self.decode(params, stats, jnp.concatenate([jnp.eye(3)[colour], jnp.eye(3)[size]], 1))


def test_conditional_generation_metric_end_to_end(tmp_path):
  from djax import evaluation

  c, source = _shapes_eval(tmp_path)
  c.eval.score_factor = "colour"
  c.eval.num_generated = 90
  res = evaluation.evaluate_representation(ColourSampler(), {}, {}, c, source,
                                           metrics=["conditional_generation"])
  r = res["conditional_generation"]
  assert r["num_generated"] == 90 and r["accuracy"] == pytest.approx(2 / 3, abs=0.02)
  assert r["per_class"]["2"] < 0.05 and r["per_class"]["0"] > 0.95
  assert r["diversity"] > 0.05 and r["diversity_real"] > 0.05
  assert r["diversity_ratio"] == pytest.approx(r["diversity"] / r["diversity_real"])
  flat = evaluation.evaluate_representation(ColourSampler(one_size=True), {}, {}, c, source,
                                            metrics=["conditional_generation"])
  assert flat["conditional_generation"]["diversity"] == pytest.approx(0.0, abs=1e-6)


def test_swap_success_against_reconstruction_labels_or_true_labels(tmp_path):
  from djax import evaluation

  c, source = _shapes_eval(tmp_path)
  c.eval.swap_dims = "0:3"
  colour = lambda res: res["swap_success"]["best"]["colour"]
  authors = evaluation.evaluate_representation(ShiftedColourOracle(), {}, {}, c, source,
                                               metrics=["swap_success"])
  # The authors' protocol only asks that the swap reach what the partner decodes to ...
  assert colour(authors) > 0.9
  c.eval.swap_labels = "true"
  paper = evaluation.evaluate_representation(ShiftedColourOracle(), {}, {}, c, source,
                                             metrics=["swap_success"])
  # ... the paper's asks for the partner's true colour, which this decoder never draws.
  assert colour(paper) < 0.1
  assert paper["swap_success"]["reference"] == "true labels"
  c.eval.swap_labels = "predicted"
  with pytest.raises(ValueError, match="swap_labels"):
    evaluation.evaluate_representation(ShiftedColourOracle(), {}, {}, c, source,
                                       metrics=["swap_success"])


# ----------------------------------------------------------------------------- Inception

def _random_inception_weights(num_classes=1008, seed=0):
  from djax.metrics import inception
  rng = np.random.default_rng(seed)
  w = {}
  for k, s in inception.expected_shapes(num_classes).items():
    if k.endswith("conv.weight"):
      w[k] = rng.normal(0, np.sqrt(2 / np.prod(s[1:])), s).astype(np.float32)
    elif k.endswith(("bn.weight", "running_var")):
      w[k] = np.ones(s, np.float32)
    elif k == "fc.weight":
      w[k] = rng.normal(0, 0.01, s).astype(np.float32)
    else:
      w[k] = np.zeros(s, np.float32)
  return w


def test_inception_wiring_with_random_weights_of_the_documented_shapes():
  from djax.metrics import inception
  w = _random_inception_weights()
  assert len(w) == 94 * 5 + 2  # 94 BasicConv2d (conv + 4 BN arrays) and the fc layer
  w["fc.bias"] = np.eye(1008, dtype=np.float32)[7] * 50  # every image is class 7
  net = inception.InceptionV3(w, image_size=75)  # 75 px: the smallest input v3 takes
  p = net.probs(np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)), batch_size=4)
  assert p.shape == (3, 1008)
  np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
  assert np.all(p.argmax(1) == 7)
  assert generation.inception_score(p)["score"] == pytest.approx(1.0, abs=1e-4)
  bad = dict(w)
  del bad["Mixed_6b.branch7x7_2.conv.weight"]
  with pytest.raises(ValueError, match="lack 1 arrays"):
    inception.InceptionV3(bad)
  bad = dict(w, **{"Mixed_5b.branch1x1.bn.weight": np.ones(3, np.float32)})
  with pytest.raises(ValueError, match="wrong shape"):
    inception.InceptionV3(bad)
