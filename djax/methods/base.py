"""The method contract: what every method provides and what it may declare.

A method is a class with pure functions only (no I/O: the trainer, the stage runner and the
evaluator read and write files and hand a method arrays). Subclass :class:`Method`.

Required (the trainer and the evaluator call them):

* ``init(rng, batch, previous=None) -> TrainState``: parameters for one device; ``previous``
  is the previous stage's final state (nested dicts of arrays), passed in as data by the
  stage runner, never read from disk by the method;
* ``train_step(state, batch, rng) -> (state, metrics)``: runs inside ``jax.pmap`` with the
  device axis :data:`AXIS`; it averages gradients and metrics over that axis itself;
* ``encode(params, stats, inputs) -> code [B, D]``.

Optional capabilities, asked for by name (:func:`capabilities`; a metric lists those it
needs and a config asking for a metric the method cannot support fails before training):

* ``decode(params, stats, code) -> inputs``                      capability ``"decode"``
* ``sample(params, stats, rng, n, condition=None) -> inputs``    capability ``"sample"``
* ``encode_sample(params, stats, rng, inputs) -> code [B, D]``: ``encode``'s layout with
  every stochastic part drawn from its posterior (z ~ q(z | x)) instead of its mean: what
  the decoder is given, where a probe on the mean also reads directions far below the
  posterior's noise                                                  ``"encode_sample"``
* ``code_parts() -> {name: slice}``: named parts of the code (chunks, s/z), used by
  retrieval per part, probes per part, swap grids and generation     ``"code_parts"``
* ``attribute_units() -> {factor: unit}``                        ``"attribute_units"``
* ``eval_images(params, stats, inputs) -> {name: grid}``: grids to look at  ``"eval_images"``
* ``stages(config, steps_per_epoch) -> [Stage]`` (classmethod): a run in several stages,
  each starting from the previous one's state (``djax.stages`` runs them)   ``"stages"``
* ``stage_row(stage, summary) -> dict``, ``stage_table(rows) -> str`` and
  ``variant_table(config, results) -> str`` (classmethods): what a finished stage adds to
  the run's table, that table, and the table of a ``config.variants`` run, as markdown.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

AXIS = "batch"  # the pmap axis: gradients, metrics and BatchNorm statistics average over it


@flax.struct.dataclass
class TrainState:
  """All that a run needs to continue: one optax state per network group.

  ``params`` and ``opt_state`` are keyed by group (e.g. 'ae', 'dsc', 'cls'); a group's
  optimiser updates exactly that group's parameters. ``batch_stats`` is keyed by network.
  ``rng`` is the run's base key; step keys are ``fold_in(rng, step)`` so a resumed run draws
  the same randomness as an uninterrupted one.
  """
  step: jax.Array
  params: Mapping[str, Any]
  batch_stats: Mapping[str, Any]
  opt_state: Mapping[str, Any]
  rng: jax.Array


OPTIONAL = ("decode", "sample", "encode_sample", "code_parts", "attribute_units", "eval_images", "stages")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a staged run: its plain single-stage config, its directory name, and
  whether its parameters start from the previous stage's final state."""
  name: str
  config: ml_collections.ConfigDict
  from_previous: bool = False
  description: str = ""


class Method:
  """Base class of every method (see the module docstring for the contract).

  ``groups`` names the network groups; each has its own optax state in ``opt_state``.
  """

  groups: tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict, axis_name: str | None = AXIS):
    self.config = config
    self.axis_name = axis_name

  # -- required
  def init(self, rng: jax.Array, batch: Mapping[str, Any], previous=None) -> TrainState:
    raise NotImplementedError

  def train_step(self, state: TrainState, batch: Mapping[str, Any], rng: jax.Array):
    raise NotImplementedError

  def encode(self, params, stats, inputs: jax.Array) -> jax.Array:
    raise NotImplementedError

  # -- optional: a subclass that defines one of these has the capability of that name
  decode: Callable | None = None
  sample: Callable | None = None
  encode_sample: Callable | None = None
  code_parts: Callable | None = None
  attribute_units: Callable | None = None
  eval_images: Callable | None = None
  stages: Callable | None = None

  @classmethod
  def stage_row(cls, stage: Stage, summary: Mapping[str, Any]) -> dict[str, Any]:
    del stage, summary
    return {}

  @classmethod
  def stage_table(cls, rows: Sequence[Mapping[str, Any]]) -> str:
    del rows
    return ""

  @classmethod
  def variant_table(cls, config, results: Mapping[str, Any]) -> str:
    """The table of a ``config.variants`` run (markdown; '' for none)."""
    del config, results
    return ""


def capabilities(method) -> frozenset[str]:
  """The optional capabilities a method (instance or class) declares."""
  return frozenset(c for c in OPTIONAL if getattr(method, c, None) is not None)


def require(method, needs: Sequence[str], what: str) -> None:
  """A one-line error naming ``what`` and the capabilities the method lacks."""
  missing = [c for c in needs if c not in capabilities(method)]
  if missing:
    name = method.__name__ if isinstance(method, type) else type(method).__name__
    raise ValueError(f"{what} needs the method's {', '.join(repr(m) for m in missing)} "
                     f"capability, which {name} does not declare; remove it from the config "
                     f"or use a method that has it")


def code_part_columns(method, code_size: int) -> dict[str, np.ndarray]:
  """Name -> column indices of each declared part of the code."""
  cols = np.arange(code_size)
  return {name: cols[part] for name, part in method.code_parts().items()}


def chunk_parts(n_chunks: int, chunk_size: int) -> dict[str, slice]:
  """``code_parts`` of a code made of equal chunks: {'chunk 0': slice(0, d), ...}."""
  return {f"chunk {c}": slice(c * chunk_size, (c + 1) * chunk_size) for c in range(n_chunks)}


def apply_net(net, params, stats, x, train: bool):
  """(output, new BatchNorm statistics) of a flax network; statistics update only in train
  mode and only where the network has them."""
  variables = {"params": params, **({"batch_stats": stats} if stats else {})}
  if train and stats:
    y, new = net.apply(variables, x, train=True, mutable=["batch_stats"])
    return y, new["batch_stats"]
  return net.apply(variables, x, train=train), stats


def update_groups(tx: Mapping[str, optax.GradientTransformation], grads, opt_state, params,
                  groups: Sequence[str] | None = None):
  """One optax update per network group: (new params, new opt states), keyed by group.
  Groups not in ``groups`` (e.g. a frozen teacher) are kept as they are."""
  groups = tuple(tx) if groups is None else tuple(groups)
  new_params, new_opt = dict(params), dict(opt_state)
  for g in groups:
    new_params[g], new_opt[g] = apply_updates(tx[g], grads[g], opt_state[g], params[g])
  return new_params, new_opt


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(W) with an optional staircase decay and gradient clipping, from a config block."""
  lr = cfg.learning_rate
  if cfg.get("decay_every", 0):
    lr = optax.exponential_decay(cfg.learning_rate, cfg.decay_every, cfg.get("decay_rate", 0.9),
                                 staircase=True)
  chain = []
  if cfg.get("clip_norm", 0):
    chain.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.get("weight_decay", 0):
    chain.append(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
  else:
    chain.append(optax.adam(lr, b1=cfg.b1, b2=cfg.b2))
  return optax.chain(*chain)


def example_keys(rng: jax.Array, local_batch: int, axis_name: str | None = AXIS) -> jax.Array:
  """One key per example, indexed by the example's position in the *global* batch.

  Folding the global index into the step key makes every example's randomness (masks,
  noise) independent of how the batch is split over devices, so a 4-device run draws what
  a 1-device run draws.
  """
  offset = jax.lax.axis_index(axis_name) * local_batch if axis_name else 0
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(offset + jnp.arange(local_batch))


def pmean(tree, axis_name: str | None = AXIS):
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def apply_updates(tx: optax.GradientTransformation, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def sigmoid_bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Elementwise binary cross-entropy on logits, numerically stable."""
  return optax.sigmoid_binary_cross_entropy(logits, targets)
