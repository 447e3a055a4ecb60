"""Samplers: which examples go together in a batch. Pure, seeded numpy functions.

Every function takes the indices of a batch's anchors (``anchors``, int [B]) and a
``numpy.random.Generator`` and returns indices into the same split; nothing depends on
state, so a batch is still a pure function of (seed, step) (``step_rng``).

* ``epoch_batch_indices``: the shuffled stream itself (epoch e's order is a permutation
  seeded by (seed, e, stream); the last partial batch is dropped).
* ``random_other``: a uniformly drawn example other than the anchor (Lezama's (x, x_j)).
* ``LabelIndex.same`` / ``.different`` / ``.same_or_different``: a partner sharing / not
  sharing the anchor's label (Mathieu et al.; Hu et al.'s paired variants).
* ``triplets``: Mathieu et al.'s Algorithm 1 triplets (x1, x1' same label, x2 other label).
* ``labelled_mask``: which examples keep their label in semi-supervised training (Zheng &
  Sun eq. 11): a fixed, class-stratified fraction.

Ruiz et al.'s two streams (an unlabelled batch and a reference batch each step) are two
``epoch_batch_indices`` streams over two splits; ``Pipeline(pairing='reference')`` does it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

_SAMPLER_STREAM = 0x5A3D  # keeps sampler draws apart from the epoch permutations' seeds


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
  """The generator of a step's sampler draws: a pure function of (seed, step, stream)."""
  return np.random.default_rng([seed, step, _SAMPLER_STREAM, stream])


def epoch_batch_indices(n: int, batch_size: int, seed: int, step: int, stream: int = 0):
  """Indices of batch ``step`` of a stream over n examples: epoch e = step // (n // B) reads
  a permutation seeded by (seed, e, stream); the last partial batch of an epoch is dropped."""
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"{n} examples are fewer than one batch of {batch_size}")
  epoch, pos = divmod(step, steps_per_epoch)
  order = np.random.default_rng([seed, epoch, stream]).permutation(n)
  return order[pos * batch_size:(pos + 1) * batch_size]


def random_other(n: int, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """For each anchor i, an index drawn uniformly from {0..n-1} \\ {i}."""
  anchors = np.asarray(anchors, np.int64)
  if n < 2:
    raise ValueError("random_other needs at least 2 examples")
  r = rng.integers(0, n - 1, size=anchors.shape)
  return r + (r >= anchors)


class LabelIndex:
  """Examples grouped by label, for drawing partners with the same or another label.

  ``order`` sorts the examples by label (stably), so class c occupies positions
  ``[start[c], start[c] + count[c])``; ``rank[i]`` is example i's position in its class.
  A same-label partner is drawn uniformly from the other members of the class (the anchor
  itself only if it is alone in its class); a different-label partner uniformly from all
  examples of other classes.
  """

  def __init__(self, labels):
    labels = np.asarray(labels)
    if labels.ndim != 1:
      raise ValueError(f"labels must be [N], got shape {labels.shape}")
    self.labels = labels
    self.classes, cls, self.count = np.unique(labels, return_inverse=True, return_counts=True)
    self.cls = cls.reshape(-1)  # class id (0..C-1) of every example
    self.order = np.argsort(self.cls, kind="stable")
    self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
    self.rank = np.empty(len(labels), np.int64)
    self.rank[self.order] = np.arange(len(labels)) - self.start[self.cls[self.order]]

  def __len__(self) -> int:
    return len(self.labels)

  def same(self, anchors, rng: np.random.Generator) -> np.ndarray:
    anchors = np.asarray(anchors, np.int64)
    c = self.cls[anchors]
    others = self.count[c] - 1
    r = np.floor(rng.random(anchors.shape) * np.maximum(others, 1)).astype(np.int64)
    r = np.where(others > 0, r + (r >= self.rank[anchors]), 0)  # skip the anchor itself
    return self.order[self.start[c] + r]

  def different(self, anchors, rng: np.random.Generator) -> np.ndarray:
    anchors = np.asarray(anchors, np.int64)
    if len(self.classes) < 2:
      raise ValueError("different-label partners need at least two classes")
    c = self.cls[anchors]
    outside = len(self.labels) - self.count[c]
    r = np.floor(rng.random(anchors.shape) * outside).astype(np.int64)
    pos = np.where(r < self.start[c], r, r + self.count[c])  # jump over the anchor's class
    return self.order[pos]

  def same_or_different(self, anchors, rng: np.random.Generator):
    """(partner, same): each anchor's partner shares its label where ``same`` is True."""
    same = rng.random(np.shape(anchors)) < 0.5
    return np.where(same, self.same(anchors, rng), self.different(anchors, rng)), same


def triplets(index: LabelIndex, anchors, rng: np.random.Generator):
  """Mathieu et al. (2016), Algorithm 1: for anchors x1, (x1', x2) with x1' sharing x1's
  label and x2 of another label."""
  return index.same(anchors, rng), index.different(anchors, rng)


def labelled_mask(labels, fraction: float, seed: int) -> np.ndarray:
  """bool [N]: the examples whose label semi-supervised training may use.

  In every class, ``round(fraction * n_c)`` examples (at least one when fraction > 0),
  chosen by a permutation seeded by (seed, class index): the same examples every epoch.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"labelled_fraction must be in [0, 1], got {fraction}")
  index = LabelIndex(labels)
  mask = np.zeros(len(index), bool)
  for c in range(len(index.classes)):
    members = index.order[index.start[c]:index.start[c] + index.count[c]]
    k = int(round(fraction * len(members)))
    if fraction > 0:
      k = max(k, 1)
    chosen = np.random.default_rng([seed, 0x1AB, c]).permutation(len(members))[:k]
    mask[members[chosen]] = True
  return mask


# ----------------------------------------------------------------------------- pairings
# A pairing is what the Pipeline adds to a batch beside its anchors: a function of
# (pipeline, the global batch's anchor indices, step, rng) returning {suffix: (source,
# indices)} of partners (added as ``<input key><suffix>`` and ``labels<suffix>``) and extra
# per-example arrays, all for the global batch. A new pairing is one function and one entry
# in PAIRINGS.

@dataclasses.dataclass(frozen=True)
class Pairing:
  partners: Callable  # (pipeline, idx, step, rng) -> ({suffix: (source, indices)}, extras)
  doc: str
  needs_labels: bool = False
  partner_labels: bool = True  # whether partners carry ``labels<suffix>``


def _random(p, idx, step, rng):
  del idx, rng
  return {"2": (p.source, p.global_indices(step, 1))}, {}


def _random_other(p, idx, step, rng):
  return {"2": (p.source, random_other(len(p.source), idx, rng))}, {}


def _same_label(p, idx, step, rng):
  return {"2": (p.source, p.label_index.same(idx, rng))}, {}


def _different_label(p, idx, step, rng):
  return {"2": (p.source, p.label_index.different(idx, rng))}, {}


def _same_or_different(p, idx, step, rng):
  partner, same = p.label_index.same_or_different(idx, rng)
  return {"2": (p.source, partner)}, {"same": same}


def _triplet(p, idx, step, rng):
  same, other = triplets(p.label_index, idx, rng)
  return {"_same": (p.source, same), "_other": (p.source, other)}, {}


def _reference(p, idx, step, rng):
  del idx, rng
  if p.reference is None:
    raise ValueError("pairing='reference' needs the reference split (reference=source)")
  ref = epoch_batch_indices(len(p.reference), p.batch_size, p.seed, step, stream=2)
  return {"_ref": (p.reference, ref)}, {}


PAIRINGS: dict = {
    None: Pairing(lambda p, idx, step, rng: ({}, {}), "nothing"),
    "random": Pairing(_random, "image2: an independently shuffled second stream (Hu et al.)",
                      partner_labels=False),
    "random_other": Pairing(_random_other,
                            "image2, labels2: a uniformly drawn different example (Lezama)"),
    "same_label": Pairing(_same_label, "image2, labels2: an example with the same label "
                          "(Mathieu et al.)", needs_labels=True),
    "different_label": Pairing(_different_label, "image2, labels2: an example with another "
                               "label", needs_labels=True),
    "same_or_different": Pairing(_same_or_different, "image2, labels2, same: either, each "
                                 "with probability 1/2", needs_labels=True),
    "triplet": Pairing(_triplet, "image_same, image_other (+ labels_*): Mathieu et al.'s x1', "
                       "x2", needs_labels=True),
    "reference": Pairing(_reference, "image_ref, labels_ref: a batch of the reference split "
                         "(Ruiz et al.)"),
}
