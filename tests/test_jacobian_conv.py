"""Lezama 2019's conv nets (SVHN A.5, CelebA A.2) and the CelebA attribute method (§4):
paper-sized shapes, the §4 losses against direct computations, the jvp estimator on conv
decoders against a central difference, student growth, a student step, and the attribute
teacher trained through the trainer on tfds mock data.

Also: student train steps (CelebA with each estimator, SVHN), the whole CelebA run (teacher,
student, Table 2 evaluation; three attributes, so the 40 flips of the paper's list do not
cost 40 classifier passes) and an SVHN progressive run on mock data.
"""

import functools
import importlib.util
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import mock_tfds_data
from djax.methods import jacobian_attributes as ja
from djax.methods import jacobian_nets as jn
from djax.methods import jacobian_supervision as js

HERE = os.path.dirname(os.path.abspath(__file__))


def _config(name, variant=None):
  path = os.path.join(HERE, "..", "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds mock data (64 examples a split), read as djax reads."""
  with mock_tfds_data(monkeypatch, 64):
    yield


# ----------------------------------------------------------------------------- shapes

def _shapes(encoder, decoder, image_shape, batch=2):
  x = jax.ShapeDtypeStruct((batch,) + image_shape, jnp.float32)
  v_enc = jax.eval_shape(lambda x: encoder.init(jax.random.PRNGKey(0), x), x)
  code = jax.eval_shape(lambda v, x: encoder.apply(v, x), v_enc, x)
  v_dec = jax.eval_shape(lambda c: decoder.init(jax.random.PRNGKey(0), c), code)
  out = jax.eval_shape(lambda v, c: decoder.apply(v, c), v_dec, code)
  def kernels(v, prefix):
    names = [k for k in v["params"] if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [v["params"][k]["kernel"].shape for k in sorted(names, key=lambda n: int(n[len(prefix):]))]
  return code.shape, out.shape, v_enc, v_dec, kernels


def test_celeba_nets_have_the_papers_shapes_at_256():
  c = _config("jacobian_celeba")  # the paper's setting: 256×256, k = 40
  c.model.teacher_dir = "unused"
  for stage, d in ((0, 2048), (1, 4096), (2, 8192)):
    c.model.stage = stage
    m = ja.AttributeJacobianSupervision(c, axis_name=None)
    code, out, v_enc, v_dec, kernels = _shapes(m.encoder, m.decoder, (256, 256, 3))
    zc = d // 4
    assert m.k == 40 and code == (2, 40 + d) and out == (2, 256, 256, 3)
    # C(16) → C(32) → C(64) → C(128) → C(256) → C(512) → C(zc + k), 4×4 stride 2
    assert kernels(v_enc, "conv") == [(4, 4, 3, 16), (4, 4, 16, 32), (4, 4, 32, 64),
                                      (4, 4, 64, 128), (4, 4, 128, 256), (4, 4, 256, 512),
                                      (4, 4, 512, zc + 40)]
    # D(zc + k) → D(512 + k) → D(256 + k) → … → D(16 + k): f input channels, ×2 each
    assert kernels(v_dec, "deconv") == [(4, 4, zc + 40, 512), (4, 4, 552, 256),
                                        (4, 4, 296, 128), (4, 4, 168, 64), (4, 4, 104, 32),
                                        (4, 4, 72, 16), (4, 4, 56, 3)]
    assert set(v_enc["batch_stats"]) == {f"bn{i}" for i in range(7)}
    assert "batch_stats" not in v_dec  # per-sample decoder
  c = _config("jacobian_celeba", "128")  # djax's default celeb_a size: z still 2×2×512
  m = ja.AttributeJacobianSupervision(c, axis_name=None)
  assert _shapes(m.encoder, m.decoder, (128, 128, 3))[:2] == ((2, 2088), (2, 128, 128, 3))
  c.model.decoder_norm = "batch"
  with pytest.raises(ValueError, match="per-sample"):
    ja.AttributeJacobianSupervision(c, axis_name=None)


def test_svhn_nets_have_the_papers_shapes():
  c = _config("jacobian_svhn")
  for stage, code_size in ((0, 2), (16, 18)):
    c.model.update(stage=stage, code_size=code_size, teacher_dir="unused" if stage else "")
    m = js.JacobianSupervision(c, axis_name=None)
    code, out, v_enc, v_dec, kernels = _shapes(m.encoder, m.decoder, (32, 32, 3))
    assert code == (2, code_size) and out == (2, 32, 32, 3)
    assert kernels(v_enc, "conv") == [(3, 3, 3, 64), (3, 3, 64, 128), (3, 3, 128, 256)]
    assert v_enc["params"]["code"]["kernel"].shape == (3, 3, 256, code_size)  # C(k+d)
    assert set(v_enc["batch_stats"]) == {"BatchNorm_0"}  # → BatchNorm, at every stage
    # D(256): 1×1 → 4×4; D(128), D(64), D(3): ×2 to 32×32
    assert kernels(v_dec, "deconv") == [(4, 4, code_size, 256), (4, 4, 256, 128),
                                        (4, 4, 128, 64), (4, 4, 64, 3)]
    assert m.k == (2 if stage == 0 else code_size - 1)


# ----------------------------------------------------------------------------- losses

def test_attribute_losses_match_direct_computation():
  rng = np.random.default_rng(0)
  b, k = 5, 4
  y, y2, y2p = (rng.normal(size=(b, k)) for _ in range(3))
  ybar = rng.choice([-1.0, 1.0], size=(b, k))
  # eq. 11 written out: 1/k Σ_i max(1 − y_i ȳ_i, 0), averaged over the batch
  want = np.mean([sum(max(1 - y[n, i] * ybar[n, i], 0) for i in range(k)) / k for n in range(b)])
  np.testing.assert_allclose(ja.prediction_loss(y, ybar), want, rtol=1e-6)
  # eq. 12: the same hinge with y_2 as target; 'sign' (the authors' code) with sign(y_2)
  want = np.mean([sum(max(1 - y2[n, i] * y2p[n, i], 0) for i in range(k)) / k for n in range(b)])
  np.testing.assert_allclose(ja.cycle_attribute_loss(y2, y2p), want, rtol=1e-6)
  want_sign = np.mean(np.maximum(1 - np.sign(y2) * y2p, 0))
  np.testing.assert_allclose(ja.cycle_attribute_loss(y2, y2p, "sign"), want_sign, rtol=1e-6)
  with pytest.raises(ValueError, match="cyc1 target"):
    ja.cycle_attribute_loss(y2, y2p, "label")
  # eq. 13: ||z_1 − z'_1||² as a mean over units and batch
  z1, z1p = rng.normal(size=(b, 6)), rng.normal(size=(b, 6))
  np.testing.assert_allclose(ja.cycle_code_loss(z1, z1p), np.mean((z1 - z1p) ** 2), rtol=1e-6)
  # the encoder is frozen for the cycle losses: no gradient reaches y_2 or z_1
  g = jax.grad(lambda a, c: ja.cycle_attribute_loss(a, c) + ja.cycle_code_loss(a, c),
               argnums=(0, 1))(jnp.asarray(y2), jnp.asarray(y2p))
  assert float(jnp.abs(g[0]).max()) == 0.0 and float(jnp.abs(g[1]).max()) > 0
  # eq. 14 with the paper's λ1..λ5
  terms = {n: float(v) for n, v in zip(("loss_rec", "loss_pred", "loss_xcov", "loss_cyc1",
                                        "loss_cyc2"), rng.uniform(0, 1, 5))}
  lam = (1e2, 1e-1, 1e-1, 1e-4, 1e-5)
  want = (1e2 * terms["loss_rec"] + 1e-1 * terms["loss_pred"] + 1e-1 * terms["loss_xcov"]
          + 1e-4 * terms["loss_cyc1"] + 1e-5 * terms["loss_cyc2"])
  np.testing.assert_allclose(ja.teacher_loss(terms, lam), want, rtol=1e-6)
  # labels 0/1 → ȳ ∈ {−1, 1} in the configured order
  labels = {"Smiling": np.array([1, 0]), "Male": np.array([0, 0])}
  np.testing.assert_array_equal(ja.attribute_targets(labels, ("Male", "Smiling")),
                                [[-1, 1], [-1, -1]])


def test_config_values_are_the_papers():
  c = _config("jacobian_celeba")
  lo = c.loss
  assert (lo.lambda_rec, lo.lambda_pred, lo.lambda_xcov, lo.lambda_cyc1, lo.lambda_cyc2) == (
      1e2, 1e-1, 1e-1, 1e-4, 1e-5)
  s = c.stages.student_loss
  assert (s.lambda_y, s.lambda_diff, s.lambda_pred, s.lambda_cyc1, s.lambda_cyc2) == (
      1.0, 50.0, 0.0, 0.0, 0.0)
  assert (c.optim.enc.learning_rate, c.optim.enc.b1, c.train.batch_size) == (2e-3, 0.5, 128)
  assert c.data.image_size == 256 and tuple(c.model.z_channels_per_stage) == (512, 1024, 2048)
  v = _config("jacobian_svhn")
  assert (v.loss.lambda_y, v.loss.lambda_diff, v.stages.num_students,
          v.stages.epochs_per_stage) == (0.025, 0.01, 16, 25)


# ----------------------------------------------------------------------------- Jacobians

def _random_variables(module, *args, seed=0, dtype=jnp.float32, **kwargs):
  """Random variables of ``module`` without compiling its initialisers (slow on XLA:CPU):
  shapes from ``jax.eval_shape``, values from numpy (kernels N(0, 1/fan-in); BatchNorm
  statistics and affine parameters near identity)."""
  shapes = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a, **kwargs), *args)
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == "kernel":
      v = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    elif name in ("scale", "var"):
      v = rng.uniform(0.5, 1.5, s.shape)
    else:  # bias, mean
      v = 0.1 * rng.normal(size=s.shape)
    return jnp.asarray(v, dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def test_jvp_on_conv_decoders_matches_central_difference_in_float64():
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    k, b, f64 = 3, 3, jnp.float64
    nets = {  # (student decoder, its code size, teacher decoder, its code size, d_s, d_t)
        "face": (jn.FaceDecoder((8, 8, 3), (4,), 2, k), k + 8,
                 jn.FaceDecoder((8, 8, 3), (4,), 1, k), k + 4, 8, 4),  # z 2×2×2, teacher 2×2×1
        "svhn": (jn.SVHNDecoder((16, 16, 3), (4, 4)), k + 1,
                 jn.SVHNDecoder((16, 16, 3), (4, 4)), k, 1, 0)}
    rng = np.random.default_rng(1)
    for name, (dec_s, cs, dec_t, ct, d_s, d_t) in nets.items():
      p_s = _random_variables(dec_s, jnp.zeros((1, cs), f64), seed=2, dtype=f64)
      p_t = _random_variables(dec_t, jnp.zeros((1, ct), f64), seed=3, dtype=f64)
      y, yj, y_t, y_jt = (jnp.asarray(rng.normal(size=(b, k))) for _ in range(4))
      z = jnp.asarray(rng.normal(size=(b, d_s)))
      z_t = jnp.asarray(rng.normal(size=(b, d_t))) if d_t else None

      @jax.jit
      def check(p_s, p_t, y, yj, y_t, y_jt, z, z_t, h=1e-6):
        f_s = lambda a: dec_s.apply(p_s, jnp.concatenate([a, z], -1))
        f_t = ((lambda a: dec_t.apply(p_t, jnp.concatenate([a, z_t], -1))) if z_t is not None
               else (lambda a: dec_t.apply(p_t, a)))
        diff_t, diff_s = js.jvp_differences(lambda c: dec_s.apply(p_s, c),
                                            lambda c: dec_t.apply(p_t, c), y, z, yj, y_t, y_jt,
                                            z_t)
        central = lambda f, a, v: (f(a + h * v) - f(a - h * v)) / (2 * h)
        v_s, v_t = yj - y, y_jt - y_t
        # per-sample: sample 0's jvp alone (the others' directions zeroed) is the same
        alone = jax.jvp(f_s, (y,), (v_s.at[1:].set(0.0),))[1]
        cols = js.jacobian_columns(lambda c: dec_t.apply(p_t, c), y_t, z_t)
        e1 = jax.jvp(f_t, (y_t,), (jnp.zeros_like(y_t).at[:, 1].set(1.0),))[1]
        return (diff_s, central(f_s, y, v_s), diff_t, central(f_t, y_t, v_t), alone, cols, e1)

      diff_s, fd_s, diff_t, fd_t, alone, cols, e1 = check(p_s, p_t, y, yj, y_t, y_jt, z, z_t)
      chex.assert_type(diff_s, jnp.float64)
      chex.assert_shape(diff_s, (b,) + dec_s.image_shape)
      np.testing.assert_allclose(diff_s, fd_s, rtol=1e-6, atol=1e-9, err_msg=name)
      np.testing.assert_allclose(diff_t, fd_t, rtol=1e-6, atol=1e-9, err_msg=name)
      np.testing.assert_allclose(alone[0], diff_s[0], rtol=1e-10, err_msg=name)
      np.testing.assert_allclose(cols[1], e1, rtol=1e-10, err_msg=name)  # full, teacher z fixed
  finally:
    jax.config.update("jax_enable_x64", old)


# ----------------------------------------------------------------------------- growth

def _tiny_celeba(stage=0, estimator="jvp"):
  c = _config("jacobian_celeba", "tiny")
  c.model.attributes = ("Eyeglasses", "Smiling", "Male")
  c.model.stage = stage
  c.model.teacher_dir = "unused" if stage else ""
  c.loss.cycle_start_step = 0
  if stage:
    c.loss.update(dict(c.stages.student_loss))
    c.loss.estimator = estimator
  return c


def _batch(names, b=4, size=64, seed=0):
  rng = np.random.default_rng(seed)
  x = lambda: jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)), jnp.float32)
  return {"image": x(), "image2": x(),
          "labels": {n: jnp.asarray(rng.integers(0, 2, b), jnp.int32) for n in names}}


@functools.partial(jax.jit, static_argnames="nets")
def _encode_decode(t_vars, s_vars, x, *, nets):
  (t_enc, t_dec), (s_enc, s_dec) = nets
  t_code = t_enc.apply(t_vars["encoder"], x)
  s_code = s_enc.apply(s_vars["encoder"], x)
  return t_code, s_code, t_dec.apply(t_vars["decoder"], t_code), s_dec.apply(s_vars["decoder"],
                                                                               s_code)


def _grown(nets, teacher_code_size, x, grow):
  """Teacher variables (random), the student's grown from them, and both models' codes and
  reconstructions of ``x`` (eval mode)."""
  (t_enc, t_dec), _ = nets
  ve = _random_variables(t_enc, x, seed=0)
  vd = _random_variables(t_dec, jnp.zeros((1, teacher_code_size)), seed=1)
  s_ae, s_stats = grow({"encoder": ve["params"], "decoder": vd["params"]},
                       ve["batch_stats"], jax.random.PRNGKey(3))
  t_vars = {"encoder": ve, "decoder": vd}
  s_vars = {"encoder": {"params": s_ae["encoder"], "batch_stats": s_stats},
            "decoder": {"params": s_ae["decoder"]}}
  return _encode_decode(t_vars, s_vars, x, nets=nets)


def test_students_grow_out_of_their_teachers():
  """Face (§4.2.2: z 2 → 4 channels) and SVHN (§3: one more unit): the student keeps the
  teacher's y and old z, its new units are live, and it decodes exactly as the teacher."""
  k, rng = 3, np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  face = ((jn.FaceEncoder((4,), 2, k), jn.FaceDecoder((16, 16, 3), (4,), 2, k)),
          (jn.FaceEncoder((4,), 4, k), jn.FaceDecoder((16, 16, 3), (4,), 4, k)))
  t_code, s_code, t_rec, s_rec = _grown(
      face, k + 4 * 4 * 2, x, lambda ae, st, r: jn.grow_face(ae, st, r, 2, 4))
  assert t_code.shape == (4, k + 32) and s_code.shape == (4, k + 64)
  np.testing.assert_allclose(s_code[:, :k], t_code[:, :k], rtol=1e-5, atol=1e-6)  # same y
  s_z = s_code[:, k:].reshape(4, 4, 4, 4)
  np.testing.assert_allclose(s_z[..., :2].reshape(4, -1), t_code[:, k:], rtol=1e-5, atol=1e-6)
  assert float(jnp.std(s_z[..., 2:])) > 0  # the new z channels are live
  np.testing.assert_allclose(s_rec, t_rec, rtol=1e-5, atol=1e-6)

  svhn = ((jn.SVHNEncoder(2, (4, 4)), jn.SVHNDecoder((16, 16, 3), (4, 4))),
          (jn.SVHNEncoder(3, (4, 4)), jn.SVHNDecoder((16, 16, 3), (4, 4))))
  t_code, s_code, t_rec, s_rec = _grown(
      svhn, 2, x, lambda ae, st, r: jn.grow_svhn(ae, st, r, 1))
  assert s_code.shape == (4, 3)
  np.testing.assert_allclose(s_code[:, :2], t_code, rtol=1e-5, atol=1e-6)
  assert float(jnp.std(s_code[:, 2])) > 0
  np.testing.assert_allclose(s_rec, t_rec, rtol=1e-5, atol=1e-6)


def _student_step(estimator):
  c = _tiny_celeba(1, estimator)
  student = ja.AttributeJacobianSupervision(c, axis_name=None)
  batch = _batch(student.attributes)
  v_enc = _random_variables(student.t_encoder, batch["image"])
  v_dec = _random_variables(student.t_decoder, jnp.zeros((1, student.k + 32 * 32 * 2)))
  previous = {"params": {"ae": {"encoder": v_enc["params"], "decoder": v_dec["params"]}},
              "batch_stats": {"encoder": v_enc["batch_stats"]}}
  state = jax.jit(student.init)(jax.random.PRNGKey(1), batch, previous)
  new, metrics = jax.jit(student.train_step)(state, batch, jax.random.PRNGKey(0))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["loss_diff"]) > 0 and float(metrics["loss_y"]) > 0
  moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.params["ae"],
                                 new.params["ae"])
  assert all(jax.tree_util.tree_leaves(moved))
  chex.assert_trees_all_equal(new.params["teacher"], state.params["teacher"])
  return metrics


@pytest.mark.parametrize("estimator", ["finite_difference", "jvp", "full"])
def test_face_student_step(estimator):
  _student_step(estimator)


def test_svhn_student_step_through_the_method():
  c = _config("jacobian_svhn", "tiny")
  c.data.image_size = 16
  c.model.encoder_channels, c.model.decoder_channels = (4, 4), (4, 4)
  c.model.update(stage=1, code_size=3, teacher_dir="unused")
  student = js.JacobianSupervision(c, axis_name=None)
  x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (6, 16, 16, 3)), jnp.float32)
  v_enc = _random_variables(student.t_encoder, x)
  previous = {"params": {"ae": {"encoder": v_enc["params"], "decoder": _random_variables(
      student.t_decoder, jnp.zeros((1, 2)))["params"]}},
      "batch_stats": {"encoder": v_enc["batch_stats"]}}
  state = jax.jit(student.init)(jax.random.PRNGKey(1), {"image": x}, previous)
  assert set(state.batch_stats) == {"encoder", "teacher"}
  new, metrics = jax.jit(student.train_step)(state, {"image": x, "image2": x[::-1]},
                                             jax.random.PRNGKey(0))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  chex.assert_trees_all_equal((new.params["teacher"], new.batch_stats["teacher"]),
                              (state.params["teacher"], state.batch_stats["teacher"]))


# ----------------------------------------------------------------------------- training

def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_celeba_attribute_teacher_trains_on_mock_data(tmp_path, mock_tfds):
  from djax import train
  c = _config("jacobian_celeba", "tiny")  # 40 attributes, 64×64, one block each way
  c.train.steps = 8
  c.loss.cycle_start_step = 2  # update 2 (cycle losses, encoder frozen) from step 2 on
  c.eval.metrics = ()
  wd = str(tmp_path / "teacher")
  train.train_and_evaluate(c, wd)
  rows = _losses(wd)
  assert [r["step"] for r in rows] == list(range(1, 9))
  loss = [r["loss"] for r in rows]
  assert np.mean(loss[-3:]) < np.mean(loss[:2]), loss
  assert rows[0]["loss_cyc1"] == 0.0 and rows[-1]["loss_cyc1"] > 0  # cycle losses from step 2
  assert os.listdir(os.path.join(wd, "samples"))


def test_celeba_teacher_then_student_with_table2(tmp_path, mock_tfds):
  from djax import stages
  c = _config("jacobian_celeba", "tiny")
  c.model.attributes = ("Eyeglasses", "Smiling", "Male")  # k = 3: three flips to score
  c.stages.eval_stages = (-1,)
  out = stages.run(c, str(tmp_path / "run"))
  assert [r["stage"] for r in out["rows"]] == [0, 1]
  assert [r["d"] for r in out["rows"]] == [32 * 32 * 2, 32 * 32 * 4]
  last = out["rows"][-1]
  assert 0.0 <= last["attribute_flip"] <= 1.0 and last["reconstruction_mse"] > 0
  assert set(last["eval"]["attribute_flip"]["success"]) == {"Eyeglasses", "Smiling", "Male"}
  table = open(str(tmp_path / "run" / "table.md")).read()
  assert "successful attribute flips" in table and "%" in table
  again = stages.run(c, str(tmp_path / "run"))  # finished stages are skipped
  assert again["rows"][-1]["step"] == last["step"]


def test_svhn_progressive_run_on_mock_data(tmp_path, mock_tfds):
  from djax import stages
  c = _config("jacobian_svhn", "tiny")  # teacher (k=2) and one student (d=1), one epoch each
  out = stages.run(c, str(tmp_path / "run"))
  assert [r["code_size"] for r in out["rows"]] == [2, 3]
  assert all(r["test_mse"] > 0 for r in out["rows"])
  assert os.path.exists(str(tmp_path / "run" / "table.md"))
