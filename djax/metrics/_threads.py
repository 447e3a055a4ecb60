"""How many threads the metrics' numpy/scipy work may use (results never depend on it)."""

from __future__ import annotations

import os


def n_threads(max_threads: int) -> int:
  """At most ``max_threads``, at most the CPUs this process may run on, and no more than the
  CPUs left idle by other processes (1-minute load average, this one counted as 1): on a
  shared machine whose cores are busy, extra threads only time-slice one core and thrash
  its caches (measured: +15% CPU for DCI on 2 busy cores), while on idle cores two threads
  nearly halve the time."""
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:  # not on every platform
    cpus = os.cpu_count() or 1
  try:
    others = max(0.0, os.getloadavg()[0] - 1.0)
  except (AttributeError, OSError):
    others = 0.0
  return max(1, min(max_threads, cpus, int(cpus - others + 0.5)))
