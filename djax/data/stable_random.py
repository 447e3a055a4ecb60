"""Random numbers that are the same on every machine and numpy version.

numpy's ``Generator`` methods may change their algorithms between versions; the bit
generator (PCG64) and ``SeedSequence`` hashing do not. Procedural datasets (styled MNIST's
transform parameters, three moons' points, mnist_5k's split) draw from here, so the same
bytes come out everywhere.
"""

from __future__ import annotations

import numpy as np


def _bits(seed, n: int) -> np.ndarray:
  words = [int(s) for s in np.atleast_1d(seed)]
  return np.random.PCG64(np.random.SeedSequence(words)).random_raw(n)


def uniform(seed, n: int) -> np.ndarray:
  """float64 [n] in [0, 1): the top 53 bits of PCG64 words seeded by ``seed`` (ints)."""
  return (_bits(seed, n) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def integers(seed, n: int, low: int, high: int) -> np.ndarray:
  """int64 [n] uniform in [low, high] (inclusive)."""
  return low + np.floor(uniform(seed, n) * (high - low + 1)).astype(np.int64)


def normal(seed, n: int) -> np.ndarray:
  """float64 [n] standard normal (Box-Muller on ``uniform``)."""
  u = uniform(seed, 2 * n).reshape(2, n)
  return np.sqrt(-2.0 * np.log1p(-u[0])) * np.cos(2.0 * np.pi * u[1])


def permutation(seed, n: int) -> np.ndarray:
  return np.argsort(uniform(seed, n), kind="stable")
