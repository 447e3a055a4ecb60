"""Atomic writes and JSON conversion: the one home for both.

A file written here is whole or absent: it is written beside its target and renamed over
it, so a run killed mid-write leaves the previous version (or nothing), never half a file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def jsonable(x: Any) -> Any:
  """numpy/jax arrays and scalars as lists and Python numbers, recursively."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
    return np.asarray(x).tolist()
  return x


def write_bytes(path: str, data: bytes) -> str:
  """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename, directory fsync);
  a failed write leaves no temporary file behind."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise
  try:  # the rename itself reaches the disk with the directory
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      os.fsync(dfd)
    finally:
      os.close(dfd)
  except OSError:
    pass
  return path


def write_text(path: str, text: str) -> str:
  return write_bytes(path, text.encode())


def write_json(path: str, obj: Any) -> str:
  return write_text(path, json.dumps(jsonable(obj), indent=2))


def read_json(path: str, default: Any = None) -> Any:
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)
