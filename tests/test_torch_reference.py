"""The PyTorch reference of benchmarks/torch_reference.py computes what djax computes.

(a) every network group has as many parameters (tensors and scalars) as djax's, for the
    paper config and ':small' (flax shapes by jax.eval_shape: no weights are drawn);
(b) djax's weights copied into the PyTorch networks give the same outputs, in eval mode
    (BatchNorm running statistics, randomised so that the norms do something) and in train
    mode inside the mixing step: same losses and same gradients for every parameter of the
    three groups, which also checks the step's wiring (the discriminator learns from its own
    loss only, on x3 detached).
(c) the VAE family (VAE / β-VAE): same parameter counts (paper, ':small', 'tiny'); with
    djax's weights copied in, the same encoder (μ, log σ²) and generator outputs, and
    at the same noise the same loss terms and gradients in the train step.

Skipped without torch (CI installs the CPU wheel when it can; ``pip install '.[bench]'``).
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference as tr  # noqa: E402
from conftest import tiny_mixing_config  # noqa: E402
from djax import methods  # noqa: E402
from djax.methods import base, mixing  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _config(name: str, variant: str | None = None):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def count_params(tree) -> int:
  """Scalars in a tree of arrays or of jax.eval_shape's ShapeDtypeStructs."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _flax_groups(params):
  return {"encoder": params["ae"]["encoder"], "decoder": params["ae"]["decoder"],
          "discriminator": params["dsc"], "classifier": params["cls"]}


@pytest.mark.parametrize("variant", [None, "small"])
def test_parameter_counts_match_djax(variant):
  config = _config("mixing_sprites", variant)
  method = methods.create(config, axis_name=None)
  s = config.data.image_size
  x = jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"image": x, "image2": x})
  with torch.device("meta"):  # shapes only: the paper config's 55M parameters are not drawn
    ref = tr.TorchMixing(config, device="meta", init=False)
  for name, flax_params in _flax_groups(state.params).items():
    net = ref.nets[name]
    assert count_params(flax_params) == tr.count_params(net), name
    assert len(jax.tree_util.tree_leaves(flax_params)) == len(list(net.parameters())), name
  # The groups the optimisers update are the same too.
  assert (sum(tr.count_params(n) for n in ref.groups["ae"])
          == count_params(state.params["ae"]))


def test_jacobian_teacher_parameter_counts_match_djax():
  config = _config("jacobian_mnist", "small")
  method = methods.create(config, axis_name=None)
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"image": x, "image2": x})
  ref = tr.TorchJacobianTeacher(config)
  counts = ref.group_param_counts()
  for name in ("encoder", "decoder"):
    assert counts[name] == count_params(state.params["ae"][name]), name


# ----------------------------------------------------------------------------- same outputs

def _random_variables(method, config, seed):
  """djax's variables for ``method``, drawn with numpy at the shapes of ``jax.eval_shape``
  (no compilation): fan-in scaled kernels, and non-trivial norm scales/offsets, biases and
  running statistics (flax initialises those to 1, 0, 0, 1, which would hide a wrong copy)."""
  s, c = config.data.image_size, 3
  x = jax.ShapeDtypeStruct((2, s, s, c), jnp.float32)
  shapes = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"image": x, "image2": x})
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    shape = leaf.shape
    if "kernel" in name:
      values = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
    elif "scale" in name or "var" in name:
      values = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      values = rng.normal(0, 0.2, shape)
    return jnp.asarray(values, jnp.float32)

  draw_all = lambda tree: jax.tree_util.tree_map_with_path(draw, tree)
  return draw_all(shapes.params), draw_all(shapes.batch_stats)


@pytest.fixture(scope="module")
def small_pair():
  """The ':small' networks' variables in djax, randomised."""
  config = _config("mixing_sprites", "small")
  method = mixing.Mixing(config, axis_name=None)
  params, stats = _random_variables(method, config, 1)
  return config, method, params, stats


def _torch_copy(config, params, stats):
  """A fresh PyTorch reference holding djax's variables (each test gets its own: a train
  step changes the weights and running statistics)."""
  ref = tr.TorchMixing(config, seed=0, init=False)
  flax_params = _flax_groups(params)
  flax_stats = {"encoder": stats["encoder"], "decoder": stats["decoder"],
                "discriminator": stats["dsc"], "classifier": stats["cls"]}
  for name, net in ref.nets.items():
    tr.load_flax_variables(net, flax_params[name], flax_stats[name])
  return ref


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def test_same_outputs_in_eval_mode(small_pair):
  config, method, params, stats = small_pair
  ref = _torch_copy(config, params, stats)
  rng = np.random.default_rng(3)
  s = config.data.image_size
  x = rng.uniform(-1, 1, (3, s, s, 3)).astype(np.float32)
  f = rng.normal(0, 1, (3, method.code_size)).astype(np.float32)
  cases = {  # network: (djax module, params, stats, input)
      "encoder": (method.encoder, params["ae"]["encoder"], stats["encoder"], x),
      "decoder": (method.decoder, params["ae"]["decoder"], stats["decoder"], f),
      "discriminator": (method.discriminator, params["dsc"], stats["dsc"], x),
      "classifier": (method.classifier, params["cls"], stats["cls"],
                     np.concatenate([x, x[::-1], -x], -1)),
  }
  for name, (net, p, st, inp) in cases.items():
    apply = jax.jit(lambda p, st, inp, net=net: base.apply_net(net, p, st, inp, False)[0])
    args = (p, st, jnp.asarray(inp))
    want = np.asarray(apply.lower(*args).compile(_FAST_COMPILE)(*args))
    torch_net = ref.nets[name].eval()
    with torch.no_grad():
      got = torch_net(_nchw(inp) if inp.ndim == 4 else torch.from_numpy(inp)).numpy()
    if got.ndim == 4:
      got = got.transpose(0, 2, 3, 1)
    assert got.shape == want.shape, name
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-4, err_msg=name)


def test_same_losses_and_gradients_in_the_mixing_step():
  # conftest's tiny config (16x16, a few channels: seconds to compile) has every layer kind
  # of ':small' — SAME convs, the VALID 1x1 -> 4x4 and SAME stride-2 transposed convs, -inf
  # padded max pooling, a dense after a flatten, instance and batch norms.
  config = tiny_mixing_config(batch_size=4)
  method = mixing.Mixing(config, axis_name=None)
  params, stats = _random_variables(method, config, 6)
  ref = _torch_copy(config, params, stats)
  rng = np.random.default_rng(4)
  s = config.data.image_size
  x1, x2 = (rng.uniform(-1, 1, (4, s, s, 3)).astype(np.float32) for _ in range(2))
  keys = base.example_keys(jax.random.PRNGKey(5), 4, None)
  mask = np.array(mixing.sample_masks(keys, method.n_chunks))

  # Compiled without LLVM's expensive passes: half the compile time, the same arithmetic.
  args = (params, stats, x1, x2, mask)
  grads, losses, new_stats = jax.jit(method.gradients).lower(*args).compile(_FAST_COMPILE)(*args)

  # torch: its whole train step (it leaves the gradients it applied in .grad).
  metrics = ref.train_step(_nchw(x1), _nchw(x2), torch.from_numpy(mask))
  for k in ("loss_mix", "loss_gen", "loss_cls", "loss_dsc"):
    np.testing.assert_allclose(float(metrics[k]), float(losses[k]), rtol=1e-4, err_msg=k)

  # The gradients, laid out as PyTorch parameters by the same copy as the weights.
  want = tr.TorchMixing(config, init=False)
  grads = _flax_groups(grads)
  for name, net in want.nets.items():
    tr.load_flax_variables(net, grads[name])
    for (pname, g_want), (_, p) in zip(net.named_parameters(),
                                       ref.nets[name].named_parameters()):
      assert p.grad is not None, f"{name}.{pname} got no gradient"
      g_want = g_want.detach().numpy()
      scale = float(np.abs(g_want).max()) + 1e-6
      np.testing.assert_allclose(p.grad.numpy(), g_want, atol=1e-3 * scale, rtol=1e-3,
                                 err_msg=f"{name}.{pname}")

  # BatchNorm running statistics after the step: the same updates in the same order (the
  # discriminator's from its own loss only; the generator-side call's are discarded). The
  # means agree; PyTorch blends in the unbiased batch variance, flax the biased one, so
  # the variances differ by a fraction of (n / (n - 1) - 1) (n = batch x pixels), < 1% here.
  new_stats = {"encoder": new_stats["encoder"], "decoder": new_stats["decoder"],
               "discriminator": new_stats["dsc"], "classifier": new_stats["cls"]}
  checked = 0
  for name, net in ref.nets.items():
    for child, mod in net.named_children():
      if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
        (flax_bn,) = new_stats[name][child].values()
        np.testing.assert_allclose(mod.running_mean.numpy(), flax_bn["mean"], rtol=1e-4,
                                   atol=1e-5, err_msg=f"{name}.{child}")
        np.testing.assert_allclose(mod.running_var.numpy(), flax_bn["var"], rtol=1e-2,
                                   err_msg=f"{name}.{child}")
        checked += 1
  assert checked >= 4


def test_measure_torch_runs_a_tiny_config():
  config = tiny_mixing_config(batch_size=4)
  result = tr.measure_torch(config, steps=2, warmup=0)
  assert result["framework"] == "torch" and result["batch_size"] == 4
  assert result["ms_per_step_median"] > 0 and result["threads"] == torch.get_num_threads()
  assert result["params"]["decoder"] > 0


# ----------------------------------------------------------------------------- the VAE family

def _vae_config(variant):
  return _config("reference_based_mnist", variant)


@pytest.mark.parametrize("variant", ["beta_vae", "small,beta_vae", "small,vae,tiny"])
def test_vae_family_parameter_counts_match_djax(variant):
  config = _vae_config(variant)
  method = methods.create(config, axis_name=None)
  s = config.data.image_size
  x = jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"image": x})
  with torch.device("meta"):
    ref = tr.TorchVaeFamily(config, device="meta", init=False)
  for name, net in ref.nets.items():
    flax_params = state.params["vae"][name]
    assert count_params(flax_params) == tr.count_params(net), name
    assert len(jax.tree_util.tree_leaves(flax_params)) == len(list(net.parameters())), name
  assert ref.group_param_counts()["encoder"] == count_params(state.params["vae"]["encoder"])


@pytest.mark.parametrize("objective", ["beta_tcvae", "dip_vae_i", "dip_vae_ii"])
def test_vae_family_other_objectives_say_not_implemented(objective):
  with pytest.raises(NotImplementedError, match=objective):
    tr.TorchVaeFamily(_vae_config(f"small,{objective}"), init=False)


def test_vae_family_same_outputs_loss_and_gradients():
  # 'tiny' networks (8 channels, 32x32: seconds to compile) have every layer kind of
  # ':small'; β-VAE with β != 1 so that the β weighting is checked too.
  config = _vae_config("tiny,beta_vae,beta=3")
  method = methods.create(config, axis_name=None)
  b, s = 4, config.data.image_size
  x_shape = jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32)
  shapes = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"image": x_shape})
  rng = np.random.default_rng(7)

  def draw(path, leaf):
    if "kernel" in jax.tree_util.keystr(path[-1:]):
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape),
                         jnp.float32)
    return jnp.asarray(rng.normal(0, 0.2, leaf.shape), jnp.float32)  # non-zero biases

  params = jax.tree_util.tree_map_with_path(draw, shapes.params["vae"])
  x = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
  eps = rng.normal(0, 1, (b, method.latent_dim)).astype(np.float32)
  code = rng.normal(0, 1, (b, method.latent_dim)).astype(np.float32)

  def djax_side(p, x, eps, code):
    mu, logvar = method.encoder.apply({"params": p["encoder"]}, x)
    image = method.generator.apply({"params": p["generator"]}, code)
    grads, terms = jax.grad(method.objective, has_aux=True)(p, x, eps)
    return mu, logvar, image, grads, terms

  args = (params, jnp.asarray(x), jnp.asarray(eps), jnp.asarray(code))
  mu, logvar, image, grads, terms = jax.jit(djax_side).lower(*args).compile(_FAST_COMPILE)(*args)

  ref = tr.TorchVaeFamily(config, init=False)
  for name, net in ref.nets.items():
    tr.load_karras_variables(net, params[name])
  close = lambda got, want, msg, tol=1e-4: np.testing.assert_allclose(
      got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())), err_msg=msg)
  with torch.no_grad():
    t_mu, t_logvar = ref.encoder(_nchw(x))
    t_image = ref.generator(torch.from_numpy(code)).numpy().transpose(0, 2, 3, 1)
  close(t_mu.numpy(), mu, "mu")
  close(t_logvar.numpy(), logvar, "logvar")
  assert t_image.shape == image.shape
  close(t_image, image, "generator")

  # The whole train step at the same noise: same loss terms, and it applies the gradients
  # djax computes (left in .grad), laid out by the same copy as the weights.
  metrics = ref.train_step(_nchw(x), torch.from_numpy(eps))
  for k in ("loss_nll", "loss_kl", "loss_total"):
    np.testing.assert_allclose(float(metrics[k]), float(terms[k]), rtol=1e-4, err_msg=k)
  np.testing.assert_allclose(float(terms["loss_total"]),
                             float(terms["loss_nll"]) + 3.0 * float(terms["loss_kl"]), rtol=1e-5)
  want = tr.TorchVaeFamily(config, init=False)
  for name, net in want.nets.items():
    tr.load_karras_variables(net, grads[name])
    for (pname, g_want), (_, p) in zip(net.named_parameters(),
                                       ref.nets[name].named_parameters()):
      assert p.grad is not None, f"{name}.{pname} got no gradient"
      close(p.grad.numpy(), g_want.detach().numpy(), f"{name}.{pname}", 1e-3)


def test_measure_torch_runs_the_vae_family():
  config = _vae_config("tiny,beta_vae")
  config.model.use_reference_images = True  # the 'reference' pairing's image_ref is read
  result = tr.measure_torch(config, steps=2, warmup=0)
  assert result["method"] == "vae_family" and result["batch_size"] == 2 * 8
  assert result["params"]["generator"] > 0
