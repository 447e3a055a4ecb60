"""Faults around checkpoints: damaged files, rotation after an anomaly, two runs in one
workdir, a full or read-only disk. Each case checks that nothing good is lost: the last good
step restores bit for bit, and a damaged step is moved aside, never deleted."""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid

import ml_dtypes
import numpy as np
import pytest

from djax import checkpoint, workdir_lock


def _state(step: int) -> dict:
  rng = np.random.default_rng(step)
  # 64x64 float32 noise: large enough that orbax stores it in a data file of its own
  # (smaller arrays are inlined in the b-tree nodes) and incompressible.
  return {"params": {"kernel": rng.standard_normal((64, 64)).astype(np.float32),
                     "bias": rng.standard_normal(8).astype(np.float32)},
          "ema": rng.standard_normal(4).astype(ml_dtypes.bfloat16),
          "step": np.int32(step), "key": rng.integers(0, 2**32, 2, dtype=np.uint32)}


def _config(step: int) -> dict:
  return {"lr": 1e-3, "step_saved": step, "name": "tiny"}


def _assert_identical(got, want):
  got, want = dict(_flat(got)), dict(_flat(want))
  assert got.keys() == want.keys()
  for k in want:
    g, w = np.asarray(got[k]), np.asarray(want[k])
    assert g.dtype == w.dtype and g.shape == w.shape, k
    assert g.tobytes() == w.tobytes(), k


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flat(v, f"{prefix}/{k}")
  else:
    yield prefix, tree


def _save(directory, steps, max_to_keep=3):
  ckpt = checkpoint.Checkpointer(directory, max_to_keep)
  for s in steps:
    ckpt.save(s, _state(s), _config(s))
  return ckpt


def _data_file(step_dir):
  """The largest file in a `d/` directory under state/: the kernel's chunk."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs if os.path.basename(d) == "d"]
  return max(files, key=os.path.getsize)


def _flip_middle(path, n=16):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    m = len(data) // 2
    data[m - n // 2:m + n // 2] = bytes(b ^ 0x5A for b in data[m - n // 2:m + n // 2])
    f.seek(0)
    f.write(data)


def _truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


def _overwrite(path):
  with open(path, "r+b") as f:
    f.write(os.urandom(os.path.getsize(path)))


def _garble(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b"\x00garbage\xff" * 2)


def _assert_fell_back(directory, bad, good, slug, caplog):
  """A fresh Checkpointer restores `good` bit for bit; `bad` sits whole in corrupt/."""
  before = sorted(os.listdir(os.path.join(directory, str(bad))))
  with caplog.at_level(logging.WARNING, logger="djax.checkpoint"):
    ckpt = checkpoint.Checkpointer(directory)
    state, config, step, quarantined = ckpt.restore_latest_good(_state(0))
  assert step == good and config == _config(good)
  _assert_identical(state, _state(good))
  assert [s for s, _ in quarantined] == [bad]
  moved = os.path.join(directory, "corrupt", f"{bad}-{slug}")
  if slug is None:  # whichever check caught it
    (moved,) = [os.path.join(directory, "corrupt", n)
                for n in os.listdir(os.path.join(directory, "corrupt"))]
  assert os.path.isdir(moved) and sorted(os.listdir(moved)) == before
  assert ckpt.all_steps() == [good] and ckpt.latest_step() == good
  warning = " ".join(r.getMessage() for r in caplog.records)
  assert f"checkpoint step {bad} is damaged" in warning and moved in warning
  return quarantined[0][1]


FAULTS = {
    # name: (damage(step_dir), quarantine slug, text the report must contain)
    "garbage_in_data_file": (lambda d: _flip_middle(_data_file(d)), "checksum", "crc32"),
    "truncated_data_file": (lambda d: _truncate(_data_file(d)), "truncated", "truncated"),
    "deleted_data_file": (lambda d: os.remove(_data_file(d)), "missing", "file missing"),
    "overwritten_data_file": (lambda d: _overwrite(_data_file(d)), "checksum", "crc32"),
    "deleted_metadata": (lambda d: os.remove(os.path.join(d, "state", "_METADATA")), "missing",
                         "state/_METADATA: file missing"),
    "garbled_metadata": (lambda d: _garble(os.path.join(d, "state", "_METADATA")), "checksum",
                         "state/_METADATA"),
    "deleted_state_dir": (lambda d: shutil.rmtree(os.path.join(d, "state")), "missing",
                          "state/: directory missing"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_latest_falls_back_to_previous(tmp_path, caplog, fault):
  damage, slug, text = FAULTS[fault]
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2]).close()
  damage(os.path.join(d, "2"))
  report = _assert_fell_back(d, bad=2, good=1, slug=slug, caplog=caplog)
  assert text in report and os.path.join(d, "2") in report


@pytest.mark.parametrize("fault", ["garbage_in_data_file", "garbled_metadata",
                                   "deleted_metadata"])
def test_array_checksums_alone_catch_damage(tmp_path, caplog, fault):
  """Without the file list (a run killed right after orbax committed the step), the
  checksums written inside the step still catch the damage."""
  damage, _, _ = FAULTS[fault]
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2]).close()
  os.remove(os.path.join(d, "2", checkpoint.FILES_NAME))
  damage(os.path.join(d, "2"))
  slug = {"garbage_in_data_file": None, "garbled_metadata": "unreadable",
          "deleted_metadata": "missing"}[fault]
  _assert_fell_back(d, bad=2, good=1, slug=slug, caplog=caplog)


def test_explicit_step_raises_naming_the_file_and_moves_nothing(tmp_path):
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2]).close()
  bad_file = _data_file(os.path.join(d, "2"))
  _truncate(bad_file)
  ckpt = checkpoint.Checkpointer(d)
  with pytest.raises(checkpoint.CheckpointCorruptError) as e:
    ckpt.restore(_state(0), step=2)
  assert "\n" not in str(e.value) and bad_file in str(e.value) and "truncated" in str(e.value)
  assert e.value.step == 2 and e.value.path == bad_file
  assert ckpt.all_steps() == [1, 2] and not os.path.exists(os.path.join(d, "corrupt"))
  # Readers skip it without moving it.
  assert ckpt.latest_good_step() == 1
  state, config = ckpt.restore(_state(0), step=1)
  _assert_identical(state, _state(1))
  _, _, step, skipped = ckpt.restore_latest_good(_state(0), quarantine=False)
  assert step == 1 and [s for s, _ in skipped] == [2] and ckpt.all_steps() == [1, 2]


def test_restore_without_step_falls_back(tmp_path):
  """The old entry point, restore(state_like), now does the same as restore_latest_good."""
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2, 3]).close()
  _flip_middle(_data_file(os.path.join(d, "3")))
  os.remove(os.path.join(d, "2", "state", "_METADATA"))
  ckpt = checkpoint.Checkpointer(d)
  state, config = ckpt.restore(_state(0))
  _assert_identical(state, _state(1))
  assert [s for s, _ in ckpt.quarantined] == [3, 2]
  assert sorted(os.listdir(os.path.join(d, "corrupt"))) == ["2-missing", "3-checksum"]


def test_all_damaged_raises_and_keeps_them(tmp_path):
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2]).close()
  for s in (1, 2):
    _flip_middle(_data_file(os.path.join(d, str(s))))
  with pytest.raises(checkpoint.CheckpointCorruptError, match="no intact checkpoint") as e:
    checkpoint.Checkpointer(d).restore(_state(0))
  assert "\n" not in str(e.value)
  assert sorted(os.listdir(os.path.join(d, "corrupt"))) == ["1-checksum", "2-checksum"]


def test_a_different_tree_is_not_damage(tmp_path):
  """A changed model (a config edit) must not send intact checkpoints to corrupt/."""
  d = str(tmp_path / "checkpoints")
  _save(d, [1]).close()
  other = _state(0)
  other["params"]["kernel"] = other["params"]["kernel"][:32]
  ckpt = checkpoint.Checkpointer(d)
  with pytest.raises(checkpoint.CheckpointMismatchError, match="different shapes: params/kernel"):
    ckpt.restore(other)
  assert ckpt.all_steps() == [1] and not os.path.exists(os.path.join(d, "corrupt"))


def test_restore_casts_to_the_dtypes_asked_for(tmp_path):
  d = str(tmp_path / "checkpoints")
  _save(d, [1]).close()
  like = _state(0)
  like["params"]["bias"] = like["params"]["bias"].astype(np.float16)
  state, _ = checkpoint.Checkpointer(d).restore(like)
  assert state["params"]["bias"].dtype == np.float16
  np.testing.assert_array_equal(state["params"]["bias"],
                                _state(1)["params"]["bias"].astype(np.float16))


def test_rotation_keeps_the_step_marked_good(tmp_path):
  d = str(tmp_path / "checkpoints")
  ckpt = checkpoint.Checkpointer(d, max_to_keep=2)
  for s in (1, 2):
    ckpt.save(s, _state(s), _config(s))
    ckpt.mark_good(s)
  assert ckpt.all_steps() == [1, 2]
  for s in (3, 4, 5):  # the run went bad after step 2 and kept saving
    ckpt.save(s, _state(s), _config(s))
  assert ckpt.all_steps() == [2, 4, 5] and ckpt.good_step() == 2
  ckpt.close()
  ckpt = checkpoint.Checkpointer(d, max_to_keep=2)  # persisted across a restart
  ckpt.save(6, _state(6), _config(6))
  assert ckpt.all_steps() == [2, 5, 6]
  state, config = ckpt.restore(_state(0), step=2)
  _assert_identical(state, _state(2))
  ckpt.mark_good(6)  # a newer good step releases the older one
  assert ckpt.all_steps() == [5, 6]
  ckpt.protect(5)
  for s in (7, 8):
    ckpt.save(s, _state(s), _config(s))
  assert ckpt.all_steps() == [5, 6, 7, 8] and ckpt.protected_steps() == [5]
  ckpt.unprotect(5)
  assert ckpt.all_steps() == [6, 7, 8]
  with pytest.raises(ValueError, match="no checkpoint step 3"):
    ckpt.mark_good(3)


def test_max_to_keep_one_with_every_save_marked_good(tmp_path):
  """What the trainer does when every save is sound: exactly one step stays."""
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1)
  for s in (1, 2, 3):
    ckpt.save(s, _state(s), _config(s))
    ckpt.mark_good(s)
  assert ckpt.all_steps() == [3]


def test_checkpoints_without_integrity_still_restore(tmp_path):
  """Steps written before the integrity item (plain orbax, two items) restore unverified."""
  import orbax.checkpoint as ocp
  d = str(tmp_path / "checkpoints")
  manager = ocp.CheckpointManager(d, options=ocp.CheckpointManagerOptions(
      create=True, enable_async_checkpointing=False), item_names=("state", "config"))
  manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(1)),
                                          config=ocp.args.JsonSave(_config(1))))
  manager.wait_until_finished()
  manager.close()
  state, config = checkpoint.Checkpointer(d).restore(_state(0))
  _assert_identical(state, _state(1))
  assert config == _config(1)


# -- one run per workdir ---------------------------------------------------------------------

_HOLDER = """
import sys
from djax.workdir_lock import WorkdirLock
lock = WorkdirLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


@contextlib.contextmanager
def _holder(workdir):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(checkpoint.__file__)))
  p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert p.stdout.readline().strip() == "held"
    yield p
  finally:
    if p.poll() is None:
      p.kill()
    p.wait()


def test_a_second_run_on_a_workdir_in_use_raises(tmp_path):
  with _holder(tmp_path) as p:
    with pytest.raises(workdir_lock.WorkdirInUseError) as e:
      with workdir_lock.WorkdirLock(str(tmp_path)):
        pass
    msg = str(e.value)
    assert "\n" not in msg and f"in use by pid {p.pid} on host " in msg
    assert str(tmp_path) in msg and "another --workdir" in msg
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait()
  with workdir_lock.WorkdirLock(str(tmp_path)):  # released: free for the next run
    pass


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
  with _holder(tmp_path) as p:
    p.send_signal(signal.SIGKILL)
    p.wait()
  with caplog.at_level(logging.WARNING, logger="djax.workdir_lock"):
    with workdir_lock.WorkdirLock(str(tmp_path)):
      record = json.load(open(tmp_path / ".lock"))
      assert record["pid"] == os.getpid()
  assert f"pid {p.pid}" in caplog.text and "taking over" in caplog.text
  assert open(tmp_path / ".lock").read() == ""


def test_stale_lock_with_a_dead_pid_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen(["true"])
  dead.wait()
  import socket
  (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                              "since": 0}))
  with caplog.at_level(logging.WARNING, logger="djax.workdir_lock"):
    with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
      with workdir_lock.WorkdirLock(str(tmp_path)):  # re-entrant in one process
        pass
      assert json.load(open(lock.path))["pid"] == os.getpid()
  assert f"pid {dead.pid}" in caplog.text and "taking over" in caplog.text


def test_without_flock_the_record_is_the_lock(tmp_path, monkeypatch):
  """File systems without flock: a live pid on this host blocks, a dead one is taken over."""
  import socket
  monkeypatch.setattr(workdir_lock, "fcntl", None)
  live = subprocess.Popen(["sleep", "30"])
  try:
    (tmp_path / ".lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(),
                                                "since": 0}))
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f"pid {live.pid}.*delete"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    live.kill()
    live.wait()
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert json.load(open(tmp_path / ".lock"))["pid"] == os.getpid()


# -- full and read-only disks ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
  """A 512 KiB tmpfs, or a skip saying why none could be mounted."""
  mnt = tmp_path / "disk"
  mnt.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                     capture_output=True, text=True)
  if r.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): "
                f"{(r.stderr or r.stdout).strip()}")
  try:
    yield mnt
  finally:
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
      subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt, leave: int):
  """Fills the disk but `leave` bytes."""
  st = os.statvfs(mnt)
  free = st.f_bavail * st.f_frsize
  with open(mnt / f"fill-{uuid.uuid4().hex}", "wb") as f:
    try:
      f.write(b"\xff" * max(free - leave, 0))
    except OSError:
      pass


@pytest.mark.parametrize("leave", [0, 4096, 12288])
def test_disk_full_raises_one_line_and_keeps_previous(small_disk, leave):
  d = str(small_disk / "checkpoints")
  ckpt = _save(d, [1])
  ckpt.mark_good(1)
  _fill(small_disk, leave)
  with pytest.raises(checkpoint.CheckpointWriteError) as e:
    ckpt.save(2, _state(2), _config(2))
  msg = str(e.value)
  assert isinstance(e.value, OSError) and "\n" not in msg
  assert "No space left on device" in msg and d in msg and "free space" in msg
  assert "latest: step 1" in msg
  assert ckpt.all_steps() == [1]
  assert sorted(os.listdir(d)) == ["1", checkpoint.KEEP_NAME]  # no half-written step
  state, config = checkpoint.Checkpointer(d).restore(_state(0))
  _assert_identical(state, _state(1))
  for f in small_disk.glob("fill-*"):
    f.unlink()
  ckpt.save(2, _state(2), _config(2))  # space again: saving works
  assert ckpt.all_steps() == [1, 2]


def test_read_only_disk_raises_one_line_and_keeps_previous(small_disk):
  d = str(small_disk / "checkpoints")
  ckpt = _save(d, [1])
  subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
  with pytest.raises(checkpoint.CheckpointWriteError) as e:
    ckpt.save(2, _state(2), _config(2))
  msg = str(e.value)
  assert "\n" not in msg and "Read-only file system" in msg and "another --workdir" in msg
  assert ckpt.all_steps() == [1]
  with pytest.raises(workdir_lock.WorkdirNotWritableError, match="Read-only file system"):
    with workdir_lock.WorkdirLock(str(small_disk)):
      pass
  reader = checkpoint.Checkpointer(d)  # a reader still works on a read-only disk
  state, config = reader.restore(_state(0))
  _assert_identical(state, _state(1))


def test_untargeted_restore_is_verified(tmp_path):
  """As a next stage loads its teacher: no target tree, the latest step, and no fallback."""
  d = str(tmp_path / "checkpoints")
  _save(d, [1, 2]).close()
  ckpt = checkpoint.Checkpointer(d)
  state, config, step = ckpt.restore_untargeted()
  assert step == 2 and config == _config(2)
  _assert_identical(state, _state(2))
  os.remove(os.path.join(d, "2", checkpoint.FILES_NAME))  # so the array checksums catch it
  _flip_middle(_data_file(os.path.join(d, "2")))
  with pytest.raises(checkpoint.CheckpointCorruptError, match="step 2 is damaged"):
    ckpt.restore_untargeted()
  assert ckpt.all_steps() == [1, 2]


def test_quarantining_the_good_step_clears_its_mark(tmp_path):
  d = str(tmp_path / "checkpoints")
  ckpt = _save(d, [1, 2])
  ckpt.mark_good(2)
  _flip_middle(_data_file(os.path.join(d, "2")))
  _, _, step, _ = ckpt.restore_latest_good(_state(0))
  assert step == 1 and ckpt.good_step() is None
  ckpt.save(2, _state(2), _config(2))  # the same number again, not marked
  assert ckpt.good_step() is None and ckpt.all_steps() == [1, 2]
