"""Hu, Szabó, Portenier, Favaro, Zwicker. "Disentangling factors of variation by mixing them",
CVPR 2018 (``shared/papers/hu2018_mixing.md``).

An encoder maps an image to n chunks of d features. Two images' codes are mixed chunk-wise
by a random binary mask, decoded (x3), re-encoded, unmixed against the first code and
decoded again (x4), which must give back the first image (eq. 1). A discriminator keeps x3
on the data distribution (eq. 2) and a classifier that sees (x1, x2, x3) must tell, chunk by
chunk, which image each chunk came from (eq. 3), so no chunk can be ignored.

Network groups and their optimisers (eq. 4, ``min_{Enc,Dec,Cls} max_{Dsc}``):

* ``ae``  (encoder + decoder) minimises λ_M L_M + λ_G L_G^gen + λ_C L_C (+ λ_rec L_rec);
* ``cls`` minimises L_C: it cooperates with the autoencoder, it is not an adversary;
* ``dsc`` maximises eq. 2 (minimises the discriminator's cross-entropy) on x1 vs x3
  (+ γ R1 with ``loss.r1_gamma``; ``model.discriminator_spectral_norm``: W / σ(W) weights).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from djax.methods import base
from djax.nn.spec import SpecNet, check_image_spec


# ----------------------------------------------------------------------------- mixing algebra

def chunk_mask(mask: jax.Array, chunk_size: int) -> jax.Array:
  """Expands a per-chunk mask [B, n] to the feature mask m = [m¹1, …, mⁿ1] of shape [B, n·d]."""
  return jnp.repeat(mask, chunk_size, axis=-1)


def mix(f_a: jax.Array, f_b: jax.Array, mask: jax.Array) -> jax.Array:
  """f_{a⊕b} = m ⊙ f_a + (1 − m) ⊙ f_b (§3.1 step 2); ``mask`` is per chunk, [B, n].

  Unmixing (step 5, f_{3⊕1} = m ⊙ f3 + (1 − m) ⊙ f1) is the same operation: ``mix(f3, f1, m)``.
  A select rather than a blend, so that gradients reach exactly the chunks that were used.
  """
  m = chunk_mask(mask, f_a.shape[-1] // mask.shape[-1]).astype(bool)
  return jnp.where(m, f_a, f_b)


def sample_masks(keys: jax.Array, n_chunks: int, per_example: bool = True) -> jax.Array:
  """Masks mⁱ ~ U{0, 1}. ``per_example=False`` shares the first example's mask with the
  whole batch, as the authors' code does (one mask per batch)."""
  masks = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (n_chunks,)))(keys).astype(jnp.float32)
  return masks if per_example else jnp.broadcast_to(masks[:1], masks.shape)


# ----------------------------------------------------------------------------- losses

def mixing_loss(x4: jax.Array, x1: jax.Array) -> jax.Array:
  """Eq. (1): L_M = E |x4 − x1|², the squared L2 norm of each image's error (summed over
  pixels and channels), averaged over the batch.

  The sum, not a per-pixel mean, is what the equation writes and what its λ_M = 1 is set
  against: with a per-pixel mean the adversarial and classifier terms outweigh
  reconstruction by orders of magnitude and the autoencoder stalls at the mean image
  (measured on Sprites 32x32: per-pixel MSE stuck at 0.13-0.15, above the 0.08 of the mean
  image, while the summed form trains).
  """
  return jnp.mean(jnp.sum(jnp.square(x4 - x1), axis=tuple(range(1, x4.ndim))))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Eq. (2) from the discriminator's side: −[log Dsc(x1) + log(1 − Dsc(x3))], batch mean."""
  return jnp.mean(base.sigmoid_bce(real_logits, jnp.ones_like(real_logits))
                  + base.sigmoid_bce(fake_logits, jnp.zeros_like(fake_logits)))


def generator_loss(fake_logits: jax.Array, kind: str = "non_saturating") -> jax.Array:
  """Eq. (2) from the autoencoder's side. 'minimax' is the paper's log(1 − Dsc(x3)) term;
  'non_saturating' (default) minimises −log Dsc(x3) instead, which has the same fixed point
  and usable gradients while the discriminator wins (Goodfellow et al. 2014, §3)."""
  if kind == "non_saturating":
    return jnp.mean(base.sigmoid_bce(fake_logits, jnp.ones_like(fake_logits)))
  if kind == "minimax":
    return -jnp.mean(base.sigmoid_bce(fake_logits, jnp.zeros_like(fake_logits)))
  raise ValueError(f"unknown GAN loss {kind!r}; use 'non_saturating' or 'minimax'")


def r1_penalty(dsc_fn, x: jax.Array) -> jax.Array:
  """R1 = ½ E ||∇_x D(x)||² on real images x (Mescheder, Geiger, Nowozin 2018, eq. 9, before
  its weight γ), with D the discriminator's logit. The gradient of Σ_i D(x_i) gives each
  example's ∇_x D(x_i) (coupled through BatchNorm in train mode, as in the authors' code
  of that paper)."""
  g = jax.grad(lambda x: jnp.sum(dsc_fn(x)))(x)
  return 0.5 * jnp.mean(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def classifier_loss(mask_logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Eq. (3): L_C = −Σ_i [mⁱ log yⁱ + (1 − mⁱ) log(1 − yⁱ)], summed over chunks, batch mean.

  The printed equation has log(yⁱ) in both terms; the text says cross-entropy with a
  sigmoid output, which is what is computed here.
  """
  return jnp.mean(jnp.sum(base.sigmoid_bce(mask_logits, mask), axis=-1))


# ----------------------------------------------------------------------------- Table 2

TABLE2_FACTORS = ("body", "skin", "vest", "hair", "arm", "leg", "pose")
# Hu et al. 2018, Table 2 (nearest-neighbour retrieval mAP, best chunk per attribute),
# transcribed from shared/papers/hu2018_mixing.md (djax/metrics/paper_numbers.json holds
# the same rows; tests/test_mixing_runs.py checks they agree). Keyed by the paper's label.
TABLE2 = {
    "Random": (0.5, 0.25, 0.33, 0.17, 0.5, 0.5, 0.006, 0.32),
    "C+G": (0.53, 0.31, 0.41, 0.24, 0.51, 0.52, 0.06, 0.37),
    "AE": (0.56, 0.37, 0.40, 0.31, 0.54, 0.56, 0.46, 0.46),
    "AE+C+G": (0.59, 0.50, 0.53, 0.46, 0.56, 0.54, 0.44, 0.52),
    "MIX": (0.57, 0.61, 0.51, 0.62, 0.54, 0.94, 0.53, 0.62),
    "MIX + C": (0.57, 0.65, 0.43, 0.63, 0.55, 0.58, 0.51, 0.56),
    "MIX + G": (0.59, 0.31, 0.44, 0.24, 0.54, 0.96, 0.47, 0.51),
    "MIX + C + G": (0.58, 0.80, 0.94, 0.49, 0.58, 0.96, 0.52, 0.70),
}
# config.variants names of experiments/mixing_sprites_ablation.py -> Table 2's rows.
TABLE2_VARIANTS = {"c_g": "C+G", "ae": "AE", "ae_c_g": "AE+C+G", "mix": "MIX",
                   "mix_c": "MIX + C", "mix_g": "MIX + G", "mix_c_g": "MIX + C + G"}


def _cell(v) -> str:
  return "–" if v is None or v != v else f"{v:.3f}"


def table2(config, results) -> str:
  """Markdown: one row per variant, each attribute's best-chunk mAP as "djax (paper)", the
  average of the same evaluation on the variant's initial parameters, seconds per step, and
  the last logged d_real / d_fake and mask accuracy."""
  factors = [f for f in TABLE2_FACTORS if f in tuple(config.eval.factors)]
  head = ["row", *factors, "average", "untrained average", "s/step", "steps",
          "d_real / d_fake", "mask accuracy"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in results.items():
    last = r["rows"][-1]
    ev = last.get("eval") or {}
    got = ev.get("headline", {})
    label = TABLE2_VARIANTS.get(name)
    paper = dict(zip(TABLE2_FACTORS + ("average",), TABLE2[label])) if label else {}
    cells = []
    for k in (*factors, "average"):
      ours = _cell(got.get(f"nn_map/{k}"))
      cells.append(f"{ours} ({paper[k]:.2f})" if k in paper else ours)
    untrained = (ev.get("untrained") or {}).get("headline", {}).get("nn_map/average")
    sps = r.get("cost", {}).get("seconds_per_step")
    # The last logged training scalars: whether the GAN was balanced when the run ended.
    m = last.get("metrics") or {}
    d = (f"{m['d_real']:.2f} / {m['d_fake']:.2f}" if "d_real" in m and "d_fake" in m
         else "–")
    acc = f"{m['mask_accuracy']:.2f}" if "mask_accuracy" in m else "–"
    lines.append(f"| {label or name} | " + " | ".join(cells) + f" | {_cell(untrained)} | "
                 f"{_cell(sps)} | {ev.get('step', '–')} | {d} | {acc} |")
  return ("Nearest-neighbour retrieval mAP on Sprites, best chunk per attribute: djax "
          "(Hu et al. 2018 Table 2 in brackets, 0.70 average for the full model).\n\n"
          + "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- method

class Mixing(base.Method):
  """Mixing/unmixing autoencoders + discriminator + chunk classifier (Hu et al. 2018)."""

  groups = ("ae", "dsc", "cls")

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m = config.model
    self.n_chunks = m.n_chunks
    self.chunk_size = m.chunk_size
    self.code_size = m.n_chunks * m.chunk_size
    image_size = config.data.image_size
    check_image_spec(m.decoder_spec, image_size, image_size, "decoder")
    net = functools.partial(SpecNet, axis_name=axis_name)
    self.encoder = net(m.encoder_spec, out_features=self.code_size, norm=m.encoder_norm)
    self.decoder = net(m.decoder_spec, norm=m.decoder_norm)
    self.discriminator = net(m.discriminator_spec, out_features=1, norm=m.discriminator_norm,
                             spectral_norm=bool(m.get("discriminator_spectral_norm", False)))
    self.classifier = net(m.classifier_spec, out_features=self.n_chunks, norm=m.classifier_norm)
    self.tx = {g: base.make_optimizer(config.optim[g]) for g in self.groups}
    self.loss = config.loss

  # -- networks as pure functions of (params, batch_stats): (output, new statistics)
  def encode_fn(self, params, stats, x, train=False):
    return base.apply_net(self.encoder, params["ae"]["encoder"], stats["encoder"], x, train)

  def decode_fn(self, params, stats, f, train=False):
    y, s = base.apply_net(self.decoder, params["ae"]["decoder"], stats["decoder"], f, train)
    return jnp.tanh(y), s

  def init(self, rng: jax.Array, batch: dict[str, Any], previous=None) -> base.TrainState:
    del previous  # one stage
    x = batch["image"]
    k_enc, k_dec, k_dsc, k_cls, k_state = jax.random.split(rng, 5)
    f = jnp.zeros((x.shape[0], self.code_size), x.dtype)
    # Initialise without the device axis: there is no pmap around init.
    plain = lambda n: n.clone(axis_name=None)
    v_enc = plain(self.encoder).init(k_enc, x, train=False)
    v_dec = plain(self.decoder).init(k_dec, f, train=False)
    v_dsc = plain(self.discriminator).init(k_dsc, x, train=False)
    v_cls = plain(self.classifier).init(k_cls, jnp.concatenate([x, x, x], -1), train=False)
    params = {"ae": {"encoder": v_enc["params"], "decoder": v_dec["params"]},
              "dsc": v_dsc["params"], "cls": v_cls["params"]}
    stats = {name: v.get("batch_stats", {}) for name, v in
             (("encoder", v_enc), ("decoder", v_dec), ("dsc", v_dsc), ("cls", v_cls))}
    return base.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
        opt_state={g: self.tx[g].init(params[g]) for g in self.groups}, rng=k_state)

  def forward(self, params, stats, x1, x2, mask, train=True):
    """Steps 1–6 of §3.1; returns images, codes and updated encoder/decoder statistics."""
    f1, s_enc = self.encode_fn(params, stats, x1, train)
    f2, s_enc = self.encode_fn(params, {**stats, "encoder": s_enc}, x2, train)
    x3, s_dec = self.decode_fn(params, stats, mix(f1, f2, mask), train)
    f3, s_enc = self.encode_fn(params, {**stats, "encoder": s_enc}, x3, train)
    x4, s_dec = self.decode_fn(params, {**stats, "decoder": s_dec}, mix(f3, f1, mask), train)
    out = {"f1": f1, "f2": f2, "f3": f3, "x3": x3, "x4": x4}
    if self.loss.lambda_rec:
      out["x1_rec"], s_dec = self.decode_fn(params, {**stats, "decoder": s_dec}, f1, train)
    return out, {**stats, "encoder": s_enc, "decoder": s_dec}

  def _ae_cls_loss(self, trainable, params, stats, x1, x2, mask):
    """Eq. 4's autoencoder terms without L_G: (λ_M L_M + λ_C L_C + λ_rec L_rec, x3) and aux.

    L_G is added in :meth:`gradients`, through the discriminator pass that Dsc's own loss
    uses as well: x3 goes through the discriminator once per step, not twice.
    """
    params = {**params, "ae": trainable["ae"], "cls": trainable["cls"]}
    out, stats = self.forward(params, stats, x1, x2, mask)
    # (x1, x2, x3) on the channel axis, passed in two parts: the data and x3, so that the
    # classifier's first layer forms an input gradient for x3 alone.
    mask_logits, s_cls = base.apply_net(self.classifier, params["cls"], stats["cls"],
                                     (jnp.concatenate([x1, x2], -1), out["x3"]), True)
    stats = {**stats, "cls": s_cls}
    losses = {"loss_mix": mixing_loss(out["x4"], x1),
              "loss_cls": classifier_loss(mask_logits, mask),
              "loss_rec": mixing_loss(out["x1_rec"], x1) if "x1_rec" in out else jnp.zeros(())}
    partial_total = (self.loss.lambda_mix * losses["loss_mix"]
                     + self.loss.lambda_cls * losses["loss_cls"]
                     + self.loss.lambda_rec * losses["loss_rec"])
    mask_acc = jnp.mean((mask_logits > 0) == (mask > 0.5))
    return (partial_total, out["x3"]), (losses, stats, mask_acc)

  def gradients(self, params, stats, x1, x2, mask):
    """Every group's gradient of eq. 4 on one batch, before averaging over devices.

    Returns (grads per group, losses and discriminator readings, new BatchNorm statistics).
    The autoencoder and classifier get ∂/∂θ of λ_M L_M + λ_G L_G^gen + λ_C L_C (+ λ_rec
    L_rec); the discriminator gets ∂/∂θ_Dsc of its cross-entropy on x1 vs x3 (eq. 2), with x3
    as data. The discriminator's pass on x3 is shared: its pullback is taken once with L_G's
    cotangent, keeping the part for x3, and once with Dsc's, keeping the part for θ_Dsc
    (XLA drops the unused halves).
    """
    trainable = {"ae": params["ae"], "cls": params["cls"]}
    (partial_total, x3), ae_pullback, (losses, stats_g, mask_acc) = jax.vjp(
        lambda t: self._ae_cls_loss(t, params, stats, x1, x2, mask), trainable, has_aux=True)
    dsc = lambda p, s, x: base.apply_net(self.discriminator, p, s, x, True)
    # Real first, then fake from the statistics real left: the order of the running-average
    # updates. In train mode a BatchNorm's output does not depend on its running averages.
    real, real_pullback, s_dsc = jax.vjp(lambda p: dsc(p, stats["dsc"], x1), params["dsc"],
                                         has_aux=True)
    fake, fake_pullback, s_dsc = jax.vjp(lambda p, x: dsc(p, s_dsc, x), params["dsc"], x3,
                                         has_aux=True)
    loss_gen, g_fake_gen = jax.value_and_grad(
        lambda f: generator_loss(f, self.loss.gan))(fake)
    loss_dsc, (g_real, g_fake_dsc) = jax.value_and_grad(discriminator_loss, argnums=(0, 1))(
        real, fake)
    _, g_x3 = fake_pullback(self.loss.lambda_gan * g_fake_gen)
    (g_trainable,) = ae_pullback((jnp.ones_like(partial_total), g_x3))
    (g_dsc_real,) = real_pullback(g_real)
    g_dsc_fake, _ = fake_pullback(g_fake_dsc)  # x3 is data for Dsc: no gradient into the AE
    g_dsc = jax.tree_util.tree_map(jnp.add, g_dsc_real, g_dsc_fake)
    gamma = float(self.loss.get("r1_gamma", 0.0) or 0.0)
    if gamma:
      # On real images only, with the statistics the real pass started from; its own
      # statistics updates are dropped (one running-average update per real batch).
      loss_r1, g_r1 = jax.value_and_grad(
          lambda p: r1_penalty(lambda x: dsc(p, stats["dsc"], x)[0], x1))(params["dsc"])
      g_dsc = jax.tree_util.tree_map(lambda a, b: a + gamma * b, g_dsc, g_r1)
      losses = {**losses, "loss_r1": loss_r1}
    grads = {**g_trainable, "dsc": g_dsc}
    metrics = {**losses, "loss_gen": loss_gen, "loss_dsc": loss_dsc, "mask_accuracy": mask_acc,
               "d_real": jnp.mean(jax.nn.sigmoid(real)),
               "d_fake": jnp.mean(jax.nn.sigmoid(fake))}
    return grads, metrics, {**stats_g, "dsc": s_dsc}

  def train_step(self, state: base.TrainState, batch: dict[str, Any], rng: jax.Array):
    """One simultaneous update of the three groups (eq. 4) on pairs (x1, x2) = batch images."""
    x1, x2 = batch["image"], batch["image2"]
    keys = base.example_keys(rng, x1.shape[0], self.axis_name)
    mask = sample_masks(keys, self.n_chunks, self.loss.mask_per_example)
    params = state.params
    grads, metrics, new_stats = self.gradients(params, state.batch_stats, x1, x2, mask)
    grads = base.pmean(grads, self.axis_name)
    new_params, new_opt = base.update_groups(self.tx, grads, state.opt_state, params)
    metrics = base.pmean(metrics, self.axis_name)
    return state.replace(step=state.step + 1, params=new_params, batch_stats=new_stats,
                         opt_state=new_opt), metrics

  @classmethod
  def variant_table(cls, config, results) -> str:
    """Table 2's ablation (``config.variants``, experiments/mixing_sprites_ablation.py)."""
    return table2(config, results)

  # -- evaluation: pure array functions; the trainer draws and scores them

  def encode(self, params, stats, images: jax.Array) -> jax.Array:
    """The code f = Enc(x) (eval mode): [B, n_chunks · chunk_size]."""
    return self.encode_fn(params, stats, images, train=False)[0]

  def decode(self, params, stats, code: jax.Array) -> jax.Array:
    return self.decode_fn(params, stats, code)[0]

  def code_parts(self) -> dict[str, slice]:
    return base.chunk_parts(self.n_chunks, self.chunk_size)

  def transfer_grids(self, params, stats, sources: jax.Array, targets: jax.Array) -> jax.Array:
    """Attribute transfer as in Fig. 5: for each chunk c, cell (r, s) decodes the code of
    target r with chunk c taken from source s. Returns [n_chunks, 1 + R, 1 + S, H, W, C]
    with the sources along the top row, the targets down the left column and a blank corner."""
    f_src = self.encode(params, stats, sources)
    f_tgt = self.encode(params, stats, targets)
    n_src, n_tgt = sources.shape[0], targets.shape[0]

    def one_chunk(c):
      mask = jnp.broadcast_to(jax.nn.one_hot(c, self.n_chunks), (n_tgt * n_src, self.n_chunks))
      fa = jnp.tile(f_src, (n_tgt, 1))  # row-major: target r, source s
      fb = jnp.repeat(f_tgt, n_src, axis=0)
      x = self.decode_fn(params, stats, mix(fa, fb, mask))[0]
      return x.reshape((n_tgt, n_src) + x.shape[1:])

    cells = jax.lax.map(one_chunk, jnp.arange(self.n_chunks))
    blank = jnp.ones_like(sources[:1])
    top = jnp.concatenate([blank, sources], 0)[None]  # [1, 1+S, H, W, C]
    grids = []
    for c in range(self.n_chunks):
      body = jnp.concatenate([targets[:, None], cells[c]], axis=1)  # [R, 1+S, ...]
      grids.append(jnp.concatenate([top, body], axis=0))
    return jnp.stack(grids)

  def reconstruct(self, params, stats, images: jax.Array) -> jax.Array:
    return self.decode(params, stats, self.encode(params, stats, images))

  def eval_images(self, params, stats, images: jax.Array, n: int = 8) -> dict[str, jax.Array]:
    """Grids to look at: one attribute-transfer grid per chunk and input/reconstruction pairs."""
    n = min(n, images.shape[0] // 2)
    sources, targets = images[:n], images[n:2 * n]
    grids = self.transfer_grids(params, stats, sources, targets)
    out = {f"transfer_chunk{c}": grids[c] for c in range(self.n_chunks)}
    out["reconstruction"] = jnp.stack([images[:2 * n], self.reconstruct(params, stats,
                                                                         images[:2 * n])])
    return out
