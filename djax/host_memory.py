"""Keep host memory that XLA:CPU frees, instead of giving it back to the OS every step.

Why: an XLA:CPU executable gets its temporary buffers as one allocation per run (1.48 GB
for the mixing method's paper-config step). glibc serves it with ``mmap`` and returns it
with ``munmap``, so every step touches 360,000 fresh pages: 0.67 s of kernel time per
step, about 4-7 % of the wall time on 2 cores (``python -m benchmarks.train_step
--host_memory=default`` against ``retain``). Worker threads' allocations land in glibc's
per-thread arenas, which fall back to ``mmap`` for large blocks whatever ``M_MMAP_MAX``
says, hence the single arena. Newer XLA:CPU (jax 0.12) fuses more of a step into YNNPACK
fusions, whose runtime allocates their large intermediates itself, with malloc: the same
settings keep those (the mixing method's ``:small`` step, jax 0.12.0.1: ~29,000 page faults
per step by default, none with retain; jax 0.10.2: ~28,000 and none).

:func:`retain` sets, through ``mallopt``: one malloc arena (``M_ARENA_MAX=1``), no ``mmap``
for large blocks (``M_MMAP_MAX=0``) and no trimming of the heap's top
(``M_TRIM_THRESHOLD``). Freed blocks are then reused by the next step: no page faults
once the heap has its working size (after ~20 steps), at the price of a higher peak
resident memory (paper-config mixing step: 4.0 -> 5.1 GB). It must run before the backend
starts its threads (before the first jax computation); ``djax.main`` calls it first thing.
glibc only: elsewhere, or once the backend is up, it changes nothing and says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge
    return bool(getattr(xla_bridge, "_backends", {}))
  except Exception:  # private API moved: assume the worst, the settings still apply
    return False


def _arena_count(libc) -> int:
  """How many malloc arenas exist (glibc's malloc_info XML has one <heap> per arena)."""
  import os
  import tempfile
  fd, path = tempfile.mkstemp(suffix=".xml")
  os.close(fd)
  try:
    libc.fopen.restype = ctypes.c_void_p
    stream = libc.fopen(path.encode(), b"w")
    if not stream:
      return 1
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    with open(path) as f:
      return max(1, f.read().count("<heap nr="))
  finally:
    os.unlink(path)


def retain() -> str:
  """Applies the settings above; returns what happened, in words (for the log)."""
  if not sys.platform.startswith("linux"):
    return f"host memory: allocator left as is ({sys.platform} is not glibc)"
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    libc.gnu_get_libc_version  # noqa: B018 (musl has no such symbol)
  except (OSError, AttributeError):
    return "host memory: allocator left as is (not glibc)"
  if _backend_started():
    return ("host memory: allocator left as is (the jax backend has already started its "
            "threads; call djax.host_memory.retain() before the first jax computation)")
  ok = all(mallopt(opt, val) == 1 for opt, val in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  if not ok:
    return "host memory: glibc refused a mallopt setting; some may not apply"
  arenas = _arena_count(libc)
  if arenas > 1:  # threads that already own an arena keep it, and share it with new ones
    return (f"host memory: glibc set to keep freed memory, but {arenas} malloc arenas exist "
            "already: threads started before retain() may still map and unmap their large "
            "blocks (call it before importing libraries that start threads)")
  return "host memory: glibc keeps freed memory for reuse (one arena, no mmap, no trim)"
