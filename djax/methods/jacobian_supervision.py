"""Lezama, "Overcoming the disentanglement vs reconstruction trade-off via Jacobian
supervision", ICLR 2019 (``shared/papers/lezama2019_jacobian_supervision.md``).

A teacher autoencoder with a small code y (k units) conditions its output on y; a student
with a larger code (y, z), z of d units, reconstructs better and is trained so that moving
y changes its output the way it changes the teacher's (eq. 1, 7):

    J_S(y, z)[(y_j − y, 0)] ≈ J_T(y)(y_j − y).

Losses (pure functions below, each against a direct computation in tests/test_jacobian.py):

* eq. 8  :func:`reconstruction_loss`   ||x − D_S(E_S(x))||²
* eq. 9  λ_y :func:`y_loss` ||y_S − y_T||²  +  λ_diff :func:`difference_loss` of the
  teacher's and the student's change of output along (y_j − y), by one of three
  estimators (``config.loss.estimator``):

  - ``finite_difference``: the paper's eq. 9, D(y_j, z) − D(y, z) with y_j the code of a
    paired random sample x_j (``batch['image2']``, pairing 'random_other');
  - ``jvp``: the exact directional derivative along the same direction, J·(y_j − y), by
    ``jax.jvp`` (forward mode, differentiated through for training);
  - ``full``: all k canonical directions (the whole y-Jacobian, k vmapped jvps), for
    small k; weighted by E||y_j − y||²/k so its scale matches the directional estimators
    for isotropic directions (see :func:`full_jacobian_loss`).

* eq. 10 :func:`xcov_loss`  Σ_ij [1/M Σ_m (z_i^m − z̄_i)(y_j^m − ȳ_j)]²  (Cheung et al. 2014).

Squared norms are computed as means over elements (the authors' ``nn.MSELoss``), which
is the scale λ_y = 0.25, λ_diff = 0.1, λ_xcov = 1e-3 were tuned at; eq. 10 is the paper's
squared sum (``loss.xcov_form='norm'`` gives the authors' code, its square root).

Networks (Appendix A.1, the MNIST MLP; the paper's "F(768, 256)" is a typo for 784):
encoder 784–256–128–64–(k+d) with ReLUs, decoder the mirror image with a tanh output.
The first teacher (stage 0, k=2, d=0) has a BatchNorm without scale and offset at the
encoder output (the authors' ``BatchNorm1d(affine=False)``); students have none (the
authors' ``use_bn=0``). **The decoder has no BatchNorm**, so it is a per-sample function
and ``jax.jvp`` of the batched decoder is each sample's own Jacobian-vector product.

Progressive growth (§3, Table 1; :meth:`JacobianSupervision.stages` defines the stages,
``djax.stages`` runs them): stage 0 trains
the teacher with reconstruction only; stage s ≥ 1 starts a student with code size 2 + s
from the previous stage's model (:func:`grow_params`) and trains it against that model,
frozen, whose whole code is the student's y (k = 1 + s) and the new unit is z (d = 1).
The previous stage's final state is handed to ``init`` as data (``previous``); the teacher's
parameters then live in the state (``params['teacher']``, not optimised), so a stage's
checkpoints are self-contained. Units keep their positions: unit 0 and 1 are the
first teacher's, unit s + 1 was added at stage s.

SVHN (Appendix A.5, ``model.arch='svhn_conv'``, ``experiments/jacobian_svhn.py``): the same
procedure with the conv encoder/decoder of :mod:`djax.methods.jacobian_nets` (BatchNorm at
the encoder output at every stage; a frozen teacher uses its running statistics). The
losses and estimators here only see ``decoder(code)`` on flat codes [y, z], so they are the
same for every network; :mod:`djax.methods.jacobian_attributes` uses them for CelebA (§4).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from djax.methods import base, jacobian_nets

ESTIMATORS = ("finite_difference", "jvp", "full", "none")
BN_EPS = 1e-5  # the authors' torch BatchNorm1d eps


# ----------------------------------------------------------------------------- networks

class MLPEncoder(nn.Module):
  """F(784, 256)–ReLU–F(256, 128)–ReLU–F(128, 64)–ReLU–FC(64, k+d) [–BatchNorm]."""
  code_size: int
  hidden: Sequence[int] = (256, 128, 64)
  output_bn: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"Dense_{i}")(h))
    h = nn.Dense(self.code_size, name=f"Dense_{len(self.hidden)}")(h)
    if self.output_bn:
      # affine=False as in the authors' code: y is normalised over the batch, nothing learnt.
      h = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                       momentum=0.9, epsilon=BN_EPS, axis_name=self.axis_name if train else None,
                       name="BatchNorm_0")(h)
    return h


class MLPDecoder(nn.Module):
  """The encoder's mirror image: FC(k+d, 64)–ReLU–F(64, 128)–ReLU–F(128, 256)–ReLU–F(256, 784)
  –tanh. No BatchNorm: a per-sample function, so a batched jvp is per-sample."""
  image_shape: tuple[int, ...]
  hidden: Sequence[int] = (64, 128, 256)

  @nn.compact
  def __call__(self, code):
    h = code
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f"Dense_{i}")(h))
    h = nn.Dense(int(np.prod(self.image_shape)), name=f"Dense_{len(self.hidden)}")(h)
    return jnp.tanh(h).reshape((code.shape[0],) + tuple(self.image_shape))


# ----------------------------------------------------------------------------- losses

def reconstruction_loss(x_hat: jax.Array, x: jax.Array) -> jax.Array:
  """Eq. (8): ||x − x̂_S||², as the mean over pixels and batch (the authors' MSELoss)."""
  return jnp.mean(jnp.square(x_hat - x))


def y_loss(y_s: jax.Array, y_t: jax.Array) -> jax.Array:
  """Eq. (9), first term: ||y_S − y_T||², mean over units and batch."""
  return jnp.mean(jnp.square(y_s - y_t))


def difference_loss(diff_t: jax.Array, diff_s: jax.Array) -> jax.Array:
  """Eq. (9), second term: ||Δ_T − Δ_S||², mean over pixels and batch; Δ are the teacher's
  and the student's changes of output (finite differences or Jacobian-vector products).
  The teacher's side is a constant (no gradient), as in the authors' code."""
  return jnp.mean(jnp.square(jax.lax.stop_gradient(diff_t) - diff_s))


def xcov_loss(y: jax.Array, z: jax.Array, form: str = "squared") -> jax.Array:
  """Eq. (10): Σ_ij C_ij² with C = 1/M Σ_m (z^m − z̄)(y^m − ȳ)ᵀ, the batch cross-covariance.
  ``form='norm'``: the authors' code, ||C||_F (the square root of eq. 10)."""
  m = y.shape[0]
  c = (z - z.mean(0)).T @ (y - y.mean(0)) / m
  sq = jnp.sum(jnp.square(c))
  if form == "squared":
    return sq
  if form == "norm":
    return jnp.sqrt(sq + 1e-12)
  raise ValueError(f"unknown xcov form {form!r}; use 'squared' (eq. 10) or 'norm'")


def _with_z(decoder: Callable, z: jax.Array | None) -> Callable:
  """y -> D(y, z): the decoder as a function of the specified part only."""
  if z is None or z.shape[-1] == 0:
    return decoder
  return lambda y: decoder(jnp.concatenate([y, z], axis=-1))


def finite_differences(dec_s: Callable, dec_t: Callable, y_s, z_s, y_js, y_t, y_jt,
                       z_t: jax.Array | None = None):
  """The paper's eq. (9) differences: Δ_T = D_T(y_j^T, z^T) − D_T(y^T, z^T),
  Δ_S = D_S(y_j^S, z^S) − D_S(y^S, z^S). Returns (Δ_T, Δ_S).

  ``z_t``: the teacher's own nuisance part, held fixed (CelebA's teacher has d = 2048);
  None for §3's teachers, whose whole code is y. Decoders map flat codes [y, z] to
  outputs of any shape (MLP, conv), so this is network-agnostic."""
  ds = _with_z(dec_s, z_s)
  dt = _with_z(dec_t, z_t) if z_t is not None else dec_t
  return dt(y_jt) - dt(y_t), ds(y_js) - ds(y_s)


def jvp_differences(dec_s: Callable, dec_t: Callable, y_s, z_s, y_js, y_t, y_jt,
                    z_t: jax.Array | None = None):
  """Exact directional derivatives along the same directions as eq. (9):
  Δ_T = J_T(y^T, z^T)[(y_j^T − y^T, 0)], Δ_S = J_S(y^S, z^S)[(y_j^S − y^S, 0)], by
  ``jax.jvp``. The decoders are per-sample, so the batched jvp is each sample's own.
  Returns (Δ_T, Δ_S)."""
  dt = _with_z(dec_t, z_t) if z_t is not None else dec_t
  _, d_t = jax.jvp(dt, (y_t,), (y_jt - y_t,))
  _, d_s = jax.jvp(_with_z(dec_s, z_s), (y_s,), (y_js - y_s,))
  return d_t, d_s


def jacobian_columns(decoder: Callable, y: jax.Array, z: jax.Array | None = None) -> jax.Array:
  """∂D(y, z)/∂y_i for every canonical direction e_i, i < k: k vmapped jvps.
  Returns [k, B, *output] (column i = the per-sample jvp along e_i)."""
  f = _with_z(decoder, z) if z is not None else decoder
  k = y.shape[-1]

  def column(e):
    return jax.jvp(f, (y,), (jnp.broadcast_to(e, y.shape).astype(y.dtype),))[1]

  return jax.vmap(column)(jnp.eye(k, dtype=y.dtype))


def full_jacobian_loss(dec_s: Callable, dec_t: Callable, y_s, z_s, y_t, directions,
                       z_t: jax.Array | None = None) -> jax.Array:
  """Σ_i mean((J_T e_i − J_S e_i)²) · s over all k canonical directions, with
  s = mean_b ||d_b||² / k for the batch's directions d = y_j − y (no gradient): for
  directions with E[d dᵀ] = σ² I, E||(J_T − J_S) d||² = σ² ||J_T − J_S||²_F, so the full
  loss is on the directional estimators' scale and λ_diff means the same for all three."""
  j_t = jacobian_columns(dec_t, y_t, z_t)
  j_s = jacobian_columns(dec_s, y_s, z_s)
  scale = jax.lax.stop_gradient(jnp.mean(jnp.sum(jnp.square(directions), -1)) / y_s.shape[-1])
  per_dir = jnp.mean(jnp.square(jax.lax.stop_gradient(j_t) - j_s),
                     axis=tuple(range(1, j_s.ndim)))
  return scale * jnp.sum(per_dir)


def jacobian_difference_loss(estimator: str, dec_s, dec_t, y_s, z_s, y_js, y_t, y_jt,
                             z_t: jax.Array | None = None):
  """Eq. (9)'s difference term by the named estimator (see the module docstring).
  ``z_t``: the teacher's nuisance part where the teacher has one (held fixed)."""
  if estimator == "finite_difference":
    return difference_loss(*finite_differences(dec_s, dec_t, y_s, z_s, y_js, y_t, y_jt, z_t))
  if estimator == "jvp":
    return difference_loss(*jvp_differences(dec_s, dec_t, y_s, z_s, y_js, y_t, y_jt, z_t))
  if estimator == "full":
    return full_jacobian_loss(dec_s, dec_t, y_s, z_s, y_t, y_js - y_s, z_t)
  if estimator == "none":
    return jnp.zeros((), y_s.dtype)
  raise ValueError(f"unknown Jacobian estimator {estimator!r}; known: {ESTIMATORS}")


# ----------------------------------------------------------------------------- growth

def fold_output_bn(encoder_params, encoder_stats, eps: float = BN_EPS):
  """The encoder with its output BatchNorm (no scale/offset, running statistics) folded
  into the last Dense: W' = W / sqrt(var + eps), b' = (b − mean) / sqrt(var + eps).
  Exactly the eval-mode encoder, without a BatchNorm. jnp: it runs inside the jitted init."""
  p = {k: dict(v) for k, v in encoder_params.items()}
  if not encoder_stats or "BatchNorm_0" not in encoder_stats:
    return p
  bn = encoder_stats["BatchNorm_0"]
  last = sorted(k for k in p if k.startswith("Dense_"))[-1]
  inv = jax.lax.rsqrt(jnp.asarray(bn["var"]) + eps)
  p[last] = {"kernel": jnp.asarray(p[last]["kernel"]) * inv,
             "bias": (jnp.asarray(p[last]["bias"]) - jnp.asarray(bn["mean"])) * inv}
  return p


GROWTH = ("function_preserving", "authors")


def _torch_linear_init(rng, shape, fan_in, dtype):
  """PyTorch's default ``nn.Linear`` init, U(±1/sqrt(fan_in)) (kaiming_uniform, a=sqrt(5))."""
  bound = 1.0 / np.sqrt(fan_in)
  return jax.random.uniform(rng, shape, dtype, -bound, bound)


def grow_params(teacher_ae, rng: jax.Array, new_units: int = 1,
                growth: str = "function_preserving"):
  """The student's initial autoencoder: the teacher's plus ``new_units`` code units appended
  at the end of the code (units keep their positions; the authors prepend, which is the same
  network up to a permutation). Everything not named below is copied.

  ``growth='function_preserving'`` (pass the teacher with its BatchNorm folded in): new
  encoder output columns get a fresh Dense init (LeCun normal, zero bias), so the new unit
  carries information from the start; new decoder input rows are **zero**, so the student's
  output equals the teacher's at initialisation; gradients reach the rows at once.

  ``growth='authors'`` (pass the teacher's raw parameters): the authors' train_student.py.
  Their student has no BatchNorm and copies the teacher's weights around it, unfolded, so the
  first student starts from the teacher's pre-normalisation code; the new encoder column
  (kernel and bias) and the new decoder rows keep PyTorch's default Linear init,
  U(±1/sqrt(fan_in)). The student starts perturbed away from its teacher; only the
  Jacobian supervision (λ_y, λ_diff) pulls it back, which is what Table 1's comparison with
  the unsupervised student measures.
  Returns jax arrays {'encoder': ..., 'decoder': ...}.
  """
  if growth not in GROWTH:
    raise ValueError(f"unknown model.growth {growth!r}; known: {GROWTH}")
  enc = {k: dict(v) for k, v in teacher_ae["encoder"].items()}
  dec = {k: dict(v) for k, v in teacher_ae["decoder"].items()}
  last = sorted(k for k in enc if k.startswith("Dense_"))[-1]
  w, b = jnp.asarray(enc[last]["kernel"]), jnp.asarray(enc[last]["bias"])
  first = sorted(k for k in dec if k.startswith("Dense_"))[0]
  v = jnp.asarray(dec[first]["kernel"])
  k_w, k_b, k_v = jax.random.split(rng, 3)
  if growth == "authors":
    new_w = _torch_linear_init(k_w, (w.shape[0], new_units), w.shape[0], w.dtype)
    new_b = _torch_linear_init(k_b, (new_units,), w.shape[0], b.dtype)
    new_v = _torch_linear_init(k_v, (new_units, v.shape[1]), v.shape[0] + new_units, v.dtype)
  else:
    new_w = nn.initializers.lecun_normal()(k_w, (w.shape[0], new_units), w.dtype)
    new_b = jnp.zeros(new_units, b.dtype)
    new_v = jnp.zeros((new_units, v.shape[1]), v.dtype)
  enc[last] = {"kernel": jnp.concatenate([w, new_w], 1), "bias": jnp.concatenate([b, new_b])}
  dec[first] = {"kernel": jnp.concatenate([v, new_v], 0),
                "bias": jnp.asarray(dec[first]["bias"])}
  return {"encoder": enc, "decoder": dec}


# ----------------------------------------------------------------------------- architectures

class MLPArch:
  """Appendix A.1's MLP. BatchNorm at the first teacher's output only; a student starts from
  its teacher as ``model.growth`` says (:func:`grow_params`)."""
  name = "mlp"

  def __init__(self, model_cfg, image_shape):
    self.image_shape = image_shape
    self.growth = model_cfg.get("growth", "function_preserving") or "function_preserving"
    if self.growth not in GROWTH:
      raise ValueError(f"unknown model.growth {self.growth!r}; known: {GROWTH}")
    self.encoder_hidden = tuple(model_cfg.encoder_hidden)
    self.decoder_hidden = tuple(model_cfg.decoder_hidden)

  def encoder(self, code_size: int, *, is_student: bool, axis_name=None):
    return MLPEncoder(code_size, self.encoder_hidden, output_bn=not is_student,
                      axis_name=axis_name)

  def teacher_encoder(self, k: int):
    return MLPEncoder(k, self.encoder_hidden)  # BatchNorm folded in

  def decoder(self, code_size: int):
    del code_size
    return MLPDecoder(self.image_shape, self.decoder_hidden)

  def frozen(self, ae, enc_stats):
    """(params, stats) of a finished stage as a frozen teacher."""
    return {"encoder": fold_output_bn(ae["encoder"], enc_stats), "decoder": ae["decoder"]}, {}

  def grow(self, ae, enc_stats, rng, new_units: int):
    """From the previous stage's raw (params, encoder statistics)."""
    if self.growth == "function_preserving":
      ae = {"encoder": fold_output_bn(ae["encoder"], enc_stats), "decoder": ae["decoder"]}
    return grow_params(ae, rng, new_units, self.growth), {}

  def decoder_code_size(self, decoder_params) -> int:
    return int(np.shape(decoder_params["Dense_0"]["kernel"])[0])


class SVHNArch:
  """Appendix A.5's conv net (:mod:`djax.methods.jacobian_nets`): BatchNorm at the encoder
  output at every stage, so a frozen teacher keeps its running statistics (eval mode)."""
  name = "svhn_conv"

  def __init__(self, model_cfg, image_shape):
    self.image_shape = image_shape
    self.encoder_channels = tuple(model_cfg.get("encoder_channels", (64, 128, 256)))
    self.decoder_channels = tuple(model_cfg.get("decoder_channels", (256, 128, 64)))

  def encoder(self, code_size: int, *, is_student: bool, axis_name=None):
    del is_student
    return jacobian_nets.SVHNEncoder(code_size, self.encoder_channels, output_bn=True,
                                     axis_name=axis_name)

  def teacher_encoder(self, k: int):
    return jacobian_nets.SVHNEncoder(k, self.encoder_channels, output_bn=True)

  def decoder(self, code_size: int):
    del code_size
    return jacobian_nets.SVHNDecoder(self.image_shape, self.decoder_channels)

  def frozen(self, ae, enc_stats):
    return {"encoder": ae["encoder"], "decoder": ae["decoder"]}, dict(enc_stats or {})

  def grow(self, ae, enc_stats, rng, new_units: int):
    """From the previous stage's raw (params, encoder statistics)."""
    return jacobian_nets.grow_svhn(ae, enc_stats, rng, new_units)

  def decoder_code_size(self, decoder_params) -> int:
    return int(np.shape(decoder_params["deconv0"]["kernel"])[-2])


ARCHS = {"mlp": MLPArch, "svhn_conv": SVHNArch}


def teacher_student_configs(config):
  """(stage, plain config, evaluated) for stage 0 (the teacher) and each of
  ``stages.num_students`` students: a copy of ``config`` without ``stages``, with
  ``model.stage`` set; ``evaluated``: the stage is one of ``stages.eval_stages``."""
  st = config.stages
  n = 1 + int(st.num_students)
  evals = {s % n for s in st.get("eval_stages", (0, -1))}
  for stage in range(n):
    c = ml_collections.ConfigDict(config.to_dict())
    del c["stages"]
    c.model.stage = stage
    yield stage, c, stage in evals


def _percent(x) -> str:
  return "" if x is None else f"{100 * x:.1f} %"


# ----------------------------------------------------------------------------- method

class JacobianSupervision(base.Method):
  """Teacher (stage 0) or student (stage ≥ 1) of Lezama's progressive procedure (§3):
  MNIST with the MLP (``model.arch='mlp'``, the default), SVHN with the conv net of A.5
  (``model.arch='svhn_conv'``).

  State: ``params['ae']`` (trained), ``params['teacher']`` (students: the frozen previous
  stage), ``batch_stats['encoder']`` and, where the teacher's encoder has BatchNorm
  statistics (SVHN), ``batch_stats['teacher']`` (never updated).
  """

  groups = ("ae",)

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = base.AXIS):
    super().__init__(config, axis_name)
    m = config.model
    self.loss = config.loss
    self.stage = int(m.get("stage", 0))
    self.code_size = int(m.code_size)
    self.is_student = self.stage > 0
    # Students: y = the teacher's whole code (k = code_size − new_units), z = the new units.
    self.new_units = int(m.get("new_units", 1)) if self.is_student else 0
    self.k = self.code_size - self.new_units
    self.estimator = self.loss.estimator
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"unknown loss.estimator {self.estimator!r}; known: {ESTIMATORS}")
    size = config.data.image_size
    channels = int(config.data.get("channels", 1))
    self.image_shape = (size, size, channels)
    arch = m.get("arch", "mlp") or "mlp"
    if arch not in ARCHS:
      raise ValueError(f"unknown model.arch {arch!r}; known: {sorted(ARCHS)}")
    self.arch = ARCHS[arch](m, self.image_shape)
    self.encoder = self.arch.encoder(self.code_size, is_student=self.is_student,
                                     axis_name=axis_name)
    self.decoder = self.arch.decoder(self.code_size)
    self.t_encoder = self.arch.teacher_encoder(self.k)
    self.t_decoder = self.arch.decoder(self.k)
    self.tx = {"ae": base.make_optimizer(config.optim.ae)}

  def _from_previous(self, previous, rng):
    """(student autoencoder, its encoder stats, frozen teacher, teacher stats) from the
    previous stage's final state."""
    if previous is None:
      raise ValueError(f"stage {self.stage} is a student: it starts from the previous stage's "
                       f"state; run the whole config through python -m djax.main, whose stage "
                       f"runner hands it over")
    ae = previous["params"]["ae"]
    stats = (previous.get("batch_stats") or {}).get("encoder") or {}
    teacher, t_stats = self.arch.frozen(ae, stats)
    got = self.arch.decoder_code_size(teacher["decoder"])
    if got != self.k:
      raise ValueError(f"the previous stage has a code of {got} units; stage {self.stage} "
                       f"expects {self.k}")
    student, enc_stats = self.arch.grow(ae, stats, rng, self.new_units)
    return student, enc_stats, teacher, t_stats

  def init(self, rng: jax.Array, batch: Mapping[str, Any], previous=None) -> base.TrainState:
    x = batch["image"]
    k_enc, k_dec, k_grow, k_state = jax.random.split(rng, 4)
    if self.is_student:
      ae, enc_stats, teacher, t_stats = self._from_previous(previous, k_grow)
      params = {"ae": ae, "teacher": jax.tree_util.tree_map(jnp.asarray, teacher)}
      stats = {"encoder": enc_stats}
      if t_stats:
        stats["teacher"] = jax.tree_util.tree_map(jnp.asarray, t_stats)
    else:
      v_enc = self.encoder.clone(axis_name=None).init(k_enc, x, train=False)
      v_dec = self.decoder.init(k_dec, jnp.zeros((x.shape[0], self.code_size), x.dtype))
      params = {"ae": {"encoder": v_enc["params"], "decoder": v_dec["params"]}}
      stats = {"encoder": v_enc.get("batch_stats", {})}
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                           opt_state={"ae": self.tx["ae"].init(params["ae"])}, rng=k_state)

  # -- networks as pure functions
  def encode_fn(self, ae, stats, x, train=False):
    return base.apply_net(self.encoder, ae["encoder"], stats, x, train)

  def decode_ae(self, ae, code):
    return self.decoder.apply({"params": ae["decoder"]}, code)

  def teacher_encode(self, teacher, x, stats=None):
    variables = {"params": teacher["encoder"], **({"batch_stats": stats} if stats else {})}
    return self.t_encoder.apply(variables, x, train=False)

  def teacher_decode(self, teacher, y):
    return self.t_decoder.apply({"params": teacher["decoder"]}, y)

  # -- training
  def losses(self, ae, teacher, stats, x, xj, train=True, teacher_stats=None):
    """All terms of the stage's objective; returns (total, (losses dict, new stats)).

    A student encodes x and its partner x_j in one pass (one set of BatchNorm batch
    statistics for both, where the encoder has BatchNorm: SVHN)."""
    lo = self.loss
    b = x.shape[0]
    if self.is_student:
      codes, stats = self.encode_fn(ae, stats, jnp.concatenate([x, xj]), train)
      code, code_j = codes[:b], codes[b:]
    else:
      code, stats = self.encode_fn(ae, stats, x, train)
    x_hat = self.decode_ae(ae, code)
    out = {"loss_rec": reconstruction_loss(x_hat, x)}
    total = out["loss_rec"]
    if self.is_student:
      y_s, z_s, y_js = code[:, :self.k], code[:, self.k:], code_j[:, :self.k]
      y_both = self.teacher_encode(teacher, jnp.concatenate([x, xj]), teacher_stats)
      y_t, y_jt = y_both[:b], y_both[b:]
      dec_s = functools.partial(self.decode_ae, ae)
      dec_t = functools.partial(self.teacher_decode, teacher)
      estimator = self.estimator if lo.lambda_diff else "none"
      out["loss_y"] = y_loss(y_s, y_t)
      out["loss_diff"] = jacobian_difference_loss(estimator, dec_s, dec_t, y_s, z_s, y_js, y_t,
                                                  y_jt)
      out["loss_xcov"] = xcov_loss(y_s, z_s, lo.xcov_form)
      total = (total + lo.lambda_y * out["loss_y"] + lo.lambda_diff * out["loss_diff"]
               + lo.lambda_xcov * out["loss_xcov"])
    out["loss"] = total
    return total, (out, stats)

  def train_step(self, state: base.TrainState, batch: dict[str, Any], rng: jax.Array):
    del rng  # deterministic given the batch: the pairs come from the pipeline
    x, xj = batch["image"], batch.get("image2", batch["image"])
    teacher = state.params.get("teacher")
    t_stats = state.batch_stats.get("teacher")
    grads, (losses, stats) = jax.grad(self.losses, has_aux=True)(
        state.params["ae"], teacher, state.batch_stats["encoder"], x, xj, True, t_stats)
    grads = base.pmean(grads, self.axis_name)
    new_ae, new_opt = base.apply_updates(self.tx["ae"], grads, state.opt_state["ae"],
                                         state.params["ae"])
    params = {**state.params, "ae": new_ae}
    return state.replace(step=state.step + 1, params=params,
                         batch_stats={**state.batch_stats, "encoder": stats},
                         opt_state={"ae": new_opt}), base.pmean(losses, self.axis_name)

  # -- stages (§3's progressive growth; djax.stages runs them)
  @classmethod
  def stages(cls, config, steps_per_epoch: int) -> list[base.Stage]:
    """Stage 0 the teacher (code ``stages.first_code_size``), stage s a student with
    ``model.new_units`` more units, started from stage s − 1 and trained against it."""
    st = config.stages
    out = []
    for stage, c, evaluated in teacher_student_configs(config):
      c.model.code_size = int(st.first_code_size) + stage * int(c.model.new_units)
      epochs = st.teacher_epochs if stage == 0 else st.epochs_per_stage
      c.train.steps = int(epochs) * steps_per_epoch
      # Test MSE on every stage; swap success (both readings of Table 1's protocol, see
      # djax.evaluation's swap_labels) on the stages Table 1 reports.
      metrics = ["reconstruction_mse"]
      if evaluated:
        metrics += list(st.get("metrics", ("swap_success", "swap_success_true")))
      c.eval.metrics = tuple(metrics)
      c.eval.swap_dims = st.swap_dims
      out.append(base.Stage(name=f"stage_{stage:02d}", config=c, from_previous=stage > 0,
                            description=f"code size {c.model.code_size}"))
    return out

  @classmethod
  def stage_row(cls, stage: base.Stage, summary) -> dict[str, Any]:
    res = (summary.get("eval") or {}).get("results", {})
    row: dict[str, Any] = {"code_size": int(stage.config.model.code_size)}
    factor = stage.config.eval.factors[0] if stage.config.eval.factors else None
    if "reconstruction_mse" in res:
      row["test_mse"] = float(res["reconstruction_mse"]["mse"])
    for name, key in (("swap_success", "swap_success"), ("swap_success_true",
                                                          "swap_success_true")):
      if name in res and factor is not None:
        row[key] = float(res[name]["best"][factor])
    return row

  @classmethod
  def stage_table(cls, rows) -> str:
    lines = ["| stage | code (k+d) | swap success (authors' code) | swap success (true labels) "
             "| test MSE | s/step |", "|---|---|---|---|---|---|"]
    for r in rows:
      sps, mse = r.get("seconds_per_step"), r.get("test_mse")
      lines.append(f"| {r['stage']} | {r.get('code_size')} | {_percent(r.get('swap_success'))} | "
                   f"{_percent(r.get('swap_success_true'))} | "
                   f"{'' if mse is None else f'{mse:.4f}'} | "
                   f"{'' if sps is None else f'{sps * 1e3:.2f} ms'} |")
    return "\n".join(lines) + "\n"

  @classmethod
  def variant_table(cls, config, results) -> str:
    """The estimator ablation (``config.variants``): the teacher, then each variant's last
    student; the compiled step's cost from :func:`djax.stages.measure_step`."""
    teacher = next(iter(results.values()))["rows"][0]
    d = int(config.stages.num_students)
    lines = [f"| model | estimator | swap success, authors' code (units 0:2) | "
             f"swap success, true labels | test MSE | s/step (d={d}) | step memory | "
             f"train s/step |", "|---|---|---|---|---|---|---|---|"]
    lines.append(f"| teacher (k=2, d=0) | – | {_percent(teacher.get('swap_success'))} | "
                 f"{_percent(teacher.get('swap_success_true'))} | {teacher['test_mse']:.4f} | "
                 f"| | {1e3 * teacher.get('seconds_per_step', float('nan')):.2f} ms |")
    for name, r in results.items():
      last = r["rows"][-1]
      spec = dict(config.variants[name].get("loss", {}))
      lam = spec.get("lambda_diff", config.loss.lambda_diff)
      est = spec.get("estimator", config.loss.estimator) if lam else "none (xcov only)"
      cost = r.get("cost", {})
      mem = cost.get("total_bytes")
      lines.append(
          f"| {name} (d={last['code_size'] - 2}) | {est} | "
          f"{_percent(last.get('swap_success'))} | {_percent(last.get('swap_success_true'))} | "
          f"{last['test_mse']:.4f} | {1e3 * cost.get('seconds_per_step', float('nan')):.2f} ms | "
          f"{'' if mem is None else f'{mem / 2**20:.1f} MiB'} | "
          f"{1e3 * last.get('seconds_per_step', float('nan')):.2f} ms |")
    return "\n".join(lines) + "\n"

  # -- evaluation: pure array functions
  def encode(self, params, stats, images: jax.Array) -> jax.Array:
    """The whole code (y, z) in eval mode: [B, code_size]; units 0, 1 are the first teacher's."""
    return self.encode_fn(params["ae"], stats["encoder"], images, False)[0]

  def decode(self, params, stats, codes: jax.Array) -> jax.Array:
    del stats
    return self.decode_ae(params["ae"], codes)

  def reconstruct(self, params, stats, images):
    return self.decode(params, stats, self.encode(params, stats, images))

  def traversal_grid(self, params, stats, image: jax.Array, units=(0, 1), n: int = 10,
                     lim: float = 2.0) -> jax.Array:
    """Fig. 1: the image's code with units ``units`` set on an n × n grid over [−lim, lim]²
    (the authors' range), decoded: [n, n, H, W, C]."""
    code = self.encode(params, stats, image[None])[0]
    v = jnp.linspace(-lim, lim, n)
    a, b = jnp.meshgrid(v, v, indexing="ij")
    codes = jnp.broadcast_to(code, (n * n, code.shape[0]))
    codes = codes.at[:, units[0]].set(a.reshape(-1)).at[:, units[1]].set(b.reshape(-1))
    return self.decode(params, stats, codes).reshape((n, n) + self.image_shape)

  def unit_traversal(self, params, stats, images: jax.Array, unit: int, n: int = 10,
                     lim: float = 2.0) -> jax.Array:
    """Fig. 2: one unit swept over [−lim, lim] for each image, the rest fixed: [R, n, ...]."""
    codes = self.encode(params, stats, images)
    v = jnp.linspace(-lim, lim, n)
    swept = jnp.repeat(codes, n, axis=0).at[:, unit].set(jnp.tile(v, images.shape[0]))
    return self.decode(params, stats, swept).reshape((images.shape[0], n) + self.image_shape)

  def eval_images(self, params, stats, images: jax.Array, n: int = 8) -> dict[str, jax.Array]:
    n = min(n, images.shape[0])
    out = {"reconstruction": jnp.stack([images[:n], self.reconstruct(params, stats, images[:n])]),
           "traverse_y01": self.traversal_grid(params, stats, images[0])}
    if self.is_student:
      out[f"traverse_unit{self.code_size - 1}"] = self.unit_traversal(
          params, stats, images[:3], self.code_size - 1)
    return out
