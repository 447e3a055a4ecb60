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


def write_text(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return path


def write_json(path: str, obj: Any) -> str:
  return write_text(path, json.dumps(jsonable(obj), indent=2))


def read_json(path: str, default: Any = None) -> Any:
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)
