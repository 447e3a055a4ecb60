"""Hu et al. 2018 runs end to end at a tiny size: the retrieval curve during training, the
untrained row of eval.json, the GAN-balancing options, Table 2's rows in one command and
the MNIST / CelebA configs."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_experiment, mock_tfds_data, tiny_mixing_config
from djax import evaluation, methods, report, train
from djax.data import pipeline
from djax.methods import base


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_tracked_map_curve_and_untrained_row(tmp_path):
  c = tiny_mixing_config(steps=4)
  c.eval.untrained = True
  c.num_devices = 1
  c.eval.metrics = ("chunk_retrieval_map",)
  c.eval.track_every = 2
  w = str(tmp_path / "run")
  summary = train.train_and_evaluate(c, w)
  tracked = {r["step"]: r["eval/nn_map/average"] for r in _rows(w) if "eval/nn_map/average" in r}
  assert sorted(tracked) == [0, 2, 4]

  # The untrained row is the same evaluation on the initial parameters, recomputed here.
  method = methods.create(c)
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=c.seed, pairing=c.data.pairing)
  state0 = train.create_state(method, c, data)
  source, _ = pipeline.load_split(c.data, c.eval.split)
  want = evaluation.headline(evaluation.evaluate_representation(
      method, state0.params, state0.batch_stats, c, source))
  with open(os.path.join(w, "eval.json")) as f:
    ev = json.load(f)
  assert ev["untrained"]["step"] == 0
  for k, v in want.items():
    np.testing.assert_allclose(ev["untrained"]["headline"][k], v, rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(tracked[0], want["nn_map/average"], rtol=1e-5)
  # The last tracked point is the final evaluation's number (same split, same state).
  np.testing.assert_allclose(tracked[4], summary["eval"]["headline"]["nn_map/average"],
                             rtol=1e-5)
  assert tracked[4] != tracked[0]  # training moved the code

  # djax.report: the curve is a panel of curves.png, the untrained row a column of its own.
  md, _, _ = report.make_report([w], str(tmp_path / "report"))
  assert "run untrained" in md
  assert "eval/nn_map/average" in report.load_curves(w)
  assert os.path.exists(tmp_path / "report" / "curves.png")


def test_tracking_a_subset_and_bad_tracking_config(tmp_path):
  c = tiny_mixing_config(steps=2)
  c.num_devices = 1
  c.eval.at_end = False
  c.eval.metrics = ("chunk_retrieval_map",)
  c.eval.track_every = 2
  c.eval.track_examples = 40
  w = str(tmp_path / "sub")
  train.train_and_evaluate(c, w)
  assert [r["step"] for r in _rows(w) if "eval/nn_map/average" in r] == [0, 2]
  assert not os.path.exists(os.path.join(w, train.UNTRAINED))  # at_end=False: no eval at all

  c.eval.metrics = ()
  c.eval.track_metrics = ()
  with pytest.raises(ValueError, match="nothing to track"):
    train.train_and_evaluate(c, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")  # refused before any work
  c.eval.track_metrics = ("swap_successes",)
  with pytest.raises(ValueError, match="unknown metric"):
    train.train_and_evaluate(c, str(tmp_path / "bad"))


# ----------------------------------------------------------------------------- GAN balancing

def _tiny_method(**overrides):
  c = tiny_mixing_config()
  for path, v in overrides.items():
    block, key = path.split(".")
    c[block][key] = v
  return c, methods.create(c, axis_name=None)


def _tiny_batch(c):
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=0, pairing="random")
  return jax.tree_util.tree_map(lambda x: x[0], data.batch(0))


def test_r1_penalty_against_direct_computations():
  from djax.methods import mixing
  from djax.nn.spec import SpecNet
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(5, 4, 4, 3)).astype(np.float32))
  # A linear discriminator D(x) = w·x + b: ∇_x D = w for every example, R1 = ½ |w|².
  lin = SpecNet("f", out_features=1, norm="none")
  p = lin.init(jax.random.PRNGKey(0), x, train=False)["params"]
  w = np.asarray(p["dense0"]["kernel"])
  got = mixing.r1_penalty(lambda v: lin.apply({"params": p}, v, train=False), x)
  np.testing.assert_allclose(got, 0.5 * np.sum(w ** 2), rtol=1e-5)
  # A nonlinear one without batch coupling: the mean over examples of each one's own ½|∇D|².
  net = SpecNet("c4k3s2-f", out_features=1, norm="none")
  q = net.init(jax.random.PRNGKey(1), x, train=False)["params"]
  d1 = lambda v: net.apply({"params": q}, v[None], train=False)[0, 0]
  per = [0.5 * float(jnp.sum(jax.grad(d1)(xi) ** 2)) for xi in x]
  np.testing.assert_allclose(mixing.r1_penalty(lambda v: net.apply({"params": q}, v,
                                                                   train=False), x),
                             np.mean(per), rtol=1e-5)


def test_r1_reaches_only_the_discriminator_with_its_own_gradient():
  from djax.methods import mixing
  zero = {f"loss.{k}": 0.0 for k in ("lambda_mix", "lambda_gan", "lambda_cls", "lambda_rec")}
  c0, m0 = _tiny_method(**zero)
  c1, m1 = _tiny_method(**zero, **{"loss.r1_gamma": 10.0})
  batch = _tiny_batch(c0)
  state = m0.init(jax.random.PRNGKey(0), batch)
  mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, (8, 4)).astype(np.float32))
  args = (state.params, state.batch_stats, batch["image"], batch["image2"], mask)
  g0, met0 = jax.jit(m0.gradients)(*args)[:2]
  g1, met1 = jax.jit(m1.gradients)(*args)[:2]
  assert "loss_r1" in met1 and "loss_r1" not in met0
  for group in ("ae", "cls"):  # the penalty is the discriminator's alone
    for a, b in zip(jax.tree_util.tree_leaves(g0[group]), jax.tree_util.tree_leaves(g1[group])):
      np.testing.assert_array_equal(a, b)
  stats = state.batch_stats["dsc"]
  dsc = lambda p, x: base.apply_net(m0.discriminator, p, stats, x, True)[0]
  r1, want = jax.value_and_grad(lambda p: mixing.r1_penalty(lambda x: dsc(p, x),
                                                             batch["image"]))(state.params["dsc"])
  np.testing.assert_allclose(met1["loss_r1"], r1, rtol=1e-5)
  diff = jax.tree_util.tree_map(lambda a, b: (a - b) / 10.0, g1["dsc"], g0["dsc"])
  chex.assert_trees_all_close(diff, want, rtol=2e-3, atol=1e-6)
  assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree_util.tree_leaves(want)) > 0


def test_spectral_norm_discriminator_is_scale_invariant_and_trains():
  c, m = _tiny_method(**{"model.discriminator_spectral_norm": True})
  batch = _tiny_batch(c)
  state = m.init(jax.random.PRNGKey(0), batch)
  assert "sn" in state.batch_stats["dsc"]["conv0"]  # its power-iteration vector
  p, s = state.params["dsc"], state.batch_stats["dsc"]
  d = lambda p: base.apply_net(m.discriminator, p, s, batch["image"], False)[0]
  scaled = jax.tree_util.tree_map_with_path(
      lambda path, v: 3.0 * v if "kernel" in jax.tree_util.keystr(path) else v, p)
  # W / σ(W) does not change when W is scaled: a plain discriminator's logits would.
  np.testing.assert_allclose(d(scaled), d(p), rtol=1e-4, atol=1e-5)
  new, metrics = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics["loss_dsc"]))
  u0, u1 = (np.asarray(t.batch_stats["dsc"]["conv0"]["sn"]["u"]) for t in (state, new))
  assert not np.allclose(u0, u1)  # one power iteration per training call


def test_discriminator_learning_rate_is_its_own():
  c, m = _tiny_method()
  c.optim.dsc.learning_rate = 0.0
  m = methods.create(c, axis_name=None)
  batch = _tiny_batch(c)
  state = m.init(jax.random.PRNGKey(0), batch)
  new = jax.jit(m.train_step)(state, batch, jax.random.PRNGKey(1))[0]
  moved = lambda g: any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(state.params[g]), jax.tree_util.tree_leaves(new.params[g])))
  assert not moved("dsc") and moved("ae") and moved("cls")


# ----------------------------------------------------------------------------- Table 2

def test_table2_numbers_agree_with_paper_numbers_json():
  from djax.methods import mixing
  with open(report.PAPER_NUMBERS) as f:
    rows = json.load(f)["hu2018_table2"]["rows"]
  assert set(mixing.TABLE2) == set(rows)
  for label, values in mixing.TABLE2.items():
    want = [rows[label][f"nn_map/{k}"] for k in mixing.TABLE2_FACTORS + ("average",)]
    np.testing.assert_allclose(values, want, err_msg=label)


def test_table2_rows_through_one_command(tmp_path, monkeypatch):
  from djax import stages
  from djax.methods import mixing
  module = load_experiment("mixing_sprites_ablation")
  assert set(module.get_config().variants) == {"ae", "ae_c_g", "mix", "mix_c", "mix_g",
                                                "mix_c_g"}
  c = tiny_mixing_config(steps=2)
  c.eval.untrained = True
  c.num_devices = 1
  c.eval.metrics = ("chunk_retrieval_map",)
  c.variants = module.table2_variants(c)
  # Which terms each row turns on, as the variant's config reads.
  on = {}
  for name in c.variants:
    lam = stages.variant_config(c, name).loss
    on[name] = tuple(k for k in ("lambda_mix", "lambda_rec", "lambda_gan", "lambda_cls")
                     if lam[k])
  assert on == {"ae": ("lambda_rec",), "ae_c_g": ("lambda_rec", "lambda_gan", "lambda_cls"),
                "mix": ("lambda_mix",), "mix_c": ("lambda_mix", "lambda_cls"),
                "mix_g": ("lambda_mix", "lambda_gan"),
                "mix_c_g": ("lambda_mix", "lambda_gan", "lambda_cls")}
  assert stages.variant_config(c, "ae").loss.lambda_rec == c.loss.lambda_mix

  # Two of the rows trained through the one command (each row is the same code path).
  monkeypatch.setattr(stages, "measure_step", lambda *a, **k: {"seconds_per_step": 0.5})
  c.variants = {k: c.variants[k] for k in ("ae", "mix_c_g")}
  w = str(tmp_path)
  out = stages.main(c, w)
  assert list(out["results"]) == ["ae", "mix_c_g"]
  with open(os.path.join(w, "ae", "eval.json")) as f:
    ae = json.load(f)
  # AE: one chunk of the whole code's size, scored as one chunk; its untrained row is there.
  assert np.asarray(ae["results"]["chunk_retrieval_map"]["map"]).shape == (1, 2)
  assert "nn_map/average" in ae["untrained"]["headline"]
  with open(os.path.join(w, "variants.md")) as f:
    md = f.read()
  row = next(line for line in md.splitlines() if line.startswith("| MIX + C + G |"))
  got = out["results"]["mix_c_g"]["rows"][-1]["eval"]
  assert f"{got['headline']['nn_map/average']:.3f} (0.70)" in row  # beside the paper's
  m = out["results"]["mix_c_g"]["rows"][-1]["metrics"]
  assert (f"| {got['untrained']['headline']['nn_map/average']:.3f} | 0.500 | 2 | "
          f"{m['d_real']:.2f} / {m['d_fake']:.2f} | {m['mask_accuracy']:.2f} |") in row
  assert "| AE |" in md

  # Every row's label, from results shaped like run_variants' (no training needed).
  fake = {n: {"rows": [{"eval": {"step": 9, "headline": {"nn_map/average": 0.5}}}]}
          for n in module.table2_variants(c)}
  md = mixing.table2(c, fake)
  for label in ("AE", "AE+C+G", "MIX", "MIX + C", "MIX + G", "MIX + C + G"):
    assert f"| {label} |" in md


def test_balance_rows_each_turn_on_one_option():
  from djax import stages
  module = load_experiment("mixing_sprites_balance")
  c = module.get_config()
  base = stages.variant_config(c, "base").to_dict()
  assert base == {k: v for k, v in c.to_dict().items() if k != "variants"}
  changed = {}
  for name in c.variants:
    v = stages.variant_config(c, name)
    changed[name] = (v.model.discriminator_spectral_norm, v.loss.r1_gamma,
                     v.optim.dsc.learning_rate, v.optim.ae.learning_rate)
  assert changed == {"base": (False, 0.0, 2e-4, 2e-4), "spectral_norm": (True, 0.0, 2e-4, 2e-4),
                     "r1": (False, 10.0, 2e-4, 2e-4), "slow_d": (False, 0.0, 5e-5, 2e-4)}
  assert c.train.steps == load_experiment("mixing_sprites").get_config("small").train.steps


# ----------------------------------------------------------------------------- MNIST, CelebA

def test_mnist_config_trains_on_mnist_5k(tmp_path):
  c = load_experiment("mixing_mnist").get_config("small")
  assert c.model.chunk_size == 8 and c.model.n_chunks == 8 and c.data.name == "mnist_5k"
  full = load_experiment("mixing_mnist").get_config()
  assert full.model.decoder_spec == "d512k4-d256k4s2-d128k4s2-d1k2s2"  # Table 1, 1 channel
  c.num_devices = 1
  c.progress_bar = False
  c.train.steps = 2
  c.train.batch_size = 8
  c.train.log_every = 1
  c.eval.track_every = 2
  c.eval.track_examples = 100
  c.eval.num_grid_images = 2
  w = str(tmp_path)
  summary = train.train_and_evaluate(c, w)
  ev = summary["eval"]
  assert np.asarray(ev["results"]["chunk_retrieval_map"]["map"]).shape == (8, 1)
  assert 0 < ev["headline"]["nn_map/label"] <= 1 and "untrained" in ev
  assert [r["step"] for r in _rows(w) if "eval/nn_map/label" in r] == [0, 2]
  assert os.path.exists(os.path.join(w, "samples", "transfer_chunk7_0000002.png"))


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds mock data (48 examples a split), read as djax reads."""
  with mock_tfds_data(monkeypatch, 48):
    yield


def test_celeba_config_scores_table3_on_mock_data(tmp_path, mock_tfds):
  module = load_experiment("mixing_celeba")
  assert module.get_config().loss.lambda_mix == 30.0
  c = module.get_config("tiny")
  summary = train.train_and_evaluate(c, str(tmp_path))
  acc = summary["eval"]["results"]["linear_probe"]["accuracy"]
  assert set(acc) == set(module.TABLE3_ATTRIBUTES)
  assert all(0.0 <= v <= 1.0 for v in acc.values())
