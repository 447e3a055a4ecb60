"""Mathieu et al. 2016: each loss against a direct computation, which parameters each step of
Algorithm 1 reaches, the triplets, the §4 stages and a tiny end-to-end run."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_shapes
from djax import evaluation, train
from djax.data import pipeline
from djax.data.pipeline import to_model_images
from djax.methods import specified_unspecified as su


def tiny_config(steps: int = 3, variant: str = "small"):
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "mathieu_mnist.py")
  spec = importlib.util.spec_from_file_location("mathieu_mnist_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  c.data.name = "tiny_shapes"
  c.data.image_size = 16
  c.data.channels = 3
  c.data.label_key = "colour"
  c.model.num_classes = 3
  c.model.s_dim = c.model.z_dim = 4
  c.model.trunk_spec = "c8k5s2-c16k5s2"
  c.model.adversary_spec = "c8k5s2-c16k5s2"
  c.model.classifier_hidden = 8
  c.train.batch_size = 8
  c.train.steps = steps
  c.train.log_every = 1
  c.train.save_every = steps
  c.train.eval_every = 0
  c.eval.factors = ("colour",)
  c.eval.probe_split = "validation"
  c.eval.num_grid_images = 2
  c.num_devices = 1
  c.progress_bar = False
  c.tensorboard = False
  return c


def _np_bce(logits, target):
  p = 1 / (1 + np.exp(-logits))
  return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def test_losses_match_direct_computation():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.5
  want_kl = np.mean(np.sum(0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar), axis=1))
  np.testing.assert_allclose(su.kl_divergence(mu, logvar), want_kl, rtol=1e-5)
  # The closed form is the KL of N(μ, σ²) to N(0, 1): zero at the prior, positive elsewhere.
  assert float(su.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3)))) == 0.0

  eps = rng.normal(size=(5, 3))
  np.testing.assert_allclose(su.reparameterise(mu, logvar, eps), mu + np.exp(logvar / 2) * eps,
                             rtol=1e-5)

  x, x_hat = rng.uniform(-1, 1, (2, 4, 4, 1)), rng.uniform(-1, 1, (2, 4, 4, 1))
  np.testing.assert_allclose(su.reconstruction_loss(x_hat, x), np.mean((x_hat - x) ** 2),
                             rtol=1e-5)

  real, fake = rng.normal(size=6) * 2, rng.normal(size=6) * 2
  np.testing.assert_allclose(su.adversary_loss(real, fake),
                             np.mean(_np_bce(real, 0.95) + _np_bce(fake, 0.0)), rtol=1e-5)
  np.testing.assert_allclose(su.adversary_loss(real, fake, 1.0),
                             np.mean(-np.log(1 / (1 + np.exp(-real)))
                                     - np.log(1 - 1 / (1 + np.exp(-fake)))), rtol=1e-5)
  np.testing.assert_allclose(su.generator_adversarial_loss(fake), np.mean(_np_bce(fake, 0.95)),
                             rtol=1e-5)

  logits, labels = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2])
  logp = logits - np.log(np.sum(np.exp(logits), 1, keepdims=True))
  np.testing.assert_allclose(su.classification_loss(logits, labels),
                             -np.mean(logp[np.arange(4), labels]), rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_setup():
  config = tiny_config()
  method = su.SpecifiedUnspecified(config, axis_name=None)
  d = make_tiny_shapes(24, 3)
  x = jnp.asarray(to_model_images(d["image"], 16))
  lab = lambda sl: {"colour": jnp.asarray(d["colour"][sl], jnp.int32)}
  batch = {"image": x[:8], "image_same": x[8:16], "image_other": x[16:],
           "labels": lab(slice(0, 8)), "labels_same": lab(slice(8, 16)),
           "labels_other": lab(slice(16, 24))}
  state = method.init(jax.random.PRNGKey(0), batch)
  return config, batch, state


def _with_loss(config, **lambdas):
  c = config.copy_and_resolve_references()
  for k, v in lambdas.items():
    c.loss[k] = v
  return su.SpecifiedUnspecified(c, axis_name=None)


ZERO = dict(lambda_rec=0.0, lambda_swap=0.0, lambda_adv=0.0, lambda_adv_prior=0.0, lambda_kl=0.0)


def _max_abs(tree):
  return max(float(jnp.max(jnp.abs(v))) for v in jax.tree_util.tree_leaves(tree))


def test_gradient_routing(tiny_setup):
  """The adversary's loss moves only the adversary; the generator's adversarial terms reach
  the encoder and decoder and leave the adversary's gradient as it is."""
  config, batch, state = tiny_setup
  params, stats = state.params, state.batch_stats
  rng = jax.random.PRNGKey(1)
  grads = {}
  for name, lambdas in (("none", ZERO), ("adv", {**ZERO, "lambda_adv": 1.0}),
                        ("prior", {**ZERO, "lambda_adv_prior": 1.0}), ("all", {})):
    method = _with_loss(config, **lambdas)
    grads[name] = jax.jit(method.gradients)(params, stats, batch, rng)[0]
  assert _max_abs(grads["none"]["ae"]) == 0.0  # nothing but the adversary's own loss
  assert _max_abs(grads["adv"]["ae"]["encoder"]) > 0 and _max_abs(grads["adv"]["ae"]["decoder"]) > 0
  assert _max_abs(grads["prior"]["ae"]["decoder"]) > 0
  for name in ("adv", "prior", "all"):  # the adversary's gradient ignores the generator's terms
    for a, b in zip(jax.tree_util.tree_leaves(grads[name]["adv"]),
                    jax.tree_util.tree_leaves(grads["none"]["adv"])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # Against direct computations: the adversary's gradient on (x2 real, X̃12 fake), X̃12
  # recomputed; the generator's adversarial gradient through an adversary held fixed.
  method = _with_loss(config, **{**ZERO, "lambda_adv": 1.0})
  eps, eps_prior = method.noise(rng, 8)
  _, (_, x12, _) = method.generator_objective(params["ae"], params, stats, batch, eps, eps_prior)
  id2 = batch["labels_other"]["colour"]

  def direct_adv(p):
    real, s = method.adversary_fn(p, stats["adv"], batch["image_other"], id2)
    fake, _ = method.adversary_fn(p, s, x12, id2)
    return su.adversary_loss(real, fake)

  def direct_gen(ae):
    p = {**params, "ae": ae}
    codes, _ = method.encode_parts(p, stats, jnp.concatenate(
        [batch["image"], batch["image_same"], batch["image_other"]]), True)
    z1 = su.reparameterise(codes["mu"][:8], codes["logvar"][:8], eps)
    x = method.decode_zs(p, stats, jnp.concatenate([z1, z1, z1, eps_prior]),
                         jnp.concatenate([codes["s"][:8], codes["s"][8:16], codes["s"][16:],
                                          codes["s"][16:]]), True)[0]
    return su.generator_adversarial_loss(method.adversary_fn(params["adv"], stats["adv"],
                                                             x[16:24], id2)[0])

  for got, want in ((grads["adv"]["adv"], jax.grad(direct_adv)(params["adv"])),
                    (grads["adv"]["ae"], jax.grad(direct_gen)(params["ae"]))):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                 atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-7)
  # The adversary's loss treats X̃12 as data: no gradient flows back into the generator.
  g_fake = jax.grad(lambda x: method.adversary_objective(params["adv"], stats["adv"],
                                                         batch["image_other"], x, id2)[0])(x12)
  assert _max_abs(g_fake) == 0.0


def test_train_step_updates_each_group_from_its_own_loss(tiny_setup):
  config, batch, state = tiny_setup
  changed = lambda a, b: _max_abs(jax.tree_util.tree_map(jnp.subtract, a, b)) > 0
  new, metrics = jax.jit(_with_loss(config, **ZERO).train_step)(state, batch,
                                                                jax.random.PRNGKey(1))
  assert not changed(new.params["ae"], state.params["ae"])
  assert changed(new.params["adv"], state.params["adv"])
  new, metrics = jax.jit(_with_loss(config).train_step)(state, batch, jax.random.PRNGKey(1))
  assert changed(new.params["ae"], state.params["ae"])
  assert all(np.isfinite(float(v)) for v in metrics.values())
  lo = config.loss
  want = (lo.lambda_rec * metrics["loss_rec"] + lo.lambda_swap * metrics["loss_swap"]
          + lo.lambda_adv * metrics["loss_adv_swap"] + lo.lambda_adv_prior
          * metrics["loss_adv_prior"] + lo.lambda_kl * metrics["loss_kl"])
  np.testing.assert_allclose(metrics["loss_ae"], want, rtol=1e-5)


def test_code_parts_swap_grid_and_sample(tiny_setup):
  config, batch, state = tiny_setup
  method = su.SpecifiedUnspecified(config, axis_name=None)
  p, s = state.params, state.batch_stats
  assert method.code_parts() == {"s": slice(0, 4), "z": slice(4, 8)}
  top, left = batch["image"][:3], batch["image_other"][:2]
  grid = np.asarray(method.swap_grid(p, s, top, left))
  assert grid.shape == (3, 4, 16, 16, 3)
  np.testing.assert_array_equal(grid[0, 1:], np.asarray(top))  # s sources along the top
  np.testing.assert_array_equal(grid[1:, 0], np.asarray(left))  # z sources down the left
  c_top, c_left = method.encode(p, s, top), method.encode(p, s, left)
  code = jnp.concatenate([c_top[2:3, :4], c_left[1:2, 4:]], -1)  # s of top 2, z of left 1
  np.testing.assert_allclose(grid[2, 3], np.asarray(method.decode(p, s, code)[0]), atol=1e-5)
  x = method.sample(p, s, jax.random.PRNGKey(0), 3, top)
  assert x.shape == (3, 16, 16, 3) and float(jnp.max(jnp.abs(x))) <= 1.0
  with pytest.raises(ValueError, match="needs a condition"):
    method.sample(p, s, jax.random.PRNGKey(0), 3)


def test_swap_adversarial_weight_ramps_with_the_step(tiny_setup):
  config, batch, state = tiny_setup
  assert [float(su.ramp(t, 10, 20, 0.03, 0.33)) for t in (0, 10, 20, 30, 100)] == pytest.approx(
      [0.03, 0.03, 0.18, 0.33, 0.33])
  assert float(su.ramp(50, 10, 0, 0.03, 0.33)) == pytest.approx(0.03)  # no ramp: constant
  c = config.copy_and_resolve_references()
  c.loss.lambda_adv, c.loss.lambda_adv_final = 0.03, 0.33
  c.loss.adv_ramp_start, c.loss.adv_ramp_steps = 10, 20
  step = jax.jit(su.SpecifiedUnspecified(c, axis_name=None).train_step)
  lo = c.loss
  for t, weight in ((0, 0.03), (20, 0.18), (40, 0.33)):
    _, metrics = step(state.replace(step=jnp.asarray(t, jnp.int32)), batch,
                      jax.random.PRNGKey(1))
    assert float(metrics["lambda_adv"]) == pytest.approx(weight)
    want = (lo.lambda_rec * metrics["loss_rec"] + lo.lambda_swap * metrics["loss_swap"]
            + weight * metrics["loss_adv_swap"] + lo.lambda_adv_prior
            * metrics["loss_adv_prior"] + lo.lambda_kl * metrics["loss_kl"])
    np.testing.assert_allclose(metrics["loss_ae"], want, rtol=1e-5)
  # the variant's schedule: :small's 0.03 until step 1000, 0.15 from step 3000
  ramped = tiny_config(variant="small_adv_ramp")
  m = su.SpecifiedUnspecified(ramped, axis_name=None)
  assert [float(m.swap_adversarial_weight(t)) for t in (0, 1000, 2000, 3000, 4000)] == \
      pytest.approx([0.03, 0.03, 0.09, 0.15, 0.15])
  assert ramped.loss.lambda_adv_prior == 0.03


def _code(s_part, z_part):
  return jnp.concatenate([s_part, z_part], -1)[None]


def test_generation_grid_keeps_each_rows_s_and_draws_z_from_the_prior(tiny_setup):
  config, batch, state = tiny_setup
  method = su.SpecifiedUnspecified(config, axis_name=None)
  p, s = state.params, state.batch_stats
  images, rng, m = batch["image"][:3], jax.random.PRNGKey(5), 4
  grid = np.asarray(method.generation_grid(p, s, images, rng, m))
  assert grid.shape == (3, 1 + m, 16, 16, 3)
  np.testing.assert_array_equal(grid[:, 0], np.asarray(images))  # the source image first
  codes = method.encode(p, s, images)
  z = jax.random.normal(rng, (3 * m, 4)).reshape(3, m, 4)
  for r, c in ((0, 0), (1, 2), (2, 3)):  # row r: s of image r; column c: prior draw (r, c)
    want = method.decode(p, s, _code(codes[r, :4], z[r, c]))[0]
    np.testing.assert_allclose(grid[r, 1 + c], np.asarray(want), atol=1e-5)
  other_s = method.decode(p, s, _code(codes[0, :4], z[1, 2]))[0]
  assert np.abs(grid[1, 3] - np.asarray(other_s)).max() > 1e-3  # the row's own s matters


def test_interpolation_grid_s_along_rows_z_down_columns(tiny_setup):
  """Supplementary Fig. 9 ("the lines show interpolation along the specified part and the
  column show interpolation along the unspecified part"): cell (r, c) decodes
  s = lerp(s_a, s_b, c / (k-1)) and z = lerp(z_a, z_b, r / (k-1))."""
  config, batch, state = tiny_setup
  method = su.SpecifiedUnspecified(config, axis_name=None)
  p, s = state.params, state.batch_stats
  a, b, k = batch["image"][0], batch["image_other"][0], 4
  grid = np.asarray(method.interpolation_grid(p, s, a, b, k))
  assert grid.shape == (k, k, 16, 16, 3)
  ca, cb = np.asarray(method.encode(p, s, jnp.stack([a, b])))
  lerp = lambda u, v, t: (1 - t) * u + t * v
  dec = lambda s_part, z_part: np.asarray(method.decode(p, s, _code(s_part, z_part))[0])
  np.testing.assert_allclose(grid[0, 0], dec(ca[:4], ca[4:]), atol=1e-5)  # a's own code
  np.testing.assert_allclose(grid[-1, -1], dec(cb[:4], cb[4:]), atol=1e-5)  # b's own code
  np.testing.assert_allclose(grid[0, -1], dec(cb[:4], ca[4:]), atol=1e-5)  # s of b, z of a
  np.testing.assert_allclose(grid[-1, 0], dec(ca[:4], cb[4:]), atol=1e-5)  # s of a, z of b
  r, c = 1, 2
  want = dec(lerp(ca[:4], cb[:4], c / (k - 1)), lerp(ca[4:], cb[4:], r / (k - 1)))
  np.testing.assert_allclose(grid[r, c], want, atol=1e-5)
  transposed = dec(lerp(ca[:4], cb[:4], r / (k - 1)), lerp(ca[4:], cb[4:], c / (k - 1)))
  assert np.abs(grid[r, c] - transposed).max() > 1e-3  # rows and columns are not exchangeable


def test_eval_images_gives_swap_generation_interpolation_reconstruction(tiny_setup):
  config, batch, state = tiny_setup
  method = su.SpecifiedUnspecified(config, axis_name=None)
  p, s = state.params, state.batch_stats
  images = jnp.concatenate([batch["image"], batch["image_other"]])[:6]
  out = {k: np.asarray(v) for k, v in method.eval_images(p, s, images, n=3).items()}
  assert set(out) == {"swap", "generation", "interpolation", "reconstruction"}
  assert out["swap"].shape == (4, 4, 16, 16, 3)
  np.testing.assert_allclose(out["swap"], np.asarray(method.swap_grid(p, s, images[:3],
                                                                      images[3:6])), atol=1e-6)
  assert out["generation"].shape == (3, 4, 16, 16, 3)
  np.testing.assert_allclose(out["interpolation"], np.asarray(
      method.interpolation_grid(p, s, images[0], images[3], 3)), atol=1e-6)
  assert out["reconstruction"].shape == (2, 6, 16, 16, 3)


def test_encode_sample_draws_z_from_the_posterior(tiny_setup):
  config, batch, state = tiny_setup
  m = su.SpecifiedUnspecified(config, axis_name=None)
  rng = jax.random.PRNGKey(7)
  got = np.asarray(m.encode_sample(state.params, state.batch_stats, rng, batch["image"]))
  out, _ = m.encode_parts(state.params, state.batch_stats, batch["image"], False)
  eps = np.asarray(jax.random.normal(rng, out["mu"].shape))
  s_dim = m.code_parts()["s"].stop
  np.testing.assert_array_equal(got[:, :s_dim], np.asarray(out["s"]))  # s is deterministic
  np.testing.assert_allclose(got[:, s_dim:], np.asarray(out["mu"]) +
                             np.exp(0.5 * np.asarray(out["logvar"])) * eps, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(m.encode(state.params, state.batch_stats,
                                                    batch["image"]))[:, s_dim:], out["mu"])


def test_triplets_share_and_differ_in_label():
  c = tiny_config()
  p = pipeline.get_dataset(c.data, "train", batch_size=32, num_devices=1, seed=0,
                           pairing="triplet")
  for step in range(3):
    b = p.batch(step)
    lab, same, other = (b[k]["colour"].reshape(-1) for k in ("labels", "labels_same",
                                                             "labels_other"))
    assert (lab == same).all() and (lab != other).all()
    assert not np.array_equal(b["image"], b["image_same"])  # another example, same label


def test_pretrained_s_stages_freeze_the_s_encoder(tiny_setup):
  config, batch, _ = tiny_setup
  c = tiny_config(variant="small_pretrained_s")
  first, second = su.SpecifiedUnspecified.stages(c, steps_per_epoch=10)
  assert (first.config.model.mode, second.config.model.mode) == ("s_classifier", "pretrained_s")
  assert second.from_previous and not first.from_previous
  m0 = su.SpecifiedUnspecified(first.config, axis_name=None)
  s0 = m0.init(jax.random.PRNGKey(0), batch)
  s0, met = jax.jit(m0.train_step)(s0, batch, jax.random.PRNGKey(1))
  assert set(s0.params) == {"ae"} and "accuracy" in met
  previous = {"params": jax.device_get(s0.params), "batch_stats": jax.device_get(s0.batch_stats)}
  m1 = su.SpecifiedUnspecified(second.config, axis_name=None)
  s1 = m1.init(jax.random.PRNGKey(2), batch, previous)
  new, _ = jax.jit(m1.train_step)(s1, batch, jax.random.PRNGKey(3))
  for a, b in zip(jax.tree_util.tree_leaves(new.params["frozen"]),
                  jax.tree_util.tree_leaves(s0.params["ae"]["s_encoder"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _max_abs(jax.tree_util.tree_map(jnp.subtract, new.params["ae"], s1.params["ae"])) > 0
  # s is the classifier stage's s
  s_stage0 = m0.encode(s0.params, s0.batch_stats, batch["image"])
  np.testing.assert_allclose(np.asarray(m1.encode(new.params, new.batch_stats,
                                                  batch["image"])[:, :4]),
                             np.asarray(s_stage0), atol=1e-5)


def test_tiny_run_end_to_end(tmp_path):
  c = tiny_config(steps=3)
  w = str(tmp_path)
  summary = train.train_and_evaluate(c, w)
  with open(os.path.join(w, "eval.json")) as f:
    ev = json.load(f)
  head = ev["headline"]
  assert {"part_probe[s]/colour", "part_probe[z]/colour"} <= set(head)
  parts = ev["results"]["part_probe"]["parts"]
  assert head["part_probe[s]/colour"] == parts["s"]["accuracy"]["colour"]
  assert head["part_probe_sampled[z]/colour"] == (
      ev["results"]["part_probe_sampled"]["parts"]["z"]["accuracy"]["colour"])
  pngs = os.listdir(os.path.join(w, "samples"))
  for name in ("swap", "generation", "interpolation", "reconstruction"):
    assert any(p.startswith(name) for p in pngs), (name, pngs)
  assert summary["end_step"] == 3


def test_sprites_kl_variants_are_small_with_the_authors_kl_multiplied():
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "mathieu_sprites.py")
  spec = importlib.util.spec_from_file_location("mathieu_sprites_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  small, kl20 = module.get_config("small").to_dict(), module.get_config("small_kl20").to_dict()
  np.testing.assert_allclose(small["loss"]["lambda_kl"], 0.1 * 6 / (3 * 32 * 32))
  np.testing.assert_allclose(kl20["loss"]["lambda_kl"], 20 * small["loss"]["lambda_kl"])
  kl20["loss"]["lambda_kl"] = small["loss"]["lambda_kl"]
  assert kl20 == small  # nothing else differs
  kl3 = module.get_config("small_kl3").to_dict()
  np.testing.assert_allclose(kl3["loss"]["lambda_kl"], 3 * small["loss"]["lambda_kl"])
  kl3["loss"]["lambda_kl"] = small["loss"]["lambda_kl"]
  assert kl3 == small
  with pytest.raises(ValueError, match="small_kl20"):
    module.get_config("kl20")
  for variant in ("full", "small"):
    names = module.get_config(variant).eval.metrics
    assert {"part_probe_sampled", "mig", "sap", "dci", "factor_vae", "beta_vae"} <= set(names)
    assert set(names) <= set(evaluation.METRICS)
