"""Ruiz et al. 2019: the Rb-VAE objective against a direct computation, sRb-VAE's
density-ratio and discriminator losses against numpy, which parameters each step reaches,
the learned reference vector, the grids, and the cross-method table."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import load_experiment
from djax import evaluation, methods, report, stages
from djax.methods import base, latents, reference_based as rbm




def _np_bce(logits, target):
  p = 1 / (1 + np.exp(-logits))
  return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def tiny(row):
  c = load_experiment("reference_based_mnist").get_config(f"tiny,{row}")
  c.num_devices = 1
  return c


def _batch(seed=0, b=4):
  rng = np.random.default_rng(seed)
  im = lambda: jnp.asarray(rng.uniform(-1, 1, size=(b, 32, 32, 3)), jnp.float32)
  return {"image": im(), "image_ref": im()}


def _check_routing(m, state, batch, model_objective, disc_objective):
  """Every network of both groups gets a gradient; the discriminators' loss, whose inputs
  the model's objective hands over, reaches no model parameter; one step moves both groups."""
  grads, terms = m.gradients(state.params, batch, jax.random.PRNGKey(1))
  for group in ("model", "disc"):
    for net, g in grads[group].items():
      assert float(sum(jnp.abs(leaf).sum() for leaf in jax.tree_util.tree_leaves(g))) > 0, net
  x, xr = batch["image"], batch["image_ref"]

  def disc_loss_of_model(pm):
    _, (_, pairs) = model_objective(pm, state.params["disc"], x, xr, jax.random.PRNGKey(1))
    return disc_objective(state.params["disc"], pairs, jax.random.PRNGKey(2))[0]

  g = jax.grad(disc_loss_of_model)(state.params["model"])
  assert all(float(jnp.abs(leaf).sum()) == 0 for leaf in jax.tree_util.tree_leaves(g))
  new, _ = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(1))
  for group in ("model", "disc"):
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.params[group],
                                     new.params[group])
    assert any(jax.tree_util.tree_leaves(changed)), group
  return grads, terms, new


def test_density_ratio_and_discriminator_losses_match_numpy():
  rng = np.random.default_rng(0)
  dq, dp, dqr, dpr = (rng.normal(size=6) for _ in range(4))
  np.testing.assert_allclose(rbm.density_ratio_objective(dq, dp, dqr, dpr),
                             dq.mean() - dp.mean() + dqr.mean() - dpr.mean(), rtol=1e-5)
  want = 0.5 * (np.mean(_np_bce(dq, 1.0)) + np.mean(_np_bce(dp, 0.0)))
  np.testing.assert_allclose(rbm.discriminator_loss(jnp.asarray(dq), jnp.asarray(dp)), want,
                             rtol=1e-5)
  # Algorithm 1's classes: encoder pairs 1. A discriminator that says "encoder" (large d) to
  # the encoder's pairs and "generator" to the generator's has a small loss, and then the
  # model's objective E_q d − E_p d is large: what the model then lowers.
  good = float(rbm.discriminator_loss(jnp.full(3, 5.0), jnp.full(3, -5.0)))
  bad = float(rbm.discriminator_loss(jnp.full(3, -5.0), jnp.full(3, 5.0)))
  assert good < 0.01 < 5 < bad


def test_rb_vae_objective_is_eq_3_on_the_networks_outputs():
  c = tiny("rb_vae")
  m = methods.create(c, axis_name=None)
  batch = _batch()
  state = m.init(jax.random.PRNGKey(0), batch)
  pm = state.params["model"]
  pm = {**pm, "e_ref": jnp.linspace(-1, 1, m.e_dim)}  # a reference vector that matters
  rng = jax.random.PRNGKey(3)
  total, (terms, _) = m.model_objective(pm, None, batch["image"], batch["image_ref"], rng)
  # The same sums, written out from the networks' outputs with the same noise.
  r = jax.random.split(rng, 10)
  x, xr = batch["image"], batch["image_ref"]
  mu_z, lv_z = m.q_z(pm, x)
  mu_e, lv_e = m.q_e(pm, x)
  mu_zr, lv_zr = m.q_z(pm, xr)
  z = mu_z + np.exp(0.5 * lv_z) * m.noise(r[0], 4, m.z_dim)
  e = mu_e + np.exp(0.5 * lv_e) * m.noise(r[1], 4, m.e_dim)
  zr = mu_zr + np.exp(0.5 * lv_zr) * m.noise(r[2], 4, m.z_dim)
  x_hat = m.generate(pm, e, z)
  xr_hat = m.generate(pm, jnp.broadcast_to(pm["e_ref"], (4, m.e_dim)), zr)
  b = c.loss.likelihood_scale
  nll = lambda a, t: np.sum(np.abs(np.asarray(a) - np.asarray(t)).reshape(4, -1), 1) / b + (
      32 * 32 * 3 * np.log(2 * b))
  kl = lambda mu, lv: np.sum(0.5 * (np.asarray(mu) ** 2 + np.exp(lv) - 1 - np.asarray(lv)), 1)
  want = 0.5 * np.mean(nll(x_hat, x) + kl(mu_z, lv_z) + kl(mu_e, lv_e)) + 0.5 * np.mean(
      nll(xr_hat, xr) + kl(mu_zr, lv_zr))
  np.testing.assert_allclose(total, want, rtol=2e-4)
  np.testing.assert_allclose(terms["loss_kl_e"], np.mean(kl(mu_e, lv_e)), rtol=1e-4)
  # e_r reaches the loss through the reference images alone.
  g = jax.grad(lambda p: m.model_objective(p, None, x, xr, rng)[0])(pm)
  assert float(jnp.abs(g["e_ref"]).sum()) > 0
  g_u = jax.grad(lambda p: rbm.rb_vae_loss(
      latents.laplace_nll(m.generate(p, e, z), x, b), kl(mu_z, lv_z), kl(mu_e, lv_e),
      jnp.zeros(4), jnp.zeros(4)))(pm)
  assert float(jnp.abs(g_u["e_ref"]).sum()) == 0


def test_srb_vae_gradient_routing():
  c = tiny("srb_vae")
  m = methods.create(c, axis_name=None)
  batch = _batch()
  state = m.init(jax.random.PRNGKey(0), batch)
  grads, _, _ = _check_routing(m, state, batch, m.model_objective, m.disc_objective)
  assert set(grads) == {"model", "disc"}
  assert set(grads["model"]) == {"enc_z", "enc_e", "gen", "e_ref"}
  assert set(grads["disc"]) == {"d_xze", "d_xz"}
  # The model's adversarial term (eq. 6) alone moves both encoders and the generator.
  c2 = tiny("srb_vae")
  c2.loss.lambda_rec = c2.loss.lambda_latent = 0.0
  m2 = methods.create(c2, axis_name=None)
  g2, t2 = m2.gradients(state.params, batch, jax.random.PRNGKey(1))
  np.testing.assert_allclose(t2["loss_model"], t2["loss_density_ratio"], rtol=1e-6)
  for net in ("enc_z", "enc_e", "gen", "e_ref"):
    assert float(sum(jnp.abs(v).sum() for v in jax.tree_util.tree_leaves(
        g2["model"][net]))) > 0, net


def test_srb_vae_explicit_kl_adds_eq_3s_kl_terms():
  batch = _batch()
  x, xr = batch["image"], batch["image_ref"]
  c0, c2 = tiny("srb_vae"), tiny("srb_vae")
  c2.loss.lambda_kl = 2.0
  m0, m2 = methods.create(c0, axis_name=None), methods.create(c2, axis_name=None)
  state = m0.init(jax.random.PRNGKey(0), batch)
  pm, pd = state.params["model"], state.params["disc"]
  rng = jax.random.PRNGKey(4)
  l0 = m0.model_objective(pm, pd, x, xr, rng)[0]
  l2, (terms, _) = m2.model_objective(pm, pd, x, xr, rng)
  kl = lambda mu, lv: np.sum(0.5 * (np.asarray(mu) ** 2 + np.exp(lv) - 1 - np.asarray(lv)), 1)
  want = (np.mean(kl(*m0.q_z(pm, x)) + kl(*m0.q_e(pm, x))) + np.mean(kl(*m0.q_z(pm, xr))))
  np.testing.assert_allclose(terms["loss_kl"], want, rtol=1e-4)
  np.testing.assert_allclose(l2 - l0, 2.0 * want, rtol=1e-3)


def test_mathieu_row_is_mathieus_algorithm_1_on_reference_only_triplets():
  c = tiny("mathieu")
  m = methods.create(c, axis_name=None)
  batch = _batch(b=3)
  x, xr = batch["image"], batch["image_ref"]
  state = m.init(jax.random.PRNGKey(0), batch)
  pm, pd = state.params["model"], state.params["disc"]
  rng = jax.random.PRNGKey(5)
  total, (terms, pairs) = m.mathieu_objective(pm, pd, x, xr, rng)
  # Written out: x1 = [x, x^r] with y1 = [0, 1]; x2 = [x^r, x] with y2 = 1 - y1; the swap
  # decodes each reference z with the *previous* reference image's s.
  r = jax.random.split(rng, 3)
  x1 = np.concatenate([x, xr])
  s = np.asarray(m.q_e(pm, x1)[0])
  mu, lv = (np.asarray(a) for a in m.q_z(pm, x1))
  z1 = mu + np.exp(0.5 * lv) * np.asarray(m.noise(r[0], 6, m.z_dim))
  zp = np.asarray(m.noise(r[1], 6, m.z_dim))
  s2 = np.concatenate([s[3:], s[:3]])
  dec = lambda e, z: np.asarray(m.generate(pm, jnp.asarray(e), jnp.asarray(z)))
  y2 = jax.nn.one_hot(jnp.array([1, 1, 1, 0, 0, 0]), 2)
  adv = lambda im: np.asarray(m.discriminate(pd, "adv", jnp.asarray(im), [y2], r[2]))
  lo = c.loss.mathieu
  t = lo.real_target
  want = {"loss_rec": np.mean((dec(s, z1) - x1) ** 2),
          "loss_swap": np.mean((dec(s[[5, 3, 4]], z1[3:]) - np.asarray(xr)) ** 2),
          "loss_adv_swap": np.mean(_np_bce(adv(dec(s2, z1)), t)),
          "loss_adv_prior": np.mean(_np_bce(adv(dec(s2, zp)), t)),
          "loss_kl": np.mean(np.sum(0.5 * (mu ** 2 + np.exp(lv) - 1 - lv), 1))}
  for k, v in want.items():
    np.testing.assert_allclose(terms[k], v, rtol=2e-4, err_msg=k)
  np.testing.assert_allclose(total, lo.lambda_rec * want["loss_rec"] + lo.lambda_swap * want[
      "loss_swap"] + lo.lambda_adv * want["loss_adv_swap"] + lo.lambda_adv_prior * want[
      "loss_adv_prior"] + lo.lambda_kl * want["loss_kl"], rtol=2e-4)
  np.testing.assert_allclose(pairs["real"], np.concatenate([xr, x]))
  np.testing.assert_allclose(pairs["y"], y2)
  # No pairs of unlabelled images: reordering them leaves the swap term as it was; reordering
  # the reference images pairs other images and changes it.
  perm = jnp.array([2, 0, 1])
  same = m.mathieu_objective(pm, pd, x[perm], xr, rng)[1][0]["loss_swap"]
  other = m.mathieu_objective(pm, pd, x, xr[perm], rng)[1][0]["loss_swap"]
  np.testing.assert_allclose(same, terms["loss_swap"], rtol=1e-6)
  assert abs(float(other) - float(terms["loss_swap"])) > 1e-6


def test_mathieu_row_gradient_routing():
  m = methods.create(tiny("mathieu"), axis_name=None)
  batch = _batch()
  state = m.init(jax.random.PRNGKey(0), batch)
  grads, terms, new = _check_routing(m, state, batch, m.mathieu_objective,
                                     m.mathieu_adversary_objective)
  assert set(grads["model"]) == {"enc_z", "enc_e", "gen"} and set(grads["disc"]) == {"adv"}
  assert {"loss_swap", "loss_adversary", "adv_real", "adv_fake"} <= set(terms)
  x = batch["image"]
  # The adversary reads y: the same image scores differently as reference and as unlabelled.
  pd, im = state.params["disc"], x[:2]
  d = lambda y: m.discriminate(pd, "adv", im, [jax.nn.one_hot(jnp.full(2, y), 2)],
                                 jax.random.PRNGKey(0), False)
  assert float(jnp.abs(d(0) - d(1)).max()) > 0
  assert set(m.eval_images(new.params, {}, x, 2)) == {"reconstruction", "transfer"}
  # s has no prior: the row cannot sample, and says so before any work.
  assert "sample" not in base.capabilities(m) and "sample" in base.capabilities(
      methods.create(tiny("srb_vae"), axis_name=None))
  with pytest.raises(ValueError, match="'sample' capability"):
    evaluation.check_metrics(m, ("conditional_generation",))


def test_config_errors_are_one_line():
  c = tiny("srb_vae")
  c.data.pairing = None
  with pytest.raises(ValueError, match="data.pairing='reference'"):
    methods.create(c, axis_name=None)
  c = tiny("srb_vae")
  c.model.encoder_widths = (8, 8)
  with pytest.raises(ValueError, match="model.encoder_widths"):
    methods.create(c, axis_name=None)
  c = tiny("srb_vae")
  c.loss.objective = "rbvae"
  with pytest.raises(ValueError, match="known: "):
    methods.create(c, axis_name=None)
  c = tiny("rb_vae")
  c.loss.lambda_kl = 1.0
  with pytest.raises(ValueError, match="set loss.lambda_kl=0"):
    methods.create(c, axis_name=None)
  c = tiny("mathieu")
  del c.loss["mathieu"]
  with pytest.raises(ValueError, match="loss.mathieu"):
    methods.create(c, axis_name=None)
  m = methods.create(tiny("mathieu"), axis_name=None)
  batch = _batch()
  state = m.init(jax.random.PRNGKey(0), batch)
  with pytest.raises(ValueError, match="4 unlabelled and 2 reference"):
    m.mathieu_objective(state.params["model"], state.params["disc"], batch["image"],
                        batch["image_ref"][:2], jax.random.PRNGKey(0))


def test_grids_are_built_from_the_right_codes():
  c = tiny("srb_vae")
  m = methods.create(c, axis_name=None)
  batch = _batch(b=6)
  state = m.init(jax.random.PRNGKey(0), batch)
  p = state.params
  a, b = batch["image"][:2], batch["image"][2:5]
  grid = m.transfer_grid(p, {}, a, b)
  assert grid.shape == (4, 3) + a.shape[1:]
  ca, cb = m.encode(p, {}, a), m.encode(p, {}, b)
  cell = m.decode(p, {}, jnp.concatenate([ca[1:2, :m.e_dim], cb[2:3, m.e_dim:]], -1))[0]
  np.testing.assert_allclose(grid[3, 2], cell, atol=1e-5)  # e of a[1], z of b[2]
  np.testing.assert_allclose(grid[0, 1:], a)
  syn = m.conditional_synthesis_grid(p, {}, b, jax.random.PRNGKey(5), 4)
  assert syn.shape == (3, 5) + a.shape[1:]
  e = jax.random.normal(jax.random.PRNGKey(5), (4, m.e_dim))
  cell = m.decode(p, {}, jnp.concatenate([e[3:4], cb[1:2, m.e_dim:]], -1))[0]
  np.testing.assert_allclose(syn[1, 4], cell, atol=1e-5)  # row: z of b[1]; column: e no. 3
  assert set(m.eval_images(p, {}, batch["image"], 2)) == {
      "reconstruction", "as_reference", "conditional_synthesis", "transfer"}


def test_variant_table_reports_the_best_of_each_sweep_beside_the_paper(tmp_path):
  def res(avg, z=None, sps=0.01):
    head = {"mae/R": avg, "mae/average": avg, **({} if z is None else {"part_mae[z]/average": z})}
    return {"rows": [{"eval": {"headline": head}}], "cost": {"seconds_per_step": sps}}

  c = ml_collections.ConfigDict()
  c.table = ml_collections.ConfigDict(dict(
      paper="ruiz2019_table1", columns=("mae/R", "mae/average"),
      rows={"vae": "VAE", "b4": "beta-VAE", "b32": "beta-VAE", "srb": "sRb-VAE"},
      order=("vae", "b4", "b32", "srb"), families={"beta-VAE": ["b4", "b32"]},
      control="part_mae[z]/average"))
  md = report.variant_table(c, {"vae": res(0.09), "b4": res(0.07), "b32": res(0.08),
                                "srb": res(0.05, z=0.2)}, str(tmp_path))
  lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
  assert lines[1].startswith("| VAE | vae | 0.090 | 0.090 | 0.085 |")
  assert lines[2].startswith("| beta-VAE | b4 | 0.070 |")  # the sweep's best, once
  assert lines[3].startswith("| sRb-VAE | srb | 0.050 | 0.050 | 0.060 | 0.200 | 10 |")
  assert len(lines) == 4
  assert "sRb-VAE < beta-VAE < VAE" in md
  assert os.path.exists(tmp_path / "variants.png")


def test_the_table_command_trains_every_row_through_the_one_loop(tmp_path):
  c = load_experiment("reference_based_table1").get_config("tiny")
  keep = ("vae", "mathieu", "srb_vae")
  for k in list(c.variants.keys()):
    if k not in keep:
      del c.variants[k]
  c.table.order = keep
  c.table.rows = {k: c.table.rows[k] for k in keep}
  c.table.families = {}
  c.train.steps = 2
  c.train.save_every = 2
  out = stages.main(c, str(tmp_path))
  assert set(out["results"]) == set(keep)
  md = (tmp_path / "variants.md").read_text()
  assert "| VAE | vae |" in md and "| sRb-VAE | srb_vae |" in md
  assert "| Mathieu et al. | mathieu |" in md
  ev = json.loads((tmp_path / "srb_vae" / "eval.json").read_text())
  assert ev["method"] == "reference_based"
  parts = ev["results"]["part_regression_mae"]["parts"]
  assert parts["e"]["dims"] == "0:32" and parts["z"]["dims"] == "32:64"
  assert ev["results"]["linear_regression_mae"]["dims"] == "0:32"
  ev = json.loads((tmp_path / "vae" / "eval.json").read_text())
  assert ev["method"] == "vae_family" and ev["results"]["linear_regression_mae"]["dims"] == "all"
