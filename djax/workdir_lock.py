"""One run per workdir: ``with WorkdirLock(workdir): ...`` around everything that writes there.

The lock is an ``flock`` on ``WORKDIR/.lock``. The kernel drops it when the holder exits, however
it exits, so a run that crashed never blocks the next one; the file also holds the holder's pid,
host and start time, for the error message and to tell a run that died without cleaning up
(its record stays, its lock does not: taken over with a warning). Where flock is not supported
(some network and FUSE file systems) the record alone is the lock: a live pid on this host, or a
record from another host (whose pid cannot be checked from here), blocks.

The lock is re-entrant within a process (a staged runner may lock a directory that the trainer
it calls locks again). It only imports the standard library, so a tool can take it cheaply.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time

try:
  import fcntl
except ImportError:  # not POSIX: the record alone is the lock
  fcntl = None

LOCK_NAME = ".lock"
log = logging.getLogger(__name__)

# path -> [fd, depth]: this process's locks, for re-entry.
_held: dict[str, list] = {}


class WorkdirError(Exception):
  """A workdir that cannot be used; the message is one line that says what to do."""


class WorkdirInUseError(WorkdirError, RuntimeError):
  pass


class WorkdirNotWritableError(WorkdirError, OSError):
  pass


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _read_record(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    record = json.loads(raw) if raw.strip() else {}
    return record if isinstance(record, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(record: dict) -> str:
  if not record.get("pid"):
    return "another process"
  since = record.get("since")
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
  return f"pid {record['pid']} on host {record.get('host', '?')} since {since}"


class WorkdirLock:
  """Context manager: holds ``WORKDIR/.lock`` for the duration of a run.

  Raises ``WorkdirInUseError`` (one line: who holds it, since when, what to do) when another
  live run holds it, and ``WorkdirNotWritableError`` when the lock file cannot be created.
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _in_use(self, record: dict, locked: bool) -> WorkdirInUseError:
    pid = record.get("pid")
    stop = f"stop it (kill {pid}) " if pid else "stop it "
    # A held flock means a live holder; a bare record may outlive a run on another host.
    gone = "" if locked else f" (if that run is gone, delete {self.path})"
    return WorkdirInUseError(
        f"workdir {self.workdir} is in use by {_describe(record)}; wait for that run to finish "
        f"or {stop}or choose another --workdir{gone}")

  def acquire(self) -> None:
    if self.path in _held:
      _held[self.path][1] += 1
      return
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirNotWritableError(
          f"cannot create the lock file {self.path}: {e.strerror or e}; choose another "
          f"--workdir") from e
    try:
      flocked = False
      if fcntl is not None:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
          flocked = True
        except BlockingIOError:
          raise self._in_use(_read_record(fd), locked=True) from None
        except OSError as e:
          if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            raise
      record = _read_record(fd)
      same_host = record.get("host") == socket.gethostname()
      if record.get("pid") and not (same_host and record["pid"] == os.getpid()):
        if not flocked and not (same_host and not _pid_alive(int(record["pid"]))):
          raise self._in_use(record, locked=False)
        # With flock held, a leftover record is a run that ended without releasing the lock
        # (killed, or its host rebooted): the kernel already let go of it.
        log.warning("workdir %s: the run that held it (%s) is gone; taking over its lock",
                    self.workdir, _describe(record))
      mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "since": time.time()}).encode()
      os.ftruncate(fd, 0)
      os.pwrite(fd, mine, 0)
      os.fsync(fd)
    except OSError as e:
      os.close(fd)
      raise WorkdirNotWritableError(
          f"cannot write the lock file {self.path}: {e.strerror or e}; free space or choose "
          f"another --workdir") from e
    except BaseException:
      os.close(fd)
      raise
    _held[self.path] = [fd, 1]

  def release(self) -> None:
    held = _held.get(self.path)
    if held is None:
      return
    held[1] -= 1
    if held[1] > 0:
      return
    del _held[self.path]
    fd = held[0]
    try:
      # Emptied, not deleted: a process that opened this file just now would otherwise lock
      # an unlinked inode while a third one creates a new file and locks that.
      os.ftruncate(fd, 0)
    except OSError:
      pass
    finally:
      os.close(fd)  # drops the flock
