"""Checkpoints with orbax: the whole TrainState (params, batch statistics, every optax state,
step and RNG key) plus the run's config as JSON.

orbax writes each step into a temporary directory and renames it when complete, so a
checkpoint directory that exists is whole: a run killed while saving leaves the previous
checkpoint as the latest. Saves are synchronous (the trainer decides when to pay for them).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True),
        item_names=("state", "config"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, config: dict) -> None:
    state = jax.device_get(state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)), force=True)
    self.manager.wait_until_finished()

  def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure (and dtypes) of ``state_like``; latest step by default."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree_util.tree_map(
        lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), jax.device_get(state_like))
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore()))
    return restored["state"], restored["config"]

  def restore_raw(self, step: int) -> dict:
    """The state saved at ``step`` as nested dicts of numpy arrays, without a target."""
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return out["state"]

  def restore_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    self.manager.close()

