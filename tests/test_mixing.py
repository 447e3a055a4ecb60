"""Hu et al. 2018: the mixing algebra, each loss against a direct computation, and which
parameters each loss reaches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_shapes, tiny_mixing_config
from djax.data.pipeline import to_model_images
from djax.methods import base, mixing


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_mix_selects_chunks_and_unmix_recovers_f1():
  rng = np.random.default_rng(0)
  n, d, b = 8, 3, 5
  f1, f2, f3 = (rng.normal(size=(b, n * d)).astype(np.float32) for _ in range(3))
  mask = rng.integers(0, 2, (b, n)).astype(np.float32)
  f12 = np.asarray(mixing.mix(f1, f2, mask))
  for i in range(b):
    for c in range(n):
      want = f1 if mask[i, c] else f2
      np.testing.assert_array_equal(f12[i, c * d:(c + 1) * d], want[i, c * d:(c + 1) * d])
  # Unmixing the mixed code against f1 with the same mask returns f1's chunks exactly.
  np.testing.assert_array_equal(np.asarray(mixing.mix(f12, f1, mask)), f1)
  # ... and in the pipeline's cycle the m-chunks of f3 replace f1's: f_{3⊕1} = m f3 + (1-m) f1.
  f31 = np.asarray(mixing.mix(f3, f1, mask))
  m = np.repeat(mask, d, axis=1)
  np.testing.assert_array_equal(f31, m * f3 + (1 - m) * f1)


def test_mask_sampling_is_fair_and_per_example():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  masks = np.asarray(mixing.sample_masks(keys, 8))
  assert set(np.unique(masks)) == {0.0, 1.0}
  assert abs(masks.mean() - 0.5) < 0.02
  assert len({tuple(m) for m in masks[:50]}) > 30
  shared = np.asarray(mixing.sample_masks(keys[:6], 8, per_example=False))
  assert (shared == shared[:1]).all()


class LossTest(chex.TestCase):
  """Each loss against a direct computation, jitted and not (chex.variants)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_losses_match_direct_computation(self):
    rng = np.random.default_rng(1)
    x1 = rng.uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
    x4 = rng.uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
    loss_mix = self.variant(mixing.mixing_loss)(x4, x1)
    chex.assert_shape(loss_mix, ())
    chex.assert_type(loss_mix, jnp.float32)
    np.testing.assert_allclose(loss_mix, np.mean([np.sum((a - b) ** 2) for a, b in zip(x4, x1)]),
                               rtol=1e-5)

    real, fake = (rng.normal(size=(5, 1)).astype(np.float32) * 3 for _ in range(2))
    d_real, d_fake = (1 / (1 + np.exp(-v.astype(np.float64))) for v in (real, fake))
    want_d = np.mean(-np.log(d_real) - np.log(1 - d_fake))
    np.testing.assert_allclose(self.variant(mixing.discriminator_loss)(real, fake), want_d,
                               rtol=1e-5)
    np.testing.assert_allclose(self.variant(mixing.generator_loss)(fake),
                               np.mean(-np.log(d_fake)), rtol=1e-5)
    minimax = self.variant(mixing.generator_loss, static_argnums=1)
    np.testing.assert_allclose(minimax(fake, "minimax"), np.mean(np.log(1 - d_fake)), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown GAN loss"):
      minimax(fake, "wasserstein")

    logits = rng.normal(size=(4, 8)).astype(np.float32) * 2
    mask = rng.integers(0, 2, (4, 8)).astype(np.float32)
    y = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want_c = np.mean(np.sum(-(mask * np.log(y) + (1 - mask) * np.log(1 - y)), axis=1))
    classifier_loss = self.variant(mixing.classifier_loss)
    np.testing.assert_allclose(classifier_loss(logits, mask), want_c, rtol=1e-5)
    # Stable for confident logits where the naive formula overflows.
    confident = classifier_loss(jnp.array([[80.0, -80.0]]), jnp.array([[0.0, 1.0]]))
    chex.assert_tree_all_finite(confident)


@pytest.fixture(scope="module")
def tiny_setup():
  config = tiny_mixing_config()
  method = mixing.Mixing(config, axis_name=None)
  data = make_tiny_shapes(16, 3)
  x = jnp.asarray(to_model_images(data["image"], 16))
  batch = {"image": x[:8], "image2": x[8:]}
  state = method.init(jax.random.PRNGKey(0), batch)
  return config, batch, state


def _changed_groups(config, batch, state, **lambdas):
  config = config.copy_and_resolve_references()
  for k, v in lambdas.items():
    config.loss[k] = v
  method = mixing.Mixing(config, axis_name=None)
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.PRNGKey(1))
  out = {}
  for name, old_p, new_p in (("encoder", state.params["ae"]["encoder"], new.params["ae"]["encoder"]),
                             ("decoder", state.params["ae"]["decoder"], new.params["ae"]["decoder"]),
                             ("dsc", state.params["dsc"], new.params["dsc"]),
                             ("cls", state.params["cls"], new.params["cls"])):
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), old_p, new_p)
    out[name] = max(jax.tree_util.tree_leaves(diffs)) > 0
  return out, metrics


ZERO = dict(lambda_mix=0.0, lambda_gan=0.0, lambda_cls=0.0, lambda_rec=0.0)


def test_discriminator_loss_moves_only_the_discriminator(tiny_setup):
  config, batch, state = tiny_setup
  changed, metrics = _changed_groups(config, batch, state, **ZERO)
  assert changed == {"encoder": False, "decoder": False, "dsc": True, "cls": False}
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_each_autoencoder_loss_reaches_exactly_its_parameters(tiny_setup):
  """Turns on one term of eq. 4 at a time and checks which groups its gradient reaches, and
  that the shared discriminator pass gives the gradients a direct computation gives."""
  config, batch, state = tiny_setup
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(8))
  mask = mixing.sample_masks(keys, config.model.n_chunks)
  params, stats = state.params, state.batch_stats
  x1, x2 = batch["image"], batch["image2"]

  def grads_with(**lambdas):
    c = config.copy_and_resolve_references()
    for k, v in {**ZERO, **lambdas}.items():
      c.loss[k] = v
    method = mixing.Mixing(c, axis_name=None)
    return jax.jit(method.gradients)(params, stats, x1, x2, mask)[0]

  def reached(g):
    norm = lambda tree: max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(tree))
    return {"encoder": norm(g["ae"]["encoder"]) > 0, "decoder": norm(g["ae"]["decoder"]) > 0,
            "cls": norm(g["cls"]) > 0}

  g_mix, g_gen, g_cls = (grads_with(lambda_mix=1.0), grads_with(lambda_gan=1.0),
                         grads_with(lambda_cls=1.0))
  # L_M (eq. 1): encoder and decoder only.
  assert reached(g_mix) == {"encoder": True, "decoder": True, "cls": False}
  # L_G (eq. 2), generator side: the autoencoder through x3, never the classifier.
  assert reached(g_gen) == {"encoder": True, "decoder": True, "cls": False}
  # L_C (eq. 3): the classifier and, cooperatively, the autoencoder through x3.
  assert reached(g_cls) == {"encoder": True, "decoder": True, "cls": True}

  # Against direct computations: L_G through its own discriminator call, Dsc's loss on
  # (x1, stop_gradient(x3)) through two more.
  method = mixing.Mixing(config, axis_name=None)
  dsc = lambda p, x: base.apply_net(method.discriminator, p, stats["dsc"], x, True)[0]

  def gen_loss(ae):
    out, _ = method.forward({**params, "ae": ae}, stats, x1, x2, mask)
    return mixing.generator_loss(dsc(params["dsc"], out["x3"]), config.loss.gan)

  x3 = method.forward(params, stats, x1, x2, mask)[0]["x3"]
  want_gen = jax.jit(jax.grad(gen_loss))(params["ae"])
  want_dsc = jax.jit(jax.grad(lambda p: mixing.discriminator_loss(dsc(p, x1), dsc(p, x3))))(
      params["dsc"])
  def in_units_of(tree, ref):
    """Each leaf over s = max |ref leaf| + 0.01: atol 1e-5 there is 1e-5 max|b| + 1e-7."""
    return jax.tree_util.tree_map(lambda x, r: x / (float(jnp.max(jnp.abs(r))) + 0.01),
                                  tree, ref)

  for got, want in ((g_gen["ae"], want_gen), (g_mix["dsc"], want_dsc), (g_cls["dsc"], want_dsc)):
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_close(in_units_of(got, want), in_units_of(want, want), rtol=1e-4,
                                atol=1e-5)


def test_train_step_reports_the_losses_it_optimises(tiny_setup):
  config, batch, state = tiny_setup
  method = mixing.Mixing(config, axis_name=None)
  _, metrics = jax.jit(method.train_step)(state, batch, jax.random.PRNGKey(1))
  # Recompute L_M from the same forward pass and masks.
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1), i))(jnp.arange(8))
  mask = mixing.sample_masks(keys, config.model.n_chunks)
  out, _ = jax.jit(method.forward)(state.params, state.batch_stats, batch["image"],
                                   batch["image2"], mask)
  np.testing.assert_allclose(metrics["loss_mix"], mixing.mixing_loss(out["x4"], batch["image"]),
                             rtol=1e-5)
  assert 0.0 <= float(metrics["mask_accuracy"]) <= 1.0


def test_transfer_grid_layout(tiny_setup):
  config, batch, state = tiny_setup
  method = mixing.Mixing(config, axis_name=None)
  src, tgt = batch["image"][:3], batch["image2"][:2]
  grids = method.transfer_grids(state.params, state.batch_stats, src, tgt)
  chex.assert_shape(grids, (config.model.n_chunks, 3, 4, 16, 16, 3))
  chex.assert_type(grids, jnp.float32)
  grids = np.asarray(grids)
  np.testing.assert_array_equal(grids[0, 0, 1:], np.asarray(src))  # sources along the top
  np.testing.assert_array_equal(grids[0, 1:, 0], np.asarray(tgt))  # targets down the left
  # A cell decodes the target's code with one chunk replaced by the source's.
  f_s = method.encode(state.params, state.batch_stats, src)
  f_t = method.encode(state.params, state.batch_stats, tgt)
  mask = jnp.asarray([[0.0, 1.0, 0.0, 0.0]])
  want = method.decode(state.params, state.batch_stats, mixing.mix(f_s[2:3], f_t[1:2], mask))
  np.testing.assert_allclose(grids[1, 2, 3], np.asarray(want[0]), atol=1e-5)
