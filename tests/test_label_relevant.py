"""Zheng & Sun 2019: each loss against a direct numpy computation, which parameters each
group's gradient reaches, the n_gm scan against sequential GM steps, the precision's
learning-rate decay, and a tiny run on three_moons through djax.train."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from djax import toy_points, train
from djax.data import pipeline, three_moons
from djax.methods import label_relevant as lr


def _moons_config(variant=None):
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "label_relevant_moons.py")
  spec = importlib.util.spec_from_file_location("label_relevant_moons_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  c.model.encoder_s_spec = c.model.encoder_u_spec = "f8-f"
  c.model.decoder_spec = "f8-f2"
  c.model.discriminator_spec = "f8"
  c.model.adversary_spec = "f8-f"
  c.progress_bar = False
  c.tensorboard = False
  return c


def _np_log_softmax(a):
  a = a - a.max(-1, keepdims=True)
  return a - np.log(np.exp(a).sum(-1, keepdims=True))


def test_gm_losses_match_the_authors_formulas():
  rng = np.random.default_rng(0)
  b, c, d = 5, 3, 4
  z = rng.normal(size=(b, d))
  mu = rng.normal(size=(c, d))
  v = rng.normal(size=(c, d))
  y = rng.integers(0, c, b)
  lam = np.log1p(np.exp(v))  # Λ = softplus(v), a precision
  dist = 0.5 * np.array([[np.sum(lam[k] * (z[i] - mu[k]) ** 2) for k in range(c)]
                         for i in range(b)])
  p = np.exp(-dist) * np.sqrt(np.prod(lam, axis=1))[None]  # the authors' p_k
  want_cls = -np.log(p[np.arange(b), y] / p.sum(1))
  want_lkd = dist[np.arange(b), y] - 0.5 * np.log(np.prod(lam[y], axis=1))
  lam_j = lr.precision(jnp.asarray(v))
  np.testing.assert_allclose(lam_j, lam, rtol=1e-6)
  np.testing.assert_allclose(lr.gm_classification_loss(z, y, mu, lam_j), want_cls, rtol=1e-5)
  np.testing.assert_allclose(lr.gm_likelihood_loss(z, y, mu, lam_j), want_lkd, rtol=1e-5)
  # L_lkd is −log N(z; μ_y, Λ_y⁻¹) less (d/2) log 2π.
  cov = np.diag(1.0 / lam[y[0]])
  logpdf = (-0.5 * (z[0] - mu[y[0]]) @ np.linalg.inv(cov) @ (z[0] - mu[y[0]])
            - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))
  np.testing.assert_allclose(want_lkd[0], -logpdf - 0.5 * d * np.log(2 * np.pi), rtol=1e-6)
  # Eq. 11: the total Gaussian of the mixture (uniform p(c)).
  mu_t, lam_t = lr.total_gaussian(jnp.asarray(mu), lam_j)
  var_c = 1.0 / lam
  np.testing.assert_allclose(mu_t, mu.mean(0), rtol=1e-5)
  np.testing.assert_allclose(1.0 / np.asarray(lam_t),
                             var_c.mean(0) + (mu ** 2).mean(0) - mu.mean(0) ** 2, rtol=1e-4)
  want_u = 0.5 * np.sum(np.asarray(lam_t) * (z - mu.mean(0)) ** 2, 1) - 0.5 * np.sum(
      np.log(np.asarray(lam_t)))
  np.testing.assert_allclose(lr.unlabelled_likelihood_loss(z, mu, lam_j), want_u, rtol=1e-4)
  # §3.6, an unlabelled example of a known class: −log Σ_c (1/C) N(z; μ_c, Λ_c⁻¹), less the
  # same (d/2) log 2π.
  dens = np.exp(-dist) * np.sqrt(np.prod(lam, axis=1))[None]
  np.testing.assert_allclose(lr.mixture_likelihood_loss(z, mu, lam_j),
                             -np.log(dens.mean(1)), rtol=1e-5)
  assert lr.UNLABELLED_PRIORS["mixture"] is lr.mixture_likelihood_loss
  assert lr.UNLABELLED_PRIORS["total"] is lr.unlabelled_likelihood_loss
  # Class-c samples z_s = μ_c + ε / √Λ_c.
  eps = rng.normal(size=(b, d))
  np.testing.assert_allclose(lr.sample_class_codes(eps, y, mu, lam_j),
                             mu[y] + eps / np.sqrt(lam[y]), rtol=1e-5)


def test_other_losses_match_direct_computation():
  rng = np.random.default_rng(1)
  mean, logvar = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  want_kl = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - logvar - 1, 1)
  np.testing.assert_allclose(lr.kl_loss(mean, logvar), want_kl, rtol=1e-5)
  logits, y = rng.normal(size=(4, 5)) * 2, rng.integers(0, 5, 4)
  logq = _np_log_softmax(logits)
  np.testing.assert_allclose(lr.adversary_loss(logits, y), -logq[np.arange(4), y], rtol=1e-5)
  np.testing.assert_allclose(lr.uniform_target_loss(logits), -np.sum(logq / 5, 1), rtol=1e-5)
  # The uniform target is minimal (log C) at a uniform prediction.
  np.testing.assert_allclose(lr.uniform_target_loss(jnp.zeros((1, 5))), [np.log(5)], rtol=1e-6)
  x, xr = rng.normal(size=(3, 2, 2, 1)), rng.normal(size=(3, 2, 2, 1))
  np.testing.assert_allclose(lr.reconstruction_loss(xr, x),
                             [0.5 * np.sum((a - b) ** 2) for a, b in zip(xr, x)], rtol=1e-5)
  real, rec, samp = (rng.normal(size=6) * 2 for _ in range(3))
  hinge = lambda t: np.maximum(0.0, t)
  want_d = hinge(1 - real).mean() + 0.5 * (hinge(1 + rec).mean() + hinge(1 + samp).mean())
  np.testing.assert_allclose(lr.hinge_discriminator_loss(real, rec, samp), want_d, rtol=1e-5)
  want_d1 = hinge(1 - real).mean() + hinge(1 + rec).mean() + hinge(1 + samp).mean()
  np.testing.assert_allclose(lr.hinge_discriminator_loss(real, rec, samp, 1.0), want_d1,
                             rtol=1e-5)  # the authors' loss_hinge_dis
  np.testing.assert_allclose(lr.hinge_generator_loss(rec, samp), -rec.mean() - samp.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(lr.hinge_generator_loss(rec, samp, 3.0),
                             -rec.mean() - 3.0 * samp.mean(), rtol=1e-5)


@pytest.fixture(scope="module", params=["mixture", "total"])
def tiny(request):
  c = _moons_config()
  c.loss.unlabelled_prior = request.param  # §3.6: unlabelled of known / of unseen classes
  c.loss.rec_weight_es, c.loss.rec_weight_eu, c.loss.rec_weight_g = 0.7, 0.3, 1.3
  c.loss.kl_weight, c.loss.lkd_weight, c.loss.adv_weight, c.loss.gan_weight = 2.0, 0.4, 0.9, 1.1
  c.loss.sampled_gan_weight = 1.7
  method = lr.LabelRelevantVAE(c, axis_name=None)
  a = three_moons.split_arrays("test")
  labels = a["label"][:16].astype(np.int32).copy()
  labels[[1, 6]] = -1  # two unlabelled examples (eq. 11)
  batch = {"point": jnp.asarray(a["point"][:16]), "labels": {"label": jnp.asarray(labels)}}
  state = method.init(jax.random.PRNGKey(0), batch)
  return method, state, batch


def _terms(m, params, stats, x, labels, labelled, keys):
  """Algorithm 1 lines 10-23 written out directly (no pullbacks): every loss term."""
  b = x.shape[0]
  zs = m.encode_s(params, stats, x, True)[0]
  (mean, logvar), _ = m.encode_u(params, stats, x, True)
  eps = jax.vmap(lambda k: jax.random.normal(k, (2 * m.zu_dim + m.zs_dim,)))(keys)
  eps_u, eps_sp, eps_up = jnp.split(eps, [m.zu_dim, m.zu_dim + m.zs_dim], axis=-1)
  zu = mean + jnp.exp(0.5 * logvar) * eps_u
  mu, lam = jax.tree_util.tree_map(jax.lax.stop_gradient, m.mixture(params))
  pred = jnp.argmax(lr.class_log_density(jax.lax.stop_gradient(zs), mu, lam), -1)
  cond = jnp.where(labelled, labels, pred)
  cond_p = cond
  if m.sampled_classes == "uniform":  # the authors' Y_rand
    cond_p = jnp.stack([jax.random.randint(jax.random.fold_in(k, 1), (), 0, m.num_classes)
                        for k in keys])
  zs_p = lr.sample_class_codes(eps_sp, cond_p, mu, lam)
  if m.sampled_norm == "separate":  # the authors' two generator calls
    x_f = m.decode_fn(params, stats, zs, zu, True)[0]
    x_p = m.decode_fn(params, {"g": stats["g_sampled"]}, zs_p, eps_up, True)[0]
  else:
    out = m.decode_fn(params, stats, jnp.concatenate([zs, zs_p]),
                      jnp.concatenate([zu, eps_up]), True)[0]
    x_f, x_p = out[:b], out[b:]
  logits = m.discriminate(params, stats, jnp.concatenate([x, x_f, x_p]),
                          jnp.concatenate([cond, cond, cond_p]), True)[0]
  cls = m.adversary.apply({"params": params["cls"]}, zu, train=True)
  y0 = jnp.maximum(labels, 0)
  unlabelled = {"mixture": lr.mixture_likelihood_loss, "total": lr.unlabelled_likelihood_loss}
  lkd = jnp.where(labelled, lr.gm_likelihood_loss(zs, y0, mu, lam),
                  unlabelled[m.config.loss.unlabelled_prior](zs, mu, lam))
  return {"rec": jnp.mean(lr.reconstruction_loss(x_f, x)), "lkd": jnp.mean(lkd),
          "kl": jnp.mean(lr.kl_loss(mean, logvar)),
          "d": jnp.mean(jax.nn.relu(1 - logits[:b]))
               + m.config.loss.get("hinge_fake_weight", 0.5)
               * (jnp.mean(jax.nn.relu(1 + logits[b:2 * b]))
                  + jnp.mean(jax.nn.relu(1 + logits[2 * b:]))),
          "gd": -jnp.mean(logits[b:2 * b])
                - m.config.loss.get("sampled_gan_weight", 1.0) * jnp.mean(logits[2 * b:]),
          "c": lr.masked_mean(lr.adversary_loss(cls, y0), labelled),
          "e": lr.masked_mean(lr.uniform_target_loss(cls), labelled)}


def test_each_group_gets_the_gradient_of_its_own_objective(tiny):
  _check_gradients(*tiny)


def _check_gradients(m, state, batch):
  x, labels, labelled = m._split_batch(batch)
  keys = jax.random.split(jax.random.PRNGKey(3), x.shape[0])
  grads, metrics, _ = m.gradients(state.params, state.batch_stats, x, labels, labelled, keys)
  lo = m.loss
  objectives = {  # Algorithm 1 lines 24-28
      "es": lambda t: lo.rec_weight_es * t["rec"] + lo.lkd_weight * t["lkd"],
      "eu": lambda t: t["e"] * lo.adv_weight + lo.kl_weight * t["kl"] + lo.rec_weight_eu * t["rec"],
      "cls": lambda t: t["c"],
      "g": lambda t: lo.rec_weight_g * t["rec"] + lo.gan_weight * t["gd"],
      "d": lambda t: t["d"]}

  def with_group(g, p):
    params = dict(state.params)
    params[g] = {**params["es"], "encoder": p} if g == "es" else p
    return params

  for g, obj in objectives.items():
    own = state.params[g]["encoder"] if g == "es" else state.params[g]
    want = jax.grad(lambda p: obj(_terms(m, with_group(g, p), state.batch_stats, x, labels,
                                         labelled, keys)))(own)
    got = grads[g]["encoder"] if g == "es" else grads[g]
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                           got, want)
  # The mixture moves in the GM steps only (lines 6-8), not in line 24.
  assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree_util.tree_leaves(grads["es"]["gm"]))
  t = _terms(m, state.params, state.batch_stats, x, labels, labelled, keys)
  np.testing.assert_allclose(metrics["loss_rec"], t["rec"], rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_d"], t["d"], rtol=1e-5)


def test_separate_sampled_norm_gives_x_p_its_own_batch_statistics():
  # A hidden convolution, so that the decoder has BatchNorm.
  m, state, x = _image_method(decoder_spec="f64-r(8,8,1)-c4k3-c1k3", sampled_norm="separate")
  # With the authors' other choices: a weight of 1 on each fake hinge term, x'_p of
  # uniformly drawn classes.
  m.loss.sampled_gan_weight, m.loss.hinge_fake_weight = 1.7, 1.0
  m.loss.sampled_classes = m.sampled_classes = "uniform"
  batch = {"image": x, "labels": {"label": jnp.array([0, 1, 2, -1, 4, 5])}}
  _check_gradients(m, state, batch)  # _terms decodes x'_f and x'_p as two batches
  x, labels, labelled = m._split_batch(batch)
  keys = jax.random.split(jax.random.PRNGKey(3), x.shape[0])
  _, _, new = m.gradients(state.params, state.batch_stats, x, labels, labelled, keys)
  # Each running average moved by its own batch: x'_p's codes are drawn far wider than
  # the untrained encoder's, so the two collections differ.
  zs = m.encode_s(state.params, state.batch_stats, x, True)[0]
  (mean, logvar), _ = m.encode_u(state.params, state.batch_stats, x, True)
  eps = jax.vmap(lambda k: jax.random.normal(k, (2 * m.zu_dim + m.zs_dim,)))(keys)
  zu = mean + jnp.exp(0.5 * logvar) * eps[:, :m.zu_dim]
  want_g = m.decode_fn(state.params, state.batch_stats, zs, zu, True)[1]
  jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
                         new["g"], want_g)
  gap = jax.tree_util.tree_map(lambda u, v: float(jnp.abs(u - v).max()),
                               new["g"], new["g_sampled"])
  assert max(jax.tree_util.tree_leaves(gap)) > 1e-3
  # Samples are normalised by the sampled batches' running averages, one by one.
  stats = {**state.batch_stats, "g_sampled": new["g_sampled"]}
  got = m.sample(state.params, stats, jax.random.PRNGKey(5), 6)
  first = m.sample(state.params, stats, jax.random.PRNGKey(5), 6)[:1]
  k_s, k_u = jax.random.split(jax.random.PRNGKey(5))
  mu, lam = m.mixture(state.params)
  zs_s = lr.sample_class_codes(jax.random.normal(k_s, (6, m.zs_dim)), jnp.arange(6), mu, lam)
  zu_s = jax.random.normal(k_u, (6, m.zu_dim))
  want = m.decode_fn(state.params, {"g": new["g_sampled"]}, zs_s, zu_s)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[:1], first, rtol=1e-6)
  other = m.decode_fn(state.params, {"g": state.batch_stats["g"]}, zs_s, zu_s)[0]
  assert float(jnp.abs(other - want).max()) > 1e-4
  joint_stats = {k: v for k, v in stats.items() if k != "g_sampled"}  # a 'joint' run's
  with pytest.raises(ValueError, match="trained with 'joint'"):
    m.sample(state.params, joint_stats, jax.random.PRNGKey(5), 6)


def test_class_moments_follow_the_labelled_codes_and_feed_encoded_sampling(tiny):
  m, state, batch = tiny
  rng = np.random.default_rng(1)
  z = rng.normal(size=(8, 2)).astype(np.float32)
  labels = np.array([0, 0, 2, 2, 2, 1, 0, -1], np.int32)
  labelled = np.array([1, 1, 1, 1, 1, 0, 1, 1], bool)  # class 1's only example is unlabelled
  old = {"mean": rng.normal(size=(3, 2)).astype(np.float32),
         "second": (1 + rng.random((3, 2))).astype(np.float32)}
  new = lr.update_class_moments(old, jnp.asarray(z), jnp.asarray(labels),
                                jnp.asarray(labelled & (labels >= 0)), 0.75)
  for c in (0, 2):
    zc = z[(labels == c) & labelled]
    np.testing.assert_allclose(new["mean"][c], 0.75 * old["mean"][c] + 0.25 * zc.mean(0),
                               rtol=1e-5)
    np.testing.assert_allclose(new["second"][c],
                               0.75 * old["second"][c] + 0.25 * (zc ** 2).mean(0), rtol=1e-5)
  for k in ("mean", "second"):  # a class absent from the labelled batch keeps its moments
    np.testing.assert_array_equal(new[k][1], old[k][1])
  # Over devices: the moments of the global batch, whichever device holds which example.
  sharded = jax.vmap(lambda a, b, c: lr.update_class_moments(old, a, b, c, 0.75, "d"),
                     axis_name="d")(*(jnp.asarray(v).reshape((2, 4) + v.shape[1:])
                                      for v in (z, labels, labelled & (labels >= 0))))
  for k in ("mean", "second"):
    np.testing.assert_allclose(sharded[k][0], new[k], rtol=1e-5)
    np.testing.assert_allclose(sharded[k][1], new[k], rtol=1e-5)
  # The training step updates them from the main update's codes (the GM steps' do not count).
  x, y, lab = m._split_batch(batch)
  keys = jax.random.split(jax.random.PRNGKey(3), x.shape[0])
  _, _, stats = m.gradients(state.params, state.batch_stats, x, y, lab, keys)
  zs = m.encode_s(state.params, state.batch_stats, x, True)[0]
  want = lr.update_class_moments(state.batch_stats["moments"], zs, y, lab, m.moment_momentum)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         stats["moments"], want)
  # 'mixture' samples from (mu_c, Lambda_c); 'encoded' from the moments' mean and 1 / variance.
  mu, lam = m.sampling_gaussians(state.params, stats)
  jax.tree_util.tree_map(np.testing.assert_array_equal, (mu, lam), m.mixture(state.params))
  c = _moons_config()
  c.model.class_sampling = "encoded"
  enc = lr.LabelRelevantVAE(c, axis_name=None)
  mean, prec = enc.sampling_gaussians(state.params, stats)
  np.testing.assert_allclose(mean, want["mean"], rtol=1e-6)
  np.testing.assert_allclose(1.0 / prec, want["second"] - want["mean"] ** 2, rtol=1e-4,
                             atol=1e-6)
  eps = jax.random.normal(jax.random.split(jax.random.PRNGKey(5))[0], (4, enc.zs_dim))
  zu = jax.random.normal(jax.random.split(jax.random.PRNGKey(5))[1], (4, enc.zu_dim))
  cond = jnp.array([2, 0, 1, 2])
  direct = enc.decode_fn(state.params, stats, lr.sample_class_codes(eps, cond, mean, prec), zu)[0]
  np.testing.assert_allclose(enc.sample(state.params, stats, jax.random.PRNGKey(5), 4, cond),
                             direct, rtol=1e-5, atol=1e-6)
  c.model.class_sampling = "moments"
  with pytest.raises(ValueError, match="class_sampling"):
    lr.LabelRelevantVAE(c, axis_name=None)
  c.model.class_sampling = "encoded"
  c.loss.unlabelled_prior = "uniform"
  with pytest.raises(ValueError, match="unlabelled_prior must be 'mixture'.*'total'"):
    lr.LabelRelevantVAE(c, axis_name=None)


def test_encode_sample_draws_z_u_from_its_posterior(tiny):
  m, state, batch = tiny
  x = batch["point"]
  rng = jax.random.PRNGKey(4)
  got = np.asarray(m.encode_sample(state.params, state.batch_stats, rng, x))
  (mean, logvar), _ = m.encode_u(state.params, state.batch_stats, x)
  want_u = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
  np.testing.assert_allclose(got[:, m.zs_dim:], want_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[:, :m.zs_dim],
                                np.asarray(m.encode(state.params, state.batch_stats, x))[:, :m.zs_dim])


def test_gm_scan_equals_three_sequential_gm_updates(tiny):
  m, state, batch = tiny
  x, labels, labelled = m._split_batch(batch)
  parts = (x[:12].reshape(3, 4, 2), labels[:12].reshape(3, 4), labelled[:12].reshape(3, 4))
  scanned, metrics = jax.jit(m.gm_steps)(state, *parts)
  carry = (state.params["es"], state.opt_state["es"], state.batch_stats["es"])
  for i in range(3):
    carry, last = m.gm_update(carry, (parts[0][i], parts[1][i], parts[2][i]))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         scanned.params["es"], carry[0])
  np.testing.assert_allclose(metrics["loss_gm"][-1], last["loss_gm"], rtol=1e-5)
  # Only the es group moved; unlabelled examples do not enter L_GM.
  for g in ("eu", "cls", "g", "d"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, scanned.params[g], state.params[g])
  l_all = m.gm_objective(state.params["es"], state.batch_stats["es"], x, labels, labelled)[0]
  keep = np.flatnonzero(np.asarray(labelled))
  l_sub = m.gm_objective(state.params["es"], state.batch_stats["es"], x[keep], labels[keep],
                         labelled[keep])[0]
  np.testing.assert_allclose(l_all, l_sub, rtol=1e-5)


def test_precision_learning_rate_drops_after_its_boundary():
  c = _moons_config()
  c.optim.precision_decay_steps = 1  # one iteration = n_gm + 1 = 4 updates of the group
  m = lr.LabelRelevantVAE(c, axis_name=None)
  params = {"encoder": {"w": jnp.ones(3)}, "gm": {"mu": jnp.ones((3, 2)), "v": jnp.ones((3, 2))}}
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  opt = m.tx["es"].init(params)
  steps = []
  for _ in range(6):
    upd, opt = m.tx["es"].update(grads, opt, params)
    steps.append((float(upd["gm"]["v"][0, 0]), float(upd["gm"]["mu"][0, 0])))
  v, mu = np.array(steps).T
  np.testing.assert_allclose(v[:4], mu[:4], rtol=1e-6)
  np.testing.assert_allclose(v[4:], 0.01 * mu[4:], rtol=1e-6)
  # precision_lr_scale speeds v up before the boundary only; after it, the base rate x 0.01.
  c.optim.precision_lr_scale = 100.0
  m = lr.LabelRelevantVAE(c, axis_name=None)
  opt = m.tx["es"].init(params)
  steps = []
  for _ in range(6):
    upd, opt = m.tx["es"].update(grads, opt, params)
    steps.append((float(upd["gm"]["v"][0, 0]), float(upd["gm"]["mu"][0, 0])))
  v, mu = np.array(steps).T
  np.testing.assert_allclose(v[:4], 100 * mu[:4], rtol=1e-5)
  np.testing.assert_allclose(v[4:], 0.01 * mu[4:], rtol=1e-5)


def test_log_precision_starts_where_softplus_does_and_moves_relatively():
  c = _moons_config()
  batch = {"point": jnp.zeros((8, 2)), "label": jnp.zeros((8,), jnp.int32)}
  lams = {}
  for p in ("softplus", "log"):
    c.model.precision_parameterisation = p
    m = lr.LabelRelevantVAE(c, axis_name=None)
    state = m.init(jax.random.PRNGKey(0), batch)
    lams[p] = np.asarray(m.mixture(state.params)[1])
  np.testing.assert_allclose(lams["log"], lams["softplus"], rtol=1e-6)  # both ≈ 1.0
  v = np.linspace(-2.0, 3.0, 6).reshape(3, 2)
  params = {**state.params, "es": {**state.params["es"], "gm": {
      **state.params["es"]["gm"], "v": jnp.asarray(v)}}}
  np.testing.assert_allclose(m.mixture(params)[1], np.exp(v), rtol=1e-6)
  np.testing.assert_allclose(lr.precision(jnp.asarray(v)), np.log1p(np.exp(v)), rtol=1e-6)
  # One Adam update moves v by its learning rate: Λ by that factor under exp (relative),
  # by about that amount under softplus at large Λ (absolute).
  step = 5e-4
  big = jnp.asarray([50.0])
  np.testing.assert_allclose(lr.precision(big + step, "log") / lr.precision(big, "log"),
                             np.exp(step), rtol=1e-6)
  np.testing.assert_allclose(lr.precision(big + step) - lr.precision(big), step, rtol=1e-3)
  c.model.precision_parameterisation = "sqrt"
  with pytest.raises(ValueError, match="precision_parameterisation must be one of"):
    lr.LabelRelevantVAE(c, axis_name=None)


def test_a_tiny_run_on_three_moons_through_djax_train(tmp_path):
  c = _moons_config()
  c.num_devices = 2
  c.train.batch_size = 16  # 2 devices x (3 GM batches + 1) x 2 points
  c.train.steps = 3
  c.train.log_every = 1
  c.train.save_every = 3
  c.data.labelled_fraction = 0.5
  c.eval.num_generated = 300
  out = train.train_and_evaluate(c, str(tmp_path / "run"))
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["loss_gm"])
  res = out["eval"]["results"]["class_conditional_points"]
  assert set(res["per_class"]) == {"0", "1", "2"}
  assert res["num_generated"] == 300
  assert res["nearest_own_moon_data"] > 0.95  # the data's own points are nearest their moon
  m = lr.LabelRelevantVAE(c, axis_name=None)
  like = train.create_state(m, c, pipeline.get_dataset(
      c.data, "train", batch_size=16, num_devices=1, seed=0))
  pts = m.sample(like.params, like.batch_stats, jax.random.PRNGKey(0), 5, condition=2)
  assert pts.shape == (5, 2)


def test_toy_point_geometry():
  d = toy_points.moon_distances(np.array([[-2.2, 1.0], [1.0, 0.0], [2.2, -0.5], [3.2, -1.0]]))
  np.testing.assert_allclose(d[0, 0], 0.0, atol=1e-12)
  np.testing.assert_allclose(d[1, 1], 0.0, atol=1e-12)  # the middle circle's right end
  np.testing.assert_allclose(d[2, 2], np.hypot(1.0, 0.5))  # below: the nearer end point
  np.testing.assert_allclose(d[3, 2], 1.0)
  img = toy_points.scatter_image([(np.zeros((3, 2)), np.arange(3))] * 2, size=100)
  assert img.dtype == np.uint8 and img.shape[1] == 200


def _image_method(size=8, **model):
  """A tiny image model (8x8x1) built from the mnist config; ``model`` overrides."""
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "label_relevant_mnist.py")
  spec = importlib.util.spec_from_file_location("label_relevant_mnist_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.zs_dim, c.model.zu_dim = 3, 4
  c.model.encoder_s_spec = c.model.encoder_u_spec = "c4k3s2-f8-f"
  c.model.decoder_spec = f"f{size * size}-r({size},{size},1)-c1k3"
  c.model.discriminator_spec = "c4k3s2-f8"
  c.model.adversary_spec = "f8-f"
  c.model.update(model)
  m = lr.LabelRelevantVAE(c, axis_name=None)
  x = jax.random.uniform(jax.random.PRNGKey(1), (6, size, size, 1), minval=-1, maxval=1)
  batch = {"image": x, "labels": {"label": jnp.arange(6) % 10}}
  return m, m.init(jax.random.PRNGKey(0), batch), x


def test_inpainting_masks_cover_the_named_patch():
  r = np.asarray(lr.inpainting_mask("right_half", 4, 6))[..., 0]
  np.testing.assert_array_equal(r, np.tile([0, 0, 0, 1, 1, 1], (4, 1)))
  b = np.asarray(lr.inpainting_mask("bottom_half", 4, 6))[..., 0]
  np.testing.assert_array_equal(b, np.repeat([[0], [0], [1], [1]], 6, axis=1))
  c = np.asarray(lr.inpainting_mask("centre", 8, 8))[..., 0]
  assert c.sum() == 16 and c[2:6, 2:6].all()
  with pytest.raises(ValueError, match="right_half"):
    lr.inpainting_mask("eyes", 8, 8)


def test_inpainting_keeps_the_known_part_and_fills_the_patch_from_the_corrupted_code():
  m, state, x = _image_method()
  p, s = state.params, state.batch_stats
  mask = lr.inpainting_mask("right_half", 8, 8)
  out = m.inpaint(p, s, x, mask)
  known = np.asarray(mask[..., 0]) == 0
  # Known pixels are the original's, exactly (not its reconstruction).
  np.testing.assert_array_equal(np.asarray(out["inpainted"])[:, known], np.asarray(x)[:, known])
  # The encoders see the corrupted image: the patch holds the fill (0, the middle of
  # [-1, 1]) and the known pixels stay.
  np.testing.assert_array_equal(np.asarray(out["corrupted"])[:, ~known], 0.0)
  np.testing.assert_array_equal(np.asarray(out["corrupted"])[:, known], np.asarray(x)[:, known])
  # The patch is the decoder's output on (ẑ_s, μ_u) of the corrupted image, no label given.
  corrupted = np.where(known[None, :, :, None], np.asarray(x), 0.0)
  want = m.decode(p, s, m.encode(p, s, jnp.asarray(corrupted)))
  np.testing.assert_allclose(np.asarray(out["inpainted"])[:, ~known],
                             np.asarray(want)[:, ~known], rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(out["inpainted"])[:, ~known], np.asarray(x)[:, ~known])
  # Nothing of the hidden pixels reaches the result.
  x2 = jnp.where(jnp.asarray(known)[None, :, :, None], x, -x + 0.3)
  out2 = m.inpaint(p, s, x2, mask)
  np.testing.assert_array_equal(np.asarray(out2["inpainted"]), np.asarray(out["inpainted"]))
  # ... whereas the original's reconstruction does depend on them.
  rec = m.decode(p, s, m.encode(p, s, x))
  assert not np.allclose(np.asarray(rec)[:, ~known], np.asarray(want)[:, ~known])


def test_eval_images_show_masked_inpainted_original_per_pattern():
  m, state, x = _image_method()
  grids = m.eval_images(state.params, state.batch_stats, x, n=4)
  for pattern in lr.INPAINT_PATTERNS:
    g = np.asarray(grids[f"inpaint_{pattern}"])
    assert g.shape == (4, 3, 8, 8, 1)
    r = m.inpaint(state.params, state.batch_stats, x[:4], lr.inpainting_mask(pattern, 8, 8))
    np.testing.assert_allclose(g[:, 0], r["corrupted"], atol=1e-6)
    np.testing.assert_allclose(g[:, 1], r["inpainted"], atol=1e-6)
    np.testing.assert_array_equal(g[:, 2], np.asarray(x[:4]))


def test_moons_code_zs1_is_the_code_weights_with_one_zs_axis():
  code, one = _moons_config("code").to_dict(), _moons_config("code_zs1").to_dict()
  assert one["model"]["zs_dim"] == 1 and code["model"]["zs_dim"] == 2
  assert _moons_config().loss.lkd_weight != one["loss"]["lkd_weight"]
  one["model"]["zs_dim"] = code["model"]["zs_dim"]
  assert one == code  # nothing else differs
  with pytest.raises(ValueError, match="code_zs1"):
    _moons_config("zs1")
