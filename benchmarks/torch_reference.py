"""PyTorch reference of djax's networks and train steps, to time djax against (issue 7).

    python -m benchmarks.train_step --config=experiments/mixing_sprites.py:small  # both sides

Not a test and not part of djax: a PyTorch (eager, CPU or CUDA) implementation of the same
computation, written the way a PyTorch user would (NCHW tensors, ``torch.optim.Adam``,
``loss.backward()``), so that ``djax_ms / torch_ms`` says how djax's compiled step compares.

What is built from the same source as djax, so that the two sides cannot drift:

* networks: the config's Table-1 spec strings parsed by :func:`djax.nn.spec.parse_spec`,
  with djax's rules (``SpecNet``): conv/pool SAME padding as XLA pads it (asymmetric where
  the total is odd: ``pad_lo = total // 2``), transposed convs padded as
  ``lax.conv_transpose`` pads them (:func:`djax.nn.conv_transpose._transpose_padding`,
  turned into PyTorch's ``padding`` / ``output_padding``), no bias in front of a
  batch/instance norm (``djax.nn.spec._CANCELS_BIAS``), norm then leaky ReLU (djax's slope)
  after every hidden conv/deconv, activation only after hidden dense layers, nothing after
  the last layer; the norms' momentum and epsilons are read from the flax classes;
* parameters: the same shapes and counts (``tests/test_torch_reference.py`` checks every
  network group, and that flax weights copied in by :func:`load_flax_variables` give the
  same outputs), LeCun-normal (truncated) kernels and zero biases as flax initialises them;
* the mixing step (``djax.methods.mixing``): a mask per example (or one per batch), x1, x2
  encoded, mixed, decoded to x3, re-encoded, unmixed against f1, decoded to x4; L_M (squared
  L2 per image, batch mean), the GAN losses (non-saturating or minimax), the classifier's
  cross-entropy summed over chunks; the ae and cls groups' gradients from λ-weighted total,
  the discriminator's from its own loss on (x1, x3 detached), all three computed at the old
  parameters and then applied (eq. 4's simultaneous update), each group with its own Adam(W)
  (config lr, betas, staircase decay, clipping). As in djax the discriminator's BatchNorm
  statistics of the generator-side call are thrown away (momentum 0 during that call) and
  the discriminator's weights get no gradient from the generator's loss.
* Jacobian supervision: the stage-0 teacher (MNIST MLP, reconstruction MSE, encoder output
  BatchNorm without affine) only; students need a trained teacher checkpoint and are not
  implemented here (``measure_torch`` raises ``NotImplementedError``).
* the VAE family (``djax.methods.vae_family``, Ruiz et al. 2019's Table 1): the Karras
  encoder and generator of ``djax.nn.karras`` (conv 3x3 SAME -> leaky ReLU 0.2 -> pixel
  norm, 2x2 average pooling, nearest-neighbour upsampling, 1x1 to_rgb and tanh), z = μ + σ ε,
  Laplace NLL (``loss.likelihood_scale``, summed over pixels) + KL, β-weighted for
  ``beta_vae``, one Adam over both networks. ``vae`` and ``beta_vae`` only: the other
  objectives raise ``NotImplementedError`` (``benchmarks.train_step`` prints a note).

Where it is not bit-for-bit djax (none of it changes the amount of work per step):

* random numbers: masks, VAE noise and initial weights come from torch's generator, not
  jax's PRNG;
* BatchNorm running variance: PyTorch updates it with the unbiased batch variance
  (n / (n − 1) times flax's biased one); normalisation in train mode is the same (biased),
  eval mode uses whatever running statistics each side accumulated;
* flax's GroupNorm/LayerNorm compute the variance as E[x²] − E[x]² (``use_fast_variance``),
  PyTorch as E[(x − mean)²]: equal up to float32 rounding;
* data parallelism: one process, one device; djax's pmean over devices is a no-op there.
"""

from __future__ import annotations

import collections
import math
import os
import platform
import statistics
import time
from typing import Any

# PyTorch's CPU wheels run on Intel OpenMP, whose idle threads spin for 200 ms after each
# parallel region. On a shared, oversubscribed machine (this project's 2 cores) the spinning
# thread steals the time slice the working one needs: measured there, the Jacobian MLP step
# took 180-1000 ms with 2 threads and the default policy, 22 ms with 'PASSIVE' (19-33 ms
# with 1 thread either way). OpenMP reads this when torch loads it, so it only takes effect
# where torch is first imported here; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import flax.linen as flax_nn  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from djax.nn import spec as djax_spec  # noqa: E402
from djax.nn.conv_transpose import _transpose_padding  # noqa: E402

# ----------------------------------------------------------------------------- djax's constants

NEGATIVE_SLOPE = djax_spec.SpecNet.negative_slope  # 0.2, Table 1's caption
BN_MOMENTUM = djax_spec.Norm.momentum  # flax convention: running = m * running + (1 - m) * batch
BN_EPS = flax_nn.BatchNorm.epsilon
GROUP_NORM_EPS = flax_nn.GroupNorm.epsilon
LAYER_NORM_EPS = flax_nn.LayerNorm.epsilon
CANCELS_BIAS = djax_spec._CANCELS_BIAS  # norms after which djax drops the conv bias


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
  """XLA's SAME padding of one spatial axis: (pad_lo, pad_hi, output size)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2, out


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
  """flax's default kernel init: variance_scaling(1, 'fan_in', 'truncated_normal')."""
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


@torch.no_grad()
def flax_init_(modules) -> None:
  """flax's defaults on torch layers: LeCun-normal (truncated, fan-in) kernels of every conv,
  transposed conv and dense layer, zero biases; other modules are left as they are."""
  for mod in modules:
    if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
      lecun_normal_(mod.weight, mod.in_channels * math.prod(mod.kernel_size))
    elif isinstance(mod, nn.Linear):
      lecun_normal_(mod.weight, mod.in_features)
    else:
      continue
    if mod.bias is not None:
      mod.bias.zero_()


# ----------------------------------------------------------------------------- layers

class ToMap(nn.Module):
  """A code vector [B, C] -> a 1x1 map [B, C, 1, 1] (djax: ``x[:, None, None, :]``)."""

  def forward(self, x):
    return x.reshape(x.shape[0], x.shape[1], 1, 1)


class ChannelLayerNorm(nn.Module):
  """flax ``LayerNorm()`` on an NHWC map normalises each pixel over its channels."""

  def __init__(self, channels: int, eps: float):
    super().__init__()
    self.norm = nn.LayerNorm(channels, eps=eps)

  def forward(self, x):
    if x.ndim == 2:
      return self.norm(x)
    return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ReshapeHWC(nn.Module):
  """djax's ``r(H,W,C)``: a vector read in NHWC order, returned as NCHW."""

  def __init__(self, shape: tuple[int, int, int]):
    super().__init__()
    self.shape = tuple(shape)

  def forward(self, x):
    return x.reshape((x.shape[0],) + self.shape).permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int, ndim: int) -> nn.Module:
  if kind == "batch":
    cls = nn.BatchNorm2d if ndim == 3 else nn.BatchNorm1d
    return cls(channels, eps=BN_EPS, momentum=round(1.0 - BN_MOMENTUM, 12))
  if kind == "instance":
    if ndim == 3:
      # flax GroupNorm(group_size=1): per sample and channel over H, W; scale and bias per channel.
      return nn.GroupNorm(channels, channels, eps=GROUP_NORM_EPS)
    return ChannelLayerNorm(channels, LAYER_NORM_EPS)
  if kind == "layer":
    return ChannelLayerNorm(channels, LAYER_NORM_EPS)
  if kind == "none":
    return nn.Identity()
  raise ValueError(f"unknown normalisation {kind!r}; choose one of {djax_spec.NORMS}")


class SpecNet(nn.Sequential):
  """A djax spec string as an ``nn.Sequential`` of NCHW PyTorch layers.

  Children are named after djax's flax modules (``conv{i}``, ``deconv{i}``, ``norm{i}``,
  ``dense{i}``) so that :func:`load_flax_variables` can copy a djax network in; padding,
  reshaping and activation modules get their own names (``pad{i}``, ``act{i}``, ...).
  ``in_shape`` is (C, H, W) for images or (D,) for code vectors; ``out_shape`` is set.
  """

  def __init__(self, spec: str, in_shape: tuple[int, ...], out_features: int | None = None,
               norm: str = "batch", negative_slope: float = NEGATIVE_SLOPE, init: bool = True):
    layers = djax_spec.parse_spec(spec)
    last = len(layers) - 1
    mods: collections.OrderedDict[str, nn.Module] = collections.OrderedDict()
    shape = tuple(in_shape)
    flatten_chw: dict[str, tuple[int, int, int]] = {}  # dense layer -> (C, H, W) it flattens
    for i, layer in enumerate(layers):
      hidden = i < last
      if layer.kind in ("conv", "deconv"):
        use_bias = not (hidden and norm in CANCELS_BIAS)
        if len(shape) == 1:
          mods[f"tomap{i}"] = ToMap()
          shape = (shape[0], 1, 1)
        cin, h, w = shape
        k, s = layer.kernel, layer.stride
        if layer.kind == "conv":
          hlo, hhi, ho = same_pads(h, k, s)
          wlo, whi, wo = same_pads(w, k, s)
          if (hlo, hhi) == (wlo, whi) and hlo == hhi:
            conv = nn.Conv2d(cin, layer.features, k, s, padding=hlo, bias=use_bias)
          else:
            mods[f"pad{i}"] = nn.ZeroPad2d((wlo, whi, hlo, hhi))
            conv = nn.Conv2d(cin, layer.features, k, s, padding=0, bias=use_bias)
          mods[f"conv{i}"] = conv
          shape = (layer.features, ho, wo)
        else:
          pad_a, pad_b = _transpose_padding(k, s, "VALID" if s == 1 else "SAME")
          # PyTorch pads the dilated input by k-1-padding before and k-1-padding+output_padding
          # after, and correlates with the flipped kernel (see load_flax_variables).
          padding, output_padding = k - 1 - pad_a, pad_b - pad_a
          if padding < 0 or not 0 <= output_padding < s:
            raise NotImplementedError(
                f"transposed conv k{k}s{s}: lax padding ({pad_a}, {pad_b}) has no PyTorch "
                "padding/output_padding equivalent")
          mods[f"deconv{i}"] = nn.ConvTranspose2d(cin, layer.features, k, s, padding=padding,
                                                  output_padding=output_padding, bias=use_bias)
          out = lambda n: (n - 1) * s + pad_a + pad_b - k + 2
          shape = (layer.features, out(h), out(w))
        if hidden:
          mods[f"norm{i}"] = make_norm(norm, layer.features, 3)
          mods[f"act{i}"] = nn.LeakyReLU(negative_slope)
      elif layer.kind == "dense":
        features = layer.features or out_features
        if features is None:
          raise ValueError(f"spec {spec!r} ends in a bare 'f' but out_features is not set")
        if len(shape) == 3:
          mods[f"flatten{i}"] = nn.Flatten()  # NCHW order; load_flax_variables permutes rows
          flatten_chw[f"dense{i}"] = shape
        mods[f"dense{i}"] = nn.Linear(int(np.prod(shape)), features)
        shape = (features,)
        if hidden:
          mods[f"act{i}"] = nn.LeakyReLU(negative_slope)
      elif layer.kind == "pool":
        c, h, w = shape
        hlo, hhi, ho = same_pads(h, 3, 2)
        wlo, whi, wo = same_pads(w, 3, 2)
        if hlo or hhi or wlo or whi:  # flax's max_pool pads SAME with -inf
          mods[f"poolpad{i}"] = nn.ConstantPad2d((wlo, whi, hlo, hhi), float("-inf"))
        mods[f"pool{i}"] = nn.MaxPool2d(3, 2)
        shape = (c, ho, wo)
      elif layer.kind == "upsample":
        mods[f"up{i}"] = nn.Upsample(scale_factor=2, mode="nearest")
        shape = (shape[0], 2 * shape[1], 2 * shape[2])
      elif layer.kind == "reshape":
        mods[f"reshape{i}"] = ReshapeHWC(layer.shape)
        h, w, c = layer.shape
        shape = (c, h, w)
    super().__init__(mods)
    self.flatten_chw = flatten_chw
    self.out_shape = shape
    if init:
      self.reset_parameters()

  @torch.no_grad()
  def reset_parameters(self):
    """flax's initialisation: LeCun-normal kernels (fan-in), zero biases, unit norm scales."""
    flax_init_(self.children())


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def load_flax_variables(net: SpecNet, params, batch_stats=None) -> None:
  """Copies a djax ``SpecNet``'s flax variables into the PyTorch ``SpecNet`` of the same spec.

  Layouts: conv kernel HWIO -> OIHW; transposed-conv kernel (flax/lax ``transpose_kernel=
  False``: the dilated input is *correlated* with the kernel as stored) HWIO -> PyTorch's
  (I, O, H, W), spatially flipped (PyTorch's transposed conv is the adjoint of a correlation,
  i.e. a correlation with the flipped kernel); dense kernel (in, out) -> (out, in), with the
  rows of a layer after a flatten reordered from HWC (flax) to CHW (PyTorch). Norms: scale ->
  weight, bias -> bias, BatchNorm mean/var -> running_mean/running_var (unless
  ``batch_stats`` is None: then ``params`` may as well be a gradient tree of the same shape).
  """
  t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
  for name, mod in net.named_children():
    if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      p = params[name]
      kernel = np.asarray(p["kernel"], np.float32)
      if isinstance(mod, nn.ConvTranspose2d):
        weight = kernel[::-1, ::-1].transpose(2, 3, 0, 1)
      elif isinstance(mod, nn.Conv2d):
        weight = kernel.transpose(3, 2, 0, 1)
      else:
        if name in net.flatten_chw:
          c, h, w = net.flatten_chw[name]
          kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        weight = kernel.T
      if tuple(weight.shape) != tuple(mod.weight.shape):
        raise ValueError(f"{name}: flax kernel {kernel.shape} does not fit "
                         f"{tuple(mod.weight.shape)}")
      mod.weight.copy_(t(weight))
      if mod.bias is not None:
        mod.bias.copy_(t(p["bias"]))
      elif "bias" in p:
        raise ValueError(f"{name}: flax has a bias, the PyTorch layer has none")
    elif name.startswith("norm") and not isinstance(mod, nn.Identity):
      (inner,) = params[name].values()  # BatchNorm_0 / GroupNorm_0 / LayerNorm_0
      target = mod.norm if isinstance(mod, ChannelLayerNorm) else mod
      target.weight.copy_(t(inner["scale"]))
      target.bias.copy_(t(inner["bias"]))
      if batch_stats is not None and isinstance(target, nn.modules.batchnorm._BatchNorm):
        (stats,) = batch_stats[name].values()
        target.running_mean.copy_(t(stats["mean"]))
        target.running_var.copy_(t(stats["var"]))


# ----------------------------------------------------------------------------- optimisers

class Optimizer:
  """``djax.methods.base.make_optimizer`` in PyTorch: Adam or AdamW (decoupled decay, as
  optax.adamw), an optional global-norm clip and the staircase exponential decay."""

  def __init__(self, cfg, params, **adam_kwargs):
    self.params = [p for p in params if p.requires_grad]
    kw = dict(lr=cfg.learning_rate, betas=(cfg.b1, cfg.b2), eps=1e-8, **adam_kwargs)
    if cfg.get("weight_decay", 0):
      self.opt = torch.optim.AdamW(self.params, weight_decay=cfg.weight_decay, **kw)
    else:
      self.opt = torch.optim.Adam(self.params, **kw)
    every = cfg.get("decay_every", 0)
    self.sched = (torch.optim.lr_scheduler.StepLR(self.opt, every, cfg.get("decay_rate", 0.9))
                  if every else None)
    self.clip = cfg.get("clip_norm", 0)

  def step(self):
    if self.clip:
      nn.utils.clip_grad_norm_(self.params, self.clip)
    self.opt.step()
    if self.sched is not None:
      self.sched.step()

  def zero_grad(self):
    self.opt.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- mixing

def _bce(logits, target: float):
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class TorchMixing:
  """Hu et al. 2018's four networks and train step (``djax.methods.mixing.Mixing``)."""

  def __init__(self, config, device: str | torch.device = "cpu", seed: int = 0,
               init: bool = True):
    m = config.model
    self.config, self.loss = config, config.loss
    self.device = torch.device(device)
    self.n_chunks, self.chunk_size = m.n_chunks, m.chunk_size
    self.code_size = m.n_chunks * m.chunk_size
    s, c = config.data.image_size, int(config.data.get("channels", 3))
    torch.manual_seed(seed)
    self.encoder = SpecNet(m.encoder_spec, (c, s, s), self.code_size, m.encoder_norm, init=init)
    self.decoder = SpecNet(m.decoder_spec, (self.code_size,), None, m.decoder_norm, init=init)
    self.discriminator = SpecNet(m.discriminator_spec, (c, s, s), 1, m.discriminator_norm,
                                 init=init)
    self.classifier = SpecNet(m.classifier_spec, (3 * c, s, s), self.n_chunks, m.classifier_norm,
                              init=init)
    if self.decoder.out_shape != (c, s, s):
      raise ValueError(f"decoder spec {m.decoder_spec!r} gives {self.decoder.out_shape}, "
                       f"the data is {(c, s, s)}")
    for net in self.nets.values():
      net.to(self.device).train()
    self.groups = {"ae": [self.encoder, self.decoder], "dsc": [self.discriminator],
                   "cls": [self.classifier]}
    self._dsc_bns = [mod for mod in self.discriminator.modules()
                     if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    self.seed = seed
    self.mask_rng = None  # made on first use (there is no generator on the 'meta' device)
    self.opt = None

  @property
  def nets(self) -> dict[str, SpecNet]:
    return {"encoder": self.encoder, "decoder": self.decoder,
            "discriminator": self.discriminator, "classifier": self.classifier}

  def make_optimizers(self, **adam_kwargs):
    self.opt = {g: Optimizer(self.config.optim[g], [p for net in nets for p in net.parameters()],
                             **adam_kwargs)
                for g, nets in self.groups.items()}

  def group_param_counts(self) -> dict[str, int]:
    return {name: count_params(net) for name, net in self.nets.items()}

  # -- the method
  def sample_mask(self, batch: int) -> torch.Tensor:
    if self.mask_rng is None:
      self.mask_rng = torch.Generator(device=self.device).manual_seed(self.seed + 1)
    mask = (torch.rand((batch, self.n_chunks), generator=self.mask_rng, device=self.device)
            < 0.5).float()
    return mask if self.loss.mask_per_example else mask[:1].expand_as(mask)

  def mix(self, fa, fb, mask):
    return torch.where(mask.repeat_interleave(self.chunk_size, dim=-1).bool(), fa, fb)

  def decode(self, f):
    return torch.tanh(self.decoder(f))

  def forward(self, x1, x2, mask):
    """§3.1 steps 1-6, in djax's order (the BatchNorm statistics update in that order)."""
    f1 = self.encoder(x1)
    f2 = self.encoder(x2)
    x3 = self.decode(self.mix(f1, f2, mask))
    f3 = self.encoder(x3)
    x4 = self.decode(self.mix(f3, f1, mask))
    out = {"f1": f1, "f2": f2, "f3": f3, "x3": x3, "x4": x4}
    if self.loss.lambda_rec:
      out["x1_rec"] = self.decode(f1)
    return out

  @staticmethod
  def mixing_loss(x4, x1):
    return (x4 - x1).square().sum(dim=tuple(range(1, x4.ndim))).mean()

  def generator_loss(self, fake_logits):
    if self.loss.gan == "non_saturating":
      return _bce(fake_logits, 1.0)
    if self.loss.gan == "minimax":
      return -_bce(fake_logits, 0.0)
    raise ValueError(f"unknown GAN loss {self.loss.gan!r}")

  @staticmethod
  def classifier_loss(mask_logits, mask):
    return F.binary_cross_entropy_with_logits(mask_logits, mask, reduction="none").sum(-1).mean()

  def ae_cls_losses(self, x1, x2, mask):
    """The ae and cls groups' objective (eq. 4 without the max over Dsc); returns
    (total, losses, x3, mask_logits). The discriminator's running statistics are kept as they
    were (djax discards this call's statistics)."""
    lo = self.loss
    out = self.forward(x1, x2, mask)
    momenta = [bn.momentum for bn in self._dsc_bns]
    for bn in self._dsc_bns:
      bn.momentum = 0.0
    try:
      fake_logits = self.discriminator(out["x3"])
    finally:
      for bn, m in zip(self._dsc_bns, momenta):
        bn.momentum = m
    mask_logits = self.classifier(torch.cat([x1, x2, out["x3"]], dim=1))
    losses = {"loss_mix": self.mixing_loss(out["x4"], x1),
              "loss_gen": self.generator_loss(fake_logits),
              "loss_cls": self.classifier_loss(mask_logits, mask),
              "loss_rec": (self.mixing_loss(out["x1_rec"], x1) if "x1_rec" in out
                           else torch.zeros((), device=x1.device))}
    total = (lo.lambda_mix * losses["loss_mix"] + lo.lambda_gan * losses["loss_gen"]
             + lo.lambda_cls * losses["loss_cls"] + lo.lambda_rec * losses["loss_rec"])
    return total, losses, out["x3"], mask_logits

  def dsc_loss(self, x1, x3):
    real = self.discriminator(x1)
    fake = self.discriminator(x3)
    return _bce(real, 1.0) + _bce(fake, 0.0), real, fake

  def train_step(self, x1, x2, mask=None) -> dict[str, torch.Tensor]:
    """One simultaneous update of the three groups, as ``Mixing.train_step``."""
    if self.opt is None:
      self.make_optimizers()
    if mask is None:
      mask = self.sample_mask(x1.shape[0])
    for o in self.opt.values():
      o.zero_grad()
    # ae + cls: the generator's loss reaches no discriminator weight.
    self.discriminator.requires_grad_(False)
    try:
      total, losses, x3, mask_logits = self.ae_cls_losses(x1, x2, mask)
      total.backward()
    finally:
      self.discriminator.requires_grad_(True)
    # dsc: x3 is data for it, no gradient flows back into the autoencoder.
    loss_dsc, real, fake = self.dsc_loss(x1, x3.detach())
    loss_dsc.backward()
    for o in self.opt.values():
      o.step()
    with torch.no_grad():
      metrics = {k: v.detach() for k, v in losses.items()}
      metrics.update(loss_dsc=loss_dsc.detach(),
                     mask_accuracy=((mask_logits > 0) == (mask > 0.5)).float().mean(),
                     d_real=torch.sigmoid(real).mean(), d_fake=torch.sigmoid(fake).mean())
    return metrics

  def step_on(self, batch: dict[str, np.ndarray]):
    """``train_step`` on a djax-layout batch (NHWC numpy), converted once by :meth:`inputs`."""
    return self.train_step(*self.inputs(batch))

  def inputs(self, batch):
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(
        np.asarray(a, np.float32).reshape((-1,) + np.shape(a)[-3:]).transpose(0, 3, 1, 2))
                                      ).to(self.device)
    return nchw(batch["image"]), nchw(batch["image2"])


# ----------------------------------------------------------------------------- Jacobian supervision

class TorchJacobianTeacher:
  """Lezama's stage-0 teacher (``djax.methods.jacobian_supervision``, stage 0): the MNIST MLP
  autoencoder with an affine-free output BatchNorm, trained on reconstruction only."""

  def __init__(self, config, device: str | torch.device = "cpu", seed: int = 0):
    from djax.methods.jacobian_supervision import BN_EPS as JAC_BN_EPS
    m = config.model
    if int(m.get("stage", 0)) != 0:
      raise NotImplementedError(
          "torch reference of Jacobian supervision: only the stage-0 teacher is implemented "
          "(a student needs the previous stage's checkpoint)")
    self.config, self.device = config, torch.device(device)
    s, c = config.data.image_size, int(config.data.get("channels", 1))
    self.image_shape = (s, s, c)
    torch.manual_seed(seed)

    def mlp(sizes):
      mods = []
      for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
          lecun_normal_(lin.weight, a)
          lin.bias.zero_()
        mods += [lin] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
      return mods

    code = int(m.code_size)
    self.encoder = nn.Sequential(
        *mlp([s * s * c, *m.encoder_hidden, code]),
        nn.BatchNorm1d(code, eps=JAC_BN_EPS, momentum=0.1, affine=False)).to(self.device)
    self.decoder = nn.Sequential(*mlp([code, *m.decoder_hidden, s * s * c]),
                                 nn.Tanh()).to(self.device)
    self.nets = {"encoder": self.encoder, "decoder": self.decoder}
    self.opt = None

  def group_param_counts(self) -> dict[str, int]:
    return {name: count_params(net) for name, net in self.nets.items()}

  def train_step(self, x, xj=None) -> dict[str, torch.Tensor]:
    del xj  # the teacher is trained on reconstruction only
    if self.opt is None:
      params = list(self.encoder.parameters()) + list(self.decoder.parameters())
      self.opt = {"ae": Optimizer(self.config.optim.ae, params)}
    self.opt["ae"].zero_grad()
    flat = x.reshape(x.shape[0], -1)  # NHWC kept: an MLP, flattened in flax's order
    loss = F.mse_loss(self.decoder(self.encoder(flat)), flat)
    loss.backward()
    self.opt["ae"].step()
    return {"loss_rec": loss.detach(), "loss": loss.detach()}

  def step_on(self, batch):
    return self.train_step(*self.inputs(batch))

  def inputs(self, batch):
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32).reshape(
        (-1,) + self.image_shape)).to(self.device)
    return t(batch["image"]), t(batch.get("image2", batch["image"]))


# ----------------------------------------------------------------------------- the VAE family

PIXEL_NORM_EPS = 1e-8  # djax.nn.karras.pixel_norm's default
KARRAS_SLOPE = 0.2  # djax.nn.karras: leaky ReLU 0.2 everywhere
VAE_OBJECTIVES = ("vae", "beta_vae")  # the ones implemented here


class PixelNorm(nn.Module):
  """Karras et al.'s pixel-wise normalisation over the channels of an NCHW map."""

  def __init__(self, eps: float = PIXEL_NORM_EPS):
    super().__init__()
    self.eps = eps

  def forward(self, x):
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)


class KarrasBlock(nn.Sequential):
  """``djax.nn.karras.Block``: (conv 3x3 SAME -> leaky ReLU 0.2 -> pixel norm) x ``convs``;
  children ``conv{i}`` as in flax."""

  def __init__(self, cin: int, features: int, convs: int = 1, norm: bool = True):
    mods: collections.OrderedDict[str, nn.Module] = collections.OrderedDict()
    for i in range(convs):
      mods[f"conv{i}"] = nn.Conv2d(cin if i == 0 else features, features, 3, 1, padding=1)
      mods[f"act{i}"] = nn.LeakyReLU(KARRAS_SLOPE)
      if norm:
        mods[f"pnorm{i}"] = PixelNorm()
    super().__init__(mods)


class TorchGaussianEncoder(nn.Module):
  """``djax.nn.karras.GaussianEncoder``: blocks with 2x2 average pooling after each, a
  flatten (NCHW order; :func:`load_karras_variables` permutes the head's rows from flax's
  HWC), one linear layer to (μ, log σ²)."""

  def __init__(self, widths, latent_dim: int, channels: int, image_size: int, convs: int = 1):
    super().__init__()
    blocks, cin = [], channels
    for w in widths:
      blocks.append(KarrasBlock(cin, w, convs))
      cin = w
    self.trunk = nn.ModuleList(blocks)
    side = image_size // 2 ** len(widths)
    self.trunk_chw = (cin, side, side)
    self.head = nn.Linear(cin * side * side, 2 * latent_dim)
    self.latent_dim = latent_dim

  def forward(self, x):
    for block in self.trunk:
      x = F.avg_pool2d(block(x), 2)
    out = self.head(x.flatten(1))
    return out[:, :self.latent_dim], out[:, self.latent_dim:]


class TorchGenerator(nn.Module):
  """``djax.nn.karras.Generator``: a linear layer to a 4x4 map of ``widths[0]`` channels
  (leaky ReLU, pixel norm), then per width a nearest-neighbour 2x upsampling and a block,
  a 1x1 conv to the image's channels and tanh."""

  def __init__(self, widths, latent_dim: int, channels: int, convs: int = 1):
    super().__init__()
    self.w0 = widths[0]
    self.fc = nn.Linear(latent_dim, 16 * self.w0)
    blocks, cin = [], self.w0
    for w in widths:
      blocks.append(KarrasBlock(cin, w, convs))
      cin = w
    self.blocks = nn.ModuleList(blocks)
    self.to_rgb = nn.Conv2d(cin, channels, 1)
    self.pnorm = PixelNorm()

  def forward(self, code):
    x = self.pnorm(F.leaky_relu(self.fc(code).reshape(-1, self.w0, 4, 4), KARRAS_SLOPE))
    for block in self.blocks:
      x = block(F.interpolate(x, scale_factor=2, mode="nearest"))
    return torch.tanh(self.to_rgb(x))


@torch.no_grad()
def reset_karras_parameters(net: nn.Module) -> None:
  """flax's initialisation of the Karras networks: LeCun-normal (truncated, fan-in) kernels
  of every conv and dense layer, zero biases."""
  flax_init_(net.modules())


@torch.no_grad()
def load_karras_variables(net: nn.Module, params) -> None:
  """Copies a djax ``GaussianEncoder`` / ``Generator`` parameter tree (or a gradient tree of
  the same shape) into :class:`TorchGaussianEncoder` / :class:`TorchGenerator`: conv kernels
  HWIO -> OIHW, dense kernels (in, out) -> (out, in), with the encoder head's rows reordered
  from HWC to CHW (the flatten) and the generator fc's columns and bias likewise (the
  reshape to a 4x4 map)."""
  t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # a writable copy
  arr = lambda a: np.asarray(a, np.float32)

  def conv(mod, p):
    kernel = arr(p["kernel"]).transpose(3, 2, 0, 1)
    if kernel.shape != tuple(mod.weight.shape):
      raise ValueError(f"flax kernel {kernel.shape} does not fit {tuple(mod.weight.shape)}")
    mod.weight.copy_(t(kernel))
    mod.bias.copy_(t(p["bias"]))

  def blocks(mods, tree):
    for i, block in enumerate(mods):
      for name, mod in block.named_children():
        if isinstance(mod, nn.Conv2d):
          conv(mod, tree[f"block{i}"][name])

  if isinstance(net, TorchGaussianEncoder):
    blocks(net.trunk, params["trunk"])
    c, h, w = net.trunk_chw
    kernel = arr(params["head"]["kernel"])
    kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    net.head.weight.copy_(t(kernel.T))
    net.head.bias.copy_(t(params["head"]["bias"]))
  elif isinstance(net, TorchGenerator):
    kernel, bias = arr(params["fc"]["kernel"]), arr(params["fc"]["bias"])
    kernel = kernel.reshape(-1, 4, 4, net.w0).transpose(0, 3, 1, 2).reshape(kernel.shape[0], -1)
    net.fc.weight.copy_(t(kernel.T))
    net.fc.bias.copy_(t(bias.reshape(4, 4, net.w0).transpose(2, 0, 1).reshape(-1)))
    blocks(net.blocks, params)
    conv(net.to_rgb, params["to_rgb"])
  else:
    raise TypeError(f"load_karras_variables: not a Karras network: {type(net).__name__}")


def laplace_nll(x_hat, x, scale: float):
  """``djax.methods.latents.laplace_nll``: Σ_pixels |x − x̂| / b + D log 2b, per example."""
  d = x.flatten(1)
  return (d - x_hat.flatten(1)).abs().sum(-1) / scale + d.shape[1] * math.log(2.0 * scale)


def gaussian_kl(mu, logvar):
  """KL(N(μ, σ²) || N(0, I)) per example."""
  return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


class TorchVaeFamily:
  """Ruiz et al.'s VAE / β-VAE (``djax.methods.vae_family.VaeFamily``): Karras encoder and
  generator, reparameterised z, Laplace NLL (``loss.likelihood_scale``) + (β) KL, batch
  means, one Adam over both networks (``optim.vae``). The other objectives of the family
  (β-TCVAE, DIP-VAE) are not implemented here."""

  def __init__(self, config, device: str | torch.device = "cpu", seed: int = 0,
               init: bool = True):
    m, self.loss = config.model, config.loss
    if self.loss.objective not in VAE_OBJECTIVES:
      raise NotImplementedError(
          f"torch reference of vae_family: loss.objective {self.loss.objective!r} is not "
          f"implemented (only {VAE_OBJECTIVES}); time it with --notorch")
    self.config, self.device = config, torch.device(device)
    s, c = int(config.data.image_size), int(config.data.get("channels", 3))
    self.image_shape = (c, s, s)
    convs = int(m.get("convs_per_block", 1))
    self.latent_dim = int(m.latent_dim)
    self.use_reference = bool(m.get("use_reference_images", False))
    torch.manual_seed(seed)
    self.encoder = TorchGaussianEncoder(tuple(m.encoder_widths), self.latent_dim, c, s, convs)
    self.generator = TorchGenerator(tuple(m.generator_widths), self.latent_dim, c, convs)
    if 4 * 2 ** len(m.generator_widths) != s or s % 2 ** len(m.encoder_widths):
      raise ValueError(f"widths {tuple(m.encoder_widths)} / {tuple(m.generator_widths)} do "
                       f"not fit {s}x{s} images")
    for net in self.nets.values():
      if init:
        reset_karras_parameters(net)
      net.to(self.device).train()
    self.seed = seed
    self.noise_rng = None  # made on first use (there is no generator on the 'meta' device)
    self.opt = None

  @property
  def nets(self) -> dict[str, nn.Module]:
    return {"encoder": self.encoder, "generator": self.generator}

  def group_param_counts(self) -> dict[str, int]:
    return {name: count_params(net) for name, net in self.nets.items()}

  def objective(self, x, eps):
    """(total, terms) as ``vae_family.objective_terms``, at noise ``eps`` [B, latent]."""
    mu, logvar = self.encoder(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    x_hat = self.generator(z)
    nll = laplace_nll(x_hat, x, self.loss.likelihood_scale).mean()
    kl = gaussian_kl(mu, logvar).mean()
    beta = self.loss.beta if self.loss.objective == "beta_vae" else 1.0
    total = nll + beta * kl
    return total, {"loss_nll": nll, "loss_kl": kl, "loss_total": total}

  def train_step(self, x, eps=None) -> dict[str, torch.Tensor]:
    if self.opt is None:
      self.opt = {"vae": Optimizer(self.config.optim.vae, list(self.encoder.parameters())
                                   + list(self.generator.parameters()))}
    if eps is None:
      if self.noise_rng is None:
        self.noise_rng = torch.Generator(device=self.device).manual_seed(self.seed + 1)
      eps = torch.randn((x.shape[0], self.latent_dim), generator=self.noise_rng,
                        device=self.device)
    self.opt["vae"].zero_grad()
    total, terms = self.objective(x, eps)
    total.backward()
    self.opt["vae"].step()
    return {k: v.detach() for k, v in terms.items()}

  def step_on(self, batch):
    return self.train_step(*self.inputs(batch))

  def inputs(self, batch):
    """The images the step learns from, NCHW: ``image`` (and ``image_ref`` after it with
    ``model.use_reference_images``, as ``VaeFamily.images``)."""
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(
        np.asarray(a, np.float32).reshape((-1,) + np.shape(a)[-3:]).transpose(0, 3, 1, 2))
                                      ).to(self.device)
    x = nchw(batch["image"])
    if self.use_reference:
      if "image_ref" not in batch:
        raise ValueError("model.use_reference_images needs data.pairing='reference'")
      x = torch.cat([x, nchw(batch["image_ref"])])
    return (x,)


REFERENCES = {"mixing": TorchMixing, "jacobian_supervision": TorchJacobianTeacher,
              "vae_family": TorchVaeFamily}


def create(config, device: str | torch.device = "cpu", seed: int = 0):
  if config.method not in REFERENCES:
    raise NotImplementedError(f"no PyTorch reference for method {config.method!r}")
  return REFERENCES[config.method](config, device=device, seed=seed)


# ----------------------------------------------------------------------------- timing

def synthetic_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """Uniform images in the config's value range, NHWC, with the pair the method reads."""
  b, s = config.train.batch_size, config.data.image_size
  c = int(config.data.get("channels", 3))
  lo, hi = config.data.get("value_range", (-1.0, 1.0))
  rng = np.random.default_rng(seed)
  images = lambda: rng.uniform(lo, hi, (b, s, s, c)).astype(np.float32)
  batch = {"image": images(), "image2": images()}
  if config.data.get("pairing") == "reference":
    batch["image_ref"] = images()
  return batch


def _sync(device: torch.device):
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def measure_torch(config, steps: int = 10, warmup: int = 2, batch: dict | None = None,
                  device: str | None = None, threads: int = 0) -> dict[str, Any]:
  """ms per train step of the PyTorch reference, median/min/max over ``steps`` after the
  first step and ``warmup`` more; ``batch`` (NHWC numpy, leading device axes allowed, as in
  ``benchmarks.common.synthetic_batch``) defaults to a synthetic one of the config's shape.
  ``threads`` > 0 sets ``torch.set_num_threads`` (0: PyTorch's default, one per core)."""
  device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
  if threads:
    torch.set_num_threads(threads)
  model = create(config, device=device)
  inputs = model.inputs(batch if batch is not None else synthetic_batch(config))
  batch_size = inputs[0].shape[0]
  t0 = time.perf_counter()
  metrics = model.train_step(*inputs)
  _sync(device)
  first_s = time.perf_counter() - t0
  for _ in range(warmup):
    metrics = model.train_step(*inputs)
  _sync(device)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    metrics = model.train_step(*inputs)
    _sync(device)
    times.append(time.perf_counter() - t0)
  if not all(math.isfinite(float(v)) for v in metrics.values()):
    raise FloatingPointError(f"non-finite torch reference metrics: {metrics}")
  med = statistics.median(times)
  return {
      "framework": "torch", "method": config.method, "image_size": config.data.image_size,
      "batch_size": batch_size, "first_step_s": round(first_s, 3),
      "ms_per_step_median": round(1e3 * med, 2), "ms_per_step_min": round(1e3 * min(times), 2),
      "ms_per_step_max": round(1e3 * max(times), 2),
      "images_per_s": round(batch_size / med, 1),
      "params": model.group_param_counts(),
      "device": str(device), "torch_version": torch.__version__,
      "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
      "python": platform.python_version(),
  }
