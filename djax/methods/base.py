"""What every method shares: its training state, optimisers and per-example randomness.

A method is a class with pure functions only (no I/O):

* ``init(rng, batch) -> TrainState`` builds parameters for one device;
* ``train_step(state, batch, rng) -> (state, metrics)`` runs inside ``jax.pmap`` with the
  device axis ``AXIS``: it averages gradients and metrics over that axis itself;
* ``encode(params, stats, images)`` and ``eval_images(params, stats, images)`` tell the
  generic evaluator what to score and draw.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
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
