"""Lezama 2019: the losses against direct computations, the three estimators of eq. 9's
difference term against each other, growth of the code, and a resumed progressive run."""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from djax.methods import jacobian_supervision as js


def _decoder(shape=(2, 3, 1), hidden=(7, 5), k=3, seed=0, dtype=jnp.float32):
  dec = js.MLPDecoder(shape, hidden)
  params = dec.init(jax.random.PRNGKey(seed), jnp.zeros((1, k)))["params"]
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
  return lambda code: dec.apply({"params": params}, code)


class LossTest(chex.TestCase):
  """The losses against direct computations, jitted and not (chex.variants)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_losses_match_direct_computation(self):
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    x, xh = (rng.uniform(0, 1, (2, 3, 3, 1)).astype(np.float32) for _ in range(2))
    rec = self.variant(js.reconstruction_loss)(xh, x)
    chex.assert_shape(rec, ())
    chex.assert_type(rec, jnp.float32)
    np.testing.assert_allclose(rec, np.mean((xh - x) ** 2), rtol=1e-6)
    ys, yt = f32(5, 3), f32(5, 3)
    np.testing.assert_allclose(self.variant(js.y_loss)(ys, yt), np.mean((ys - yt) ** 2),
                               rtol=1e-6)
    dt, ds = f32(5, 4), f32(5, 4)
    np.testing.assert_allclose(self.variant(js.difference_loss)(dt, ds),
                               np.mean((dt - ds) ** 2), rtol=1e-6)
    # Eq. 10 written out with the loops of the paper (in float64).
    y, z = f32(6, 3), f32(6, 2)
    want = 0.0
    for i in range(2):
      for j in range(3):
        c = np.mean([(z[m, i] - z[:, i].mean()) * (y[m, j] - y[:, j].mean())
                     for m in range(6)], dtype=np.float64)
        want += c ** 2
    xcov = self.variant(js.xcov_loss, static_argnums=2)
    np.testing.assert_allclose(self.variant(js.xcov_loss)(y, z), want, rtol=1e-5)  # default
    np.testing.assert_allclose(xcov(y, z, "squared"), want, rtol=1e-5)
    np.testing.assert_allclose(xcov(y, z, "norm"), np.sqrt(want), rtol=1e-4)
    with pytest.raises(ValueError, match="xcov form"):
      xcov(y, z, "l1")


def test_difference_loss_holds_the_teacher_constant():
  dt, ds = jnp.ones((2, 3)), jnp.zeros((2, 3))
  g_t, g_s = jax.grad(lambda a, b: js.difference_loss(a, b), argnums=(0, 1))(dt, ds)
  assert float(jnp.abs(g_t).max()) == 0.0 and float(jnp.abs(g_s).max()) > 0


def test_jvp_matches_central_finite_difference_in_float64():
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    dec = _decoder(k=4, dtype=jnp.float64)
    dec_t = _decoder(k=3, seed=1, dtype=jnp.float64)
    rng = np.random.default_rng(1)
    y = jnp.asarray(rng.normal(size=(3, 3)))
    z = jnp.asarray(rng.normal(size=(3, 1)))
    yj = jnp.asarray(rng.normal(size=(3, 3)))
    d_t, d_s = js.jvp_differences(dec, dec_t, y, z, yj, y, yj)
    v, h = yj - y, 1e-6
    f = lambda yy: dec(jnp.concatenate([yy, z], -1))
    central = (f(y + h * v) - f(y - h * v)) / (2 * h)
    assert d_s.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(d_s), np.asarray(central), rtol=1e-7, atol=1e-9)
    central_t = (dec_t(y + h * v) - dec_t(y - h * v)) / (2 * h)
    np.testing.assert_allclose(np.asarray(d_t), np.asarray(central_t), rtol=1e-7, atol=1e-9)
  finally:
    jax.config.update("jax_enable_x64", old)


def test_full_jacobian_stacks_the_jvp_columns():
  dec = _decoder(k=4)
  rng = np.random.default_rng(2)
  y, z = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), jnp.asarray(rng.normal(size=(5, 1)),
                                                                         jnp.float32)
  cols = js.jacobian_columns(dec, y, z)
  f = lambda yy: dec(jnp.concatenate([yy, z], -1))
  for i in range(3):
    e = jnp.zeros_like(y).at[:, i].set(1.0)
    np.testing.assert_allclose(cols[i], jax.jvp(f, (y,), (e,))[1], rtol=1e-5, atol=1e-6)
  # ... and equals jax.jacfwd's per-sample Jacobian.
  per_sample = jax.vmap(lambda yy, zz: jax.jacfwd(
      lambda a: dec(jnp.concatenate([a, zz])[None])[0])(yy))(y, z)  # [B, *out, k]
  np.testing.assert_allclose(jnp.moveaxis(per_sample, -1, 0), cols, rtol=1e-5, atol=1e-6)
  # The full loss weighs Σ_i ||ΔJ e_i||² by E||d||²/k: with d = ±e_i it is the jvp loss's mean.
  dec_t = _decoder(k=3, seed=5)
  y_t = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  full = js.full_jacobian_loss(dec, dec_t, y, z, y_t, jnp.ones_like(y) / np.sqrt(3.0))
  per_dir = [js.difference_loss(*js.jvp_differences(dec, dec_t, y, z, y + jnp.eye(3)[i], y_t,
                                                    y_t + jnp.eye(3)[i])) for i in range(3)]
  np.testing.assert_allclose(full, np.sum(per_dir) / 3, rtol=1e-5)


def test_linear_decoder_finite_difference_equals_jvp():
  rng = np.random.default_rng(3)
  w_s, w_t = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
  dec_s = lambda c: c @ jnp.asarray(w_s, jnp.float32) + 0.5
  dec_t = lambda c: c @ jnp.asarray(w_t, jnp.float32) - 0.2
  y, yj = (jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for _ in range(2))
  z = jnp.asarray(rng.normal(size=(5, 1)), jnp.float32)
  yt, yjt = (jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for _ in range(2))
  fd = js.finite_differences(dec_s, dec_t, y, z, yj, yt, yjt)
  jv = js.jvp_differences(dec_s, dec_t, y, z, yj, yt, yjt)
  for a, b in zip(fd, jv):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      js.jacobian_difference_loss("finite_difference", dec_s, dec_t, y, z, yj, yt, yjt),
      js.jacobian_difference_loss("jvp", dec_s, dec_t, y, z, yj, yt, yjt), rtol=1e-5)


def _tiny_config(**loss):
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(image_size=16, channels=3, value_range=(0.0, 1.0)))
  c.model = ml_collections.ConfigDict(dict(encoder_hidden=(16, 8), decoder_hidden=(8, 16),
                                           stage=0, code_size=2, new_units=1, teacher_dir=""))
  c.loss = ml_collections.ConfigDict(dict(lambda_y=0.25, lambda_diff=0.1, lambda_xcov=1e-3,
                                          estimator="finite_difference", xcov_form="squared"))
  c.loss.update(loss)
  c.optim = ml_collections.ConfigDict(dict(ae=dict(learning_rate=1e-3, b1=0.9, b2=0.999,
                                                   weight_decay=1e-6)))
  return c


def _teacher_with_batchnorm_stats():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(0, 1, (8, 16, 16, 3)), jnp.float32)
  teacher = js.JacobianSupervision(_tiny_config(), axis_name=None)
  state = teacher.init(jax.random.PRNGKey(0), {"image": x})
  # Give the BatchNorm non-trivial running statistics.
  stats = {"encoder": {"BatchNorm_0": {"mean": jnp.array([0.3, -0.2]),
                                       "var": jnp.array([2.0, 0.5])}}}
  codes = teacher.encode(state.params, stats, x)
  folded = js.fold_output_bn(state.params["ae"]["encoder"], stats["encoder"])
  np.testing.assert_allclose(teacher.t_encoder.apply({"params": folded}, x), codes, rtol=1e-5,
                             atol=1e-5)
  return teacher, state, stats, folded, codes, x


def _student(state, stats, folded, x, growth="function_preserving"):
  c = _tiny_config()
  c.model.update(stage=1, code_size=3, teacher_dir="unused", growth=growth)
  student = js.JacobianSupervision(c, axis_name=None)
  previous = {"params": state.params, "batch_stats": stats}
  return student, jax.jit(student.init)(jax.random.PRNGKey(1), {"image": x}, previous)


def _grown_student():
  teacher, state, stats, folded, codes, x = _teacher_with_batchnorm_stats()
  student, s_state = _student(state, stats, folded, x)
  s_codes = student.encode(s_state.params, s_state.batch_stats, x)
  np.testing.assert_allclose(s_codes[:, :2], codes, rtol=1e-5, atol=1e-5)  # y: the teacher's
  assert float(jnp.std(s_codes[:, 2])) > 0  # the new unit is live
  np.testing.assert_allclose(student.reconstruct(s_state.params, s_state.batch_stats, x),
                             teacher.reconstruct(state.params, stats, x), rtol=1e-5, atol=1e-6)
  return student, s_state, x


def test_growth_folds_batchnorm_and_starts_the_student_as_the_teacher():
  _grown_student()


def test_authors_growth_drops_batchnorm_unfolded_and_initialises_the_new_unit_at_random():
  teacher, state, stats, folded, codes, x = _teacher_with_batchnorm_stats()
  student, s_state = _student(state, stats, folded, x, growth="authors")
  ae = s_state.params["ae"]
  # y: the teacher's code before its BatchNorm (the authors copy the weights, not the norm).
  pre_bn = codes * jnp.sqrt(stats["encoder"]["BatchNorm_0"]["var"] + js.BN_EPS) \
      + stats["encoder"]["BatchNorm_0"]["mean"]
  s_codes = student.encode(s_state.params, s_state.batch_stats, x)
  np.testing.assert_allclose(s_codes[:, :2], pre_bn, rtol=1e-4, atol=1e-4)
  # New unit: PyTorch's default Linear init, U(±1/sqrt(fan_in)), in encoder and decoder.
  enc_w = np.asarray(ae["encoder"]["Dense_2"]["kernel"][:, 2])
  enc_b = float(ae["encoder"]["Dense_2"]["bias"][2])
  dec_v = np.asarray(ae["decoder"]["Dense_0"]["kernel"][2])
  assert np.all(np.abs(enc_w) <= 1 / np.sqrt(8)) and abs(enc_b) <= 1 / np.sqrt(8)
  assert np.all(np.abs(dec_v) <= 1 / np.sqrt(3)) and np.std(dec_v) > 0.1
  np.testing.assert_array_equal(ae["decoder"]["Dense_0"]["kernel"][:2],
                                state.params["ae"]["decoder"]["Dense_0"]["kernel"])
  # The teacher stays the folded, eval-mode one.
  np.testing.assert_allclose(student.teacher_encode(s_state.params["teacher"], x), codes,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="model.growth"):
    _student(state, stats, folded, x, growth="zero")


@pytest.mark.parametrize("estimator", ["finite_difference", "jvp", "full"])
def test_student_step_trains_the_student_only(estimator):
  student, state, x = _grown_student()
  student.estimator = estimator
  batch = {"image": x, "image2": x[::-1]}
  new, metrics = jax.jit(student.train_step)(state, batch, jax.random.PRNGKey(0))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  chex.assert_trees_all_equal(new.params["teacher"], state.params["teacher"])
  moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.params["ae"],
                                 new.params["ae"])
  assert all(jax.tree_util.tree_leaves(moved))
  # At initialisation the student is the teacher: y and the differences agree.
  assert float(metrics["loss_y"]) < 1e-8 and float(metrics["loss_diff"]) < 1e-8


def test_progressive_run_resumes_inside_the_right_stage(tmp_path, tiny_shapes_dataset):
  from djax import stages
  c = _tiny_config()
  c.method = "jacobian_supervision"
  c.seed = 0
  c.num_devices = 1
  c.tensorboard = False
  c.progress_bar = False
  c.data.update(name=tiny_shapes_dataset, pairing="random_other", in_memory_max_gb=1.0)
  c.stages = ml_collections.ConfigDict(dict(first_code_size=2, num_students=1, teacher_epochs=1,
                                            epochs_per_stage=1, eval_stages=(),
                                            swap_dims="0:2"))
  c.train = ml_collections.ConfigDict(dict(batch_size=32, steps=0, log_every=2, save_every=4,
                                           eval_every=0, keep_checkpoints=5))
  c.eval = ml_collections.ConfigDict(dict(metrics=(), factors=("colour",), split="test",
                                          sample_split="test", num_grid_images=2, at_end=True))
  wd = str(tmp_path / "run")
  out = stages.run(c, wd)
  assert [r["code_size"] for r in out["rows"]] == [2, 3]
  s1 = os.path.join(wd, "stage_01")
  saved = json.load(open(os.path.join(s1, "checkpoints", "8", "config", "metadata")))
  assert saved["model"]["stage"] == 1 and saved["model"]["code_size"] == 3
  # Kill stage 1 after step 4: drop its later checkpoints and its done-marker.
  shutil.rmtree(os.path.join(s1, "checkpoints", "8"))
  os.remove(os.path.join(s1, stages.DONE))
  rows0 = open(os.path.join(wd, "stage_00", "metrics.jsonl")).read()
  out2 = stages.run(c, wd)
  assert open(os.path.join(wd, "stage_00", "metrics.jsonl")).read() == rows0  # not retrained
  steps = [json.loads(l)["step"] for l in open(os.path.join(s1, "metrics.jsonl"))]
  assert steps == [2, 4, 6, 8]  # resumed from step 4 inside stage 1, each step logged once
  assert out2["rows"][1]["step"] == 8
  assert os.path.exists(os.path.join(wd, "table.md"))
