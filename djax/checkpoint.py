"""Checkpoints with orbax: the whole TrainState (params, batch statistics, every optax state,
step and RNG key) plus the run's config as JSON, each verified when it is read back.

orbax writes each step into a temporary directory and renames it when complete, so a
checkpoint directory that exists is whole: a run killed while saving leaves the previous
checkpoint as the latest. Saves are synchronous (the trainer decides when to pay for them).

What orbax does not catch, djax does:

* Integrity. Every step carries a third orbax item, ``integrity``: the crc32, dtype and shape
  of every array (keyed by its path in the tree) and of the config, written in the same
  temporary directory, so it commits with the step. After the rename djax also lists every
  file of the step with its size and crc32 in ``<step>/djax_files.json``. A restore checks the
  files, then the arrays it decoded; garbage inside a zstd frame that orbax decodes without
  complaint is caught by the second check.
* Fallback. A step that fails either check is moved to ``corrupt/<step>-<reason>`` (never
  deleted), a warning names the step, the file and what was wrong, and the restore goes on to
  the next older step.
* Rotation. orbax keeps every step (``max_to_keep=None``); djax removes the old ones itself,
  and never the step last marked good (``mark_good``) nor a protected one (``protect``).
* Write errors. A full disk, a read-only file system or missing permissions during a save
  raise ``CheckpointWriteError``, one line naming the path and the fix; the half-written
  temporary directory is removed and the previous checkpoints stay as they were.

Checkpoints written before the integrity item existed restore as before, unverified.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import shutil
import sys
import time
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from djax import fileio

log = logging.getLogger(__name__)

FILES_NAME = "djax_files.json"
KEEP_NAME = "djax_keep.json"
CORRUPT_DIR = "corrupt"
_FORMAT = 1
_CHUNK = 1 << 24


class CheckpointError(Exception):
  """A checkpoint that cannot be read or written; the message is one line."""


class CheckpointCorruptError(CheckpointError, ValueError):
  """A damaged step (``step``, ``path``, ``reason``), or no undamaged step left."""

  def __init__(self, message: str, step: int | None = None, path: str | None = None,
               reason: str | None = None, slug: str = "damaged"):
    super().__init__(message)
    self.step, self.path, self.reason, self.slug = step, path, reason, slug


class CheckpointMismatchError(CheckpointError, ValueError):
  """The checkpoint is intact but holds a different tree than the one asked for."""


class CheckpointWriteError(CheckpointError, OSError):
  """A save failed for lack of space or permission; the previous checkpoints are intact."""


# -- small helpers ---------------------------------------------------------------------------

def _key_name(k) -> str:
  # A format of our own, not keystr: it must not change with jax versions, or a checkpoint
  # written under one would fail its check under another.
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _flat(tree) -> list[tuple[str, Any]]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [("/".join(_key_name(k) for k in path), leaf) for path, leaf in leaves]


def _crc_array(x: np.ndarray) -> int:
  flat = np.ascontiguousarray(x).reshape(-1).view(np.uint8)
  crc = 0
  for i in range(0, flat.size, _CHUNK):
    crc = zlib.crc32(flat[i:i + _CHUNK], crc)
  return crc


def _crc_file(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _config_crc(config) -> int:
  return zlib.crc32(json.dumps(config, sort_keys=True).encode())


def _array_record(tree, config) -> dict:
  arrays = {}
  for path, leaf in _flat(tree):
    a = np.asarray(leaf)
    arrays[path] = {"dtype": a.dtype.name, "shape": list(a.shape), "crc32": _crc_array(a)}
  return {"format": _FORMAT, "arrays": arrays, "config_crc32": _config_crc(config)}


_WRITE_ERRNOS = {
    errno.ENOSPC: "free space on that disk or choose another --workdir",
    errno.EDQUOT: "free space (disk quota exceeded) or choose another --workdir",
    errno.EROFS: "choose another --workdir (or remount that disk read-write)",
    errno.EACCES: "fix the directory's permissions or choose another --workdir",
    errno.EPERM: "fix the directory's permissions or choose another --workdir",
}


def _write_errno(e: BaseException) -> int | None:
  """The errno of a write failure, also when tensorstore reports it as a ValueError."""
  while e is not None:
    if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
      return e.errno
    text = str(e)
    for no in _WRITE_ERRNOS:
      if os.strerror(no) in text:
        return no
    e = e.__cause__ or e.__context__
  return None


class _HeldOrbaxErrors(logging.Filter):
  """While an orbax call fails, holds back what its threads print about the failure: an error
  that djax turns into a one-line message should not arrive behind a wall of tracebacks.
  ``release()`` lets them through, for the errors djax passes on as they are."""

  def __init__(self):
    super().__init__()
    self.held: list[tuple[logging.Logger, logging.LogRecord]] = []
    self.loggers = [logging.getLogger("absl"), logging.getLogger("asyncio")]
    self.hook = sys.unraisablehook

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if record.levelno >= logging.ERROR and ("raised an exception" in message
                                            or "exception was never retrieved" in message):
      self.held.append((logging.getLogger(record.name), record))
      return False
    return True

  def _unraisable(self, u) -> None:
    # tensorstore completes the writes and reads still queued after a failure into the event
    # loop orbax has closed by then; each one prints "Event loop is closed".
    if not (isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value)):
      self.hook(u)

  def __enter__(self) -> "_HeldOrbaxErrors":
    for logger in self.loggers:
      logger.addFilter(self)
    sys.unraisablehook = self._unraisable
    return self

  def __exit__(self, *exc) -> None:
    if exc[0] is not None:
      # orbax's failed tasks report themselves when collected: here, while held.
      gc.collect()
    for logger in self.loggers:
      logger.removeFilter(self)
    sys.unraisablehook = self.hook

  def first_lines(self) -> list[str]:
    return [record.getMessage().splitlines()[0] for _, record in self.held]

  def release(self) -> None:
    for logger in self.loggers:
      logger.removeFilter(self)
    for logger, record in self.held:
      logger.handle(record)
    self.held.clear()


def _first_line(e: BaseException, limit: int = 300) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."


# -- the checkpointer ------------------------------------------------------------------------

class Checkpointer:
  """Saves and restores ``(state, config)`` steps in ``directory`` (``WORKDIR/checkpoints``).

  For the trainer:

  * ``state, config, step, quarantined = ckpt.restore_latest_good(state)`` at start (or the
    older ``state, config = ckpt.restore(state)``, which does the same): the newest step that
    passes its checks; damaged ones newer than it are moved to ``corrupt/`` with a warning
    each and listed in ``quarantined`` as ``(step, reason)``. Raises
    ``CheckpointCorruptError`` when steps exist but none is intact, and
    ``CheckpointMismatchError`` when an intact step holds a different tree (a changed
    config): those are not moved.
  * ``ckpt.save(step, state, config)`` then, once the metrics up to ``step`` have been checked
    and are sound, ``ckpt.mark_good(step)``. Rotation keeps the newest ``max_to_keep`` steps
    plus the last step marked good, so a run that goes bad after it and keeps saving never
    rotates that step away. ``mark_good`` is persisted (``djax_keep.json``): it holds across
    restarts until a newer step is marked.
  * ``ckpt.protect(step)`` / ``ckpt.unprotect(step)``: keep a step regardless of rotation.
  * ``save`` and ``mark_good`` raise ``CheckpointWriteError`` (an ``OSError``) when the disk is
    full or not writable; the previous steps are untouched.

  For readers (``djax.evaluate``, a next stage loading its teacher), which move nothing:
  ``restore(state_like, step=N)`` verifies step N and raises ``CheckpointCorruptError``
  naming the file if it is damaged; ``latest_good_step()`` is the newest step whose files
  pass their checks; ``restore_config(step)`` reads a step's config alone;
  ``restore_untargeted(step=None)`` restores a step as saved (nested dicts), verified.

  One process writes a ``checkpoints`` directory at a time: hold ``WorkdirLock(workdir)``
  (re-exported here from ``djax.workdir_lock``) around a run. Damaged steps are moved and old
  ones removed only on process 0.
  """

  def __init__(self, directory: str, max_to_keep: int | None = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self.quarantined: list[tuple[int, str]] = []
    # A reader on a read-only disk has no leftover temporary directories to remove.
    writable = not os.path.isdir(self.directory) or os.access(self.directory, os.W_OK)
    try:
      with _HeldOrbaxErrors() as held:
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False,
                                                 cleanup_tmp_directories=writable),
            item_names=("state", "config", "integrity"))
      for line in held.first_lines():
        log.warning("checkpoints in %s: %s", self.directory, line)
    except OSError as e:
      no = _write_errno(e)
      if no is None:
        raise
      raise CheckpointWriteError(f"cannot use {self.directory} for checkpoints: "
                                 f"{os.strerror(no)}; {_WRITE_ERRNOS[no]}") from e

  # -- listing ------------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _primary(self) -> bool:
    return jax.process_index() == 0

  # -- saving -------------------------------------------------------------------------------

  def save(self, step: int, state: Any, config: dict) -> None:
    state = jax.device_get(state)
    record = _array_record(state, config)
    existed = step in self.manager.all_steps()
    with _HeldOrbaxErrors() as held:
      try:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
            integrity=ocp.args.JsonSave(record)), force=True)
        self.manager.wait_until_finished()
      except Exception as e:
        no = _write_errno(e)
        if not existed:
          self._discard_failed_save(step)
        if no is None:
          held.release()
          raise
        raise self._write_error(step, no, self.directory) from e
    if self._primary():
      self._write_file_list(step)
      self._rotate()

  def _write_error(self, step: int, no: int, path: str) -> CheckpointWriteError:
    latest = self.latest_step()
    kept = (f"the previous checkpoints are intact (latest: step {latest})" if latest is not None
            else "no earlier checkpoint exists")
    return CheckpointWriteError(
        f"could not write checkpoint step {step} to {path}: {os.strerror(no)}; "
        f"{_WRITE_ERRNOS[no]}; {kept}")

  def _discard_failed_save(self, step: int) -> None:
    """Leaves no trace of a failed save that could pass for a step."""
    if not self._primary():
      return
    try:  # orbax's writer threads may still be creating files in the temporary directory
      self.manager.wait_until_finished()
    except Exception:  # noqa: BLE001  the error they report is the one being handled
      pass
    pattern = re.compile(rf"{step}\.orbax-checkpoint-tmp")
    for _ in range(3):
      try:
        names = [n for n in os.listdir(self.directory) if pattern.match(n)]
      except OSError:
        names = []
      if not names:
        break
      for name in names:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      time.sleep(0.05)
    self.manager.reload()
    if step in self.manager.all_steps():
      # Renamed into place, then something after the rename failed: keep it for inspection,
      # out of the way of the next restore.
      self._quarantine(step, "incomplete-save", warn=True,
                       why="the save that wrote it failed after orbax committed it")

  def _write_file_list(self, step: int) -> None:
    # After the rename, so not part of the atomic step: a step without this list (killed just
    # here) still has its array checksums, which restore checks anyway.
    root = self.step_dir(step)
    files = {}
    try:
      for dirpath, _, names in os.walk(root):
        for name in names:
          full = os.path.join(dirpath, name)
          rel = os.path.relpath(full, root)
          if rel == FILES_NAME or rel.startswith(FILES_NAME + ".tmp"):
            continue
          files[rel] = {"size": os.path.getsize(full), "crc32": _crc_file(full)}
      fileio.write_bytes(os.path.join(root, FILES_NAME),
                    json.dumps({"format": _FORMAT, "files": files}, sort_keys=True).encode())
    except OSError as e:
      log.warning("checkpoint step %d in %s: could not write its file list %s (%s); the step "
                  "is complete and is checked by its array checksums alone", step,
                  self.directory, FILES_NAME, e.strerror or e)

  # -- rotation -----------------------------------------------------------------------------

  def _keep_record(self) -> dict:
    try:
      with open(os.path.join(self.directory, KEEP_NAME)) as f:
        record = json.load(f)
      return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
      return {}

  def _write_keep_record(self, record: dict) -> None:
    path = os.path.join(self.directory, KEEP_NAME)
    try:
      fileio.write_bytes(path, json.dumps(record, sort_keys=True).encode())
    except OSError as e:
      no = _write_errno(e) or errno.EIO
      raise CheckpointWriteError(
          f"could not write {path}: {os.strerror(no)}; "
          f"{_WRITE_ERRNOS.get(no, 'check the disk or choose another --workdir')}") from e

  def good_step(self) -> int | None:
    """The step last passed to ``mark_good``."""
    return self._keep_record().get("good")

  def protected_steps(self) -> list[int]:
    return sorted(self._keep_record().get("protected", []))

  def mark_good(self, step: int) -> None:
    """Marks ``step`` as the last known good one: rotation keeps it until a newer is marked."""
    if step not in self.manager.all_steps():
      raise ValueError(f"mark_good({step}): no checkpoint step {step} in {self.directory}")
    record = self._keep_record()
    if record.get("good") != step:
      record["good"] = step
      self._write_keep_record(record)
    self._rotate()

  def protect(self, step: int) -> None:
    if step not in self.manager.all_steps():
      raise ValueError(f"protect({step}): no checkpoint step {step} in {self.directory}")
    record = self._keep_record()
    record["protected"] = sorted(set(record.get("protected", [])) | {step})
    self._write_keep_record(record)

  def unprotect(self, step: int) -> None:
    record = self._keep_record()
    record["protected"] = sorted(set(record.get("protected", [])) - {step})
    self._write_keep_record(record)
    self._rotate()

  def _rotate(self) -> None:
    if self.max_to_keep is None or not self._primary():
      return
    steps = sorted(self.manager.all_steps())
    record = self._keep_record()
    keep = set(steps[-self.max_to_keep:]) if self.max_to_keep > 0 else set()
    keep |= set(record.get("protected", []))
    if record.get("good") is not None:
      keep.add(record["good"])
    for step in steps:
      if step not in keep:
        try:
          self.manager.delete(step)
        except OSError as e:
          log.warning("could not remove old checkpoint step %d in %s: %s", step,
                      self.directory, e)

  # -- checking -----------------------------------------------------------------------------

  def _corrupt(self, step: int, rel: str, reason: str, slug: str) -> CheckpointCorruptError:
    path = os.path.join(self.step_dir(step), rel) if rel else self.step_dir(step)
    return CheckpointCorruptError(
        f"checkpoint step {step} is damaged: {path}: {reason}", step=step, path=path,
        reason=reason, slug=slug)

  def _check_files(self, step: int) -> bool:
    """Raises CheckpointCorruptError for a damaged file; False for a step that predates the
    integrity item (nothing to check against)."""
    root = self.step_dir(step)
    listing = os.path.join(root, FILES_NAME)
    if os.path.exists(listing):
      try:
        with open(listing, "rb") as f:
          files = json.loads(f.read())["files"]
        if not isinstance(files, dict):
          raise ValueError("no file table")
      except Exception as e:  # noqa: BLE001  anything unreadable about it is damage
        raise self._corrupt(step, FILES_NAME, f"unreadable ({_first_line(e, 80)})",
                            "unreadable") from None
      for rel, want in sorted(files.items()):
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
          top = rel.split(os.sep)[0]
          if top != rel and not os.path.isdir(os.path.join(root, top)):
            raise self._corrupt(step, top + "/", "directory missing", "missing")
          raise self._corrupt(step, rel, "file missing", "missing")
        size = os.path.getsize(full)
        if size != want["size"]:
          what = "truncated" if size < want["size"] else "grew"
          raise self._corrupt(step, rel, f"{size} bytes, {want['size']} when saved ({what})",
                              "truncated" if size < want["size"] else "size")
        if _crc_file(full) != want["crc32"]:
          raise self._corrupt(step, rel, "contents changed since saved (crc32 mismatch)",
                              "checksum")
      return True
    for rel in ("state", "config"):
      if not os.path.isdir(os.path.join(root, rel)):
        raise self._corrupt(step, rel + "/", "directory missing", "missing")
    if not os.path.isdir(os.path.join(root, "integrity")):
      return False
    meta = os.path.join(root, "state", "_METADATA")
    try:
      with open(meta, "rb") as f:
        json.loads(f.read())
    except FileNotFoundError:
      raise self._corrupt(step, "state/_METADATA", "file missing", "missing") from None
    except (OSError, ValueError) as e:
      raise self._corrupt(step, "state/_METADATA", f"unreadable ({_first_line(e, 80)})",
                          "unreadable") from None
    return True

  def _read_record(self, step: int) -> dict:
    try:
      with _HeldOrbaxErrors():
        got = self.manager.restore(step, args=ocp.args.Composite(
            integrity=ocp.args.JsonRestore()))["integrity"]
      if got.get("format") != _FORMAT or not isinstance(got.get("arrays"), dict):
        raise ValueError(f"unknown format {got.get('format')!r}")
      return got
    except Exception as e:  # noqa: BLE001
      raise self._corrupt(step, "integrity/", f"unreadable ({_first_line(e, 120)})",
                          "unreadable") from None

  def _restore_step(self, state_like: Any, step: int) -> tuple[Any, dict]:
    """Restores and verifies one step; ``state_like=None``: as saved, as nested dicts."""
    if not os.path.isdir(self.step_dir(step)):
      raise FileNotFoundError(f"no checkpoint step {step} in {self.directory} (steps: "
                              f"{self.all_steps()})")
    verified = self._check_files(step)
    record = self._read_record(step) if verified else None
    arrays = record["arrays"] if record else {}
    like = None if state_like is None else jax.device_get(state_like)
    target = None
    if like is not None:
      flat_like = _flat(like)
      if record is not None:
        self._check_structure(step, flat_like, arrays)
        # Restored as saved, then cast: the checksums are of the saved bytes.
        abstract = [np.zeros(arrays[p]["shape"], np.dtype(arrays[p]["dtype"]))
                    for p, _ in flat_like]
      else:
        abstract = [np.zeros(np.shape(x), np.asarray(x).dtype) for _, x in flat_like]
      target = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), abstract)
    try:
      with _HeldOrbaxErrors():
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001
      if not verified:
        raise CheckpointError(f"could not restore checkpoint step {step} in "
                              f"{self.directory}: {_first_line(e)}") from e
      raise self._corrupt(step, "state/", f"orbax could not read it ({_first_line(e)})",
                          "unreadable") from None
    state, config = restored["state"], restored["config"]
    if record is None:
      return state, config
    bad = [p for p, x in _flat(state)
           if p in arrays and _crc_array(np.asarray(x)) != arrays[p]["crc32"]]
    if bad:
      raise self._corrupt(
          step, "state/", f"{len(bad)} array(s) differ from what was saved (crc32 mismatch: "
          f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})", "checksum")
    if _config_crc(config) != record["config_crc32"]:
      raise self._corrupt(step, "config/", "differs from what was saved (crc32 mismatch)",
                          "checksum")
    if like is not None:
      state = jax.tree_util.tree_map(
          lambda x, want: x if np.asarray(x).dtype == np.asarray(want).dtype
          else np.asarray(x).astype(np.asarray(want).dtype), state, like)
    return state, config

  def _check_structure(self, step: int, flat_like: list, arrays: dict) -> None:
    names = [p for p, _ in flat_like]
    missing = [p for p in names if p not in arrays]
    extra = sorted(set(arrays) - set(names))
    shapes = [p for p, x in flat_like if p in arrays and list(np.shape(x)) != arrays[p]["shape"]]
    if missing or extra or shapes:
      parts = [f"{label} {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
               for label, v in (("not in the checkpoint:", missing),
                                ("only in the checkpoint:", extra),
                                ("different shapes:", shapes)) if v]
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} holds a different state than this run "
          f"builds ({'; '.join(parts)}): resume with the config it was trained with, or use "
          f"another --workdir")

  # -- restoring ----------------------------------------------------------------------------

  def _quarantine(self, step: int, slug: str, warn: bool = True, why: str = "") -> str | None:
    src = self.step_dir(step)
    base = os.path.join(self.directory, CORRUPT_DIR, f"{step}-{slug}")
    dst, n = base, 1
    while os.path.exists(dst):
      n += 1
      dst = f"{base}.{n}"
    try:
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      os.rename(src, dst)
    except OSError as e:
      log.warning("checkpoint step %d in %s: could not move it aside (%s); skipping it", step,
                  self.directory, e.strerror or e)
      dst = None
    if warn and dst:
      log.warning("checkpoint step %d: %s; moved to %s", step, why, dst)
    self.manager.reload()
    record = self._keep_record()
    if dst and (record.get("good") == step or step in record.get("protected", [])):
      # A step saved later under the same number is not the one that was marked.
      if record.get("good") == step:
        del record["good"]
      record["protected"] = [s for s in record.get("protected", []) if s != step]
      try:
        self._write_keep_record(record)
      except CheckpointWriteError as e:
        log.warning("%s", e)
    return dst

  def restore_latest_good(self, state_like: Any, quarantine: bool = True
                          ) -> tuple[Any, dict, int, list[tuple[int, str]]]:
    """(state, config, step, quarantined): the newest intact step, into the structure and
    dtypes of ``state_like``. Damaged newer steps are moved to ``corrupt/`` (with
    ``quarantine=False``, only skipped) and returned as ``(step, reason)``."""
    self.manager.reload()
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    skipped: list[tuple[int, str]] = []
    for step in steps:
      try:
        state, config = self._restore_step(state_like, step)
      except CheckpointCorruptError as e:
        skipped.append((step, str(e)))
        if quarantine and self._primary():
          dst = self._quarantine(step, e.slug, warn=False)
          log.warning("%s; moved to %s, trying the previous step", e, dst or "(not moved)")
        else:
          log.warning("%s; skipping it", e)
        continue
      self.quarantined.extend(skipped)
      return state, config, step, skipped
    self.quarantined.extend(skipped)
    where = (f"moved to {os.path.join(self.directory, CORRUPT_DIR)}" if quarantine
             else "left in place")
    raise CheckpointCorruptError(
        f"no intact checkpoint in {self.directory}: all {len(steps)} step(s) are damaged "
        f"({where}; first: {skipped[0][1]}); start again with another --workdir")

  def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure (and dtypes) of ``state_like``: the latest intact step by
    default (see ``restore_latest_good``), or exactly ``step``, raising
    ``CheckpointCorruptError`` if that one is damaged."""
    if step is None:
      state, config, _, _ = self.restore_latest_good(state_like)
      return state, config
    return self._restore_step(state_like, step)

  def latest_good_step(self) -> int | None:
    """The newest step whose files pass their checks (arrays are checked on restore); moves
    nothing. None when there is none."""
    self.manager.reload()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        self._check_files(step)
        return step
      except CheckpointCorruptError as e:
        log.warning("%s; skipping it", e)
    return None

  def restore_untargeted(self, step: int | None = None) -> tuple[Any, dict, int]:
    """(state as saved, as nested dicts of numpy arrays, config, step) of ``step`` (default:
    the latest), verified; raises ``CheckpointCorruptError`` rather than fall back, since
    its callers (a next stage's teacher) want that step and no other."""
    self.manager.reload()
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    state, config = self._restore_step(None, step)
    return state, config, step

  def restore_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    self.manager.close()
