"""Sprites: procedurally generated pixel-art characters (tfds builder ``sprites``).

A stand-in for the Sprites dataset of Reed et al. 2015 ("Deep visual analogy-making"),
as used by Hu et al. 2018 ("Disentangling factors of variation by mixing them"). The
original is not downloadable here, so this module draws a dataset with the same structure:

* 672 characters, split by identity: 500 train / 72 validation / 100 test.
* Every character in 178 poses, in the order of the Liberated Pixel Cup sprite sheet the
  original was cut from: for each action spellcast (7 frames), thrust (8), walk (9),
  slash (6), shoot (13), the four facing directions up (back view), left, down (front
  view), right; then hurt (6 frames, down only).
  ``pose = sum(4 * frames of earlier actions) + direction * frames(action) + frame``
  (see ``pose_index`` / ``POSES``).
* Ground-truth factors and cardinalities (Hu et al.'s table: body 2, skin 4, vest 3,
  hair 6, arm 2, leg 2; weapon is our choice, 5 values):

    body    slim, broad                      torso and limb width
    skin    pale, tan, brown, dark           face and hands
    vest    red, blue, green                 torso
    hair    bald, short (white), long (blonde), spiky (orange), ponytail (black),
            mohawk (magenta): each style has its own shape and colour
    arm     yellow, purple                   sleeves
    leg     brown, teal                      trousers
    weapon  none, sword, spear, bow, staff   held in one hand in every pose (hidden
                                             behind the body in some profiles)
    pose    178 values as above

  The 672 characters are a fixed pseudo-random sample (without repetition) of the
  2 * 4 * 3 * 6 * 2 * 2 * 5 = 2880 attribute combinations; character ids are in random
  order, and the splits are the id ranges [0, 500), [500, 572), [572, 672).

Everything is deterministic: a fixed integer seed (splitmix64 in pure Python, not
numpy's generators whose streams may change between versions) picks the characters, and
the rasteriser rounds geometry to 1/8 pixel before the exactly-rounded arithmetic that
decides pixel coverage, so the same bytes come out on every machine.

Rendering is "draw each (body, hair, weapon, pose) once as a map of part labels, then
colour it with the character's palette": 2 * 6 * 5 = 60 label maps per pose serve all
672 characters, and colouring is one table lookup. ``render_character`` /
``render_batch`` give images in memory without tfds.

Configs:

* ``full``: all 178 poses (119,616 images, ~1.5 GB as raw pixels; stored zlib-compressed:
  ~70 MB on disk).
* ``small``: the 4 directions x walk frames 1, 3, 5, 7 (16 poses; 10,752 images).
* ``tiny``: 4 poses (2,688 images), for unit tests.
* ``original``: the real Sprites, read from ``manual_dir`` (layout below).

A config's ``pose``, ``direction``, ``action`` and ``frame`` labels list only the values it
holds (``variant_values``; sprites/small: 16 poses, 4 directions, walk, frames 1/3/5/7), so
its features and its dataset card say what it contains; a stored label is an index into
those names (``builder.info.features['pose'].int2str``), and ``pose_id`` is the
sprite-sheet pose id (0..177, ``decode_pose``), the same in every config.

Usage::

  builder = Sprites(config='small', data_dir=D, file_format='array_record')
  builder.download_and_prepare()
  train = builder.as_data_source()['train']   # random access, no TensorFlow
  train[0]['image'], train[0]['pose'], decode_pose(train[0]['pose_id'])

Manual layout for ``original`` (``DownloadConfig(manual_dir=M)``)::

  M/sprites/train/*.npz
  M/sprites/validation/*.npz
  M/sprites/test/*.npz

one file per character, with

  images     [178, 64, 64, 3] uint8 (or float in [0, 1]; 60x60 frames as in Reed's
             release are edge-padded to 64x64), poses in the order above;
  character  int in [0, 672): the identity;
  body, skin, vest, hair, arm, leg, weapon   ints within the cardinalities above.

Reed's release (``nips2015-analogy-data.tar.gz``) stores, per character,
``data/sprites/sprites_<n>.mat`` (MATLAB v7.3 / HDF5) whose ``sprites`` cell holds 21
animations (5 actions x 4 directions in the order above, then hurt), each frames x
(3*60*60) floats in [0, 1] in MATLAB's column-major order, and ``sprites_splits.mat``
with 1-based ``trainidx`` / ``validx`` / ``testidx``. It carries no attribute labels in
those files, so converting it (h5py, not a djax dependency) means writing the 21 arrays
concatenated as ``images`` plus the attributes from wherever one has them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from djax.data.local_builder import LocalBuilder

# --------------------------------------------------------------------------------------
# Factors, poses, characters
# --------------------------------------------------------------------------------------

IMAGE_SIZE = 64

DIRECTIONS = ("up", "left", "down", "right")
ACTIONS = ("spellcast", "thrust", "walk", "slash", "shoot", "hurt")
ACTION_FRAMES = {"spellcast": 7, "thrust": 8, "walk": 9, "slash": 6, "shoot": 13, "hurt": 6}
MAX_FRAMES = max(ACTION_FRAMES.values())


def _pose_table() -> tuple[tuple[str, str, int], ...]:
  poses = []
  for action in ACTIONS[:-1]:
    for direction in DIRECTIONS:
      poses += [(action, direction, f) for f in range(ACTION_FRAMES[action])]
  # The sprite sheet draws "hurt" (collapsing) facing the viewer only.
  poses += [("hurt", "down", f) for f in range(ACTION_FRAMES["hurt"])]
  return tuple(poses)


# pose id -> (action, direction, frame)
POSES = _pose_table()
NUM_POSES = len(POSES)
assert NUM_POSES == 178
_POSE_ID = {p: i for i, p in enumerate(POSES)}
POSE_NAMES = tuple(f"{a}_{d}_{f}" for a, d, f in POSES)


def pose_index(action: str, direction: str, frame: int) -> int:
  """Pose id (0..177) of ``frame`` of ``action`` facing ``direction``."""
  return _POSE_ID[(action, direction, frame)]


def decode_pose(pose: int) -> tuple[str, str, int]:
  """(action, direction, frame) of a pose id."""
  return POSES[pose]


FACTORS = ("body", "skin", "vest", "hair", "arm", "leg", "weapon", "pose")
FACTOR_NAMES: dict[str, tuple[str, ...]] = {
    "body": ("slim", "broad"),
    "skin": ("pale", "tan", "brown", "dark"),
    "vest": ("red", "blue", "green"),
    "hair": ("bald", "short", "long", "spiky", "ponytail", "mohawk"),
    "arm": ("yellow", "purple"),
    "leg": ("brown", "teal"),
    "weapon": ("none", "sword", "spear", "bow", "staff"),
    "pose": POSE_NAMES,
}
FACTOR_SIZES: dict[str, int] = {k: len(v) for k, v in FACTOR_NAMES.items()}
# The factors that make up a character's identity (everything but the pose).
APPEARANCE = FACTORS[:-1]

NUM_CHARACTERS = 672
SPLIT_SIZES = {"train": 500, "validation": 72, "test": 100}
SEED = 20151207  # NIPS 2015; any fixed value works, changing it changes the dataset


def _splitmix64(state: int):
  mask = (1 << 64) - 1
  while True:
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    yield z ^ (z >> 31)


def _character_table() -> np.ndarray:
  """[672, 7] int attributes (APPEARANCE order): a fixed sample of distinct combinations."""
  sizes = [FACTOR_SIZES[k] for k in APPEARANCE]
  total = math.prod(sizes)
  rng = _splitmix64(SEED)
  # Partial Fisher-Yates: the first NUM_CHARACTERS entries of a seeded permutation. The
  # modulo bias of a 64-bit draw over <3000 items is ~1e-16: irrelevant, and exact ints.
  perm = list(range(total))
  for i in range(NUM_CHARACTERS):
    j = i + next(rng) % (total - i)
    perm[i], perm[j] = perm[j], perm[i]
  return np.array([np.unravel_index(c, sizes) for c in perm[:NUM_CHARACTERS]], dtype=np.int64)


CHARACTERS = _character_table()
CHARACTERS.setflags(write=False)


def character_attributes(character: int) -> dict[str, int]:
  """The appearance factors of character ``character`` (0..671)."""
  return {k: int(v) for k, v in zip(APPEARANCE, CHARACTERS[character])}


def split_characters(split: str) -> range:
  """Character ids of a split: contiguous ranges, since ids are already in random order."""
  start = 0
  for name, n in SPLIT_SIZES.items():
    if name == split:
      return range(start, start + n)
    start += n
  raise ValueError(f"unknown split {split!r}; splits: {list(SPLIT_SIZES)}")


# --------------------------------------------------------------------------------------
# Palettes
# --------------------------------------------------------------------------------------

# Part labels of a label map; a character's palette maps each to a colour.
(BG, OUTLINE, SKIN, SKIN_FAR, VEST, SLEEVE, SLEEVE_FAR, TROUSER, TROUSER_FAR, HAIR, SHOE,
 SHOE_FAR, BELT, EYE, MOUTH, METAL, WOOD, GOLD, ORB, STRING) = range(20)
NUM_LABELS = 20

BACKGROUND_RGB = (238, 236, 226)
SKIN_RGB = ((252, 222, 196), (226, 168, 108), (160, 100, 58), (88, 54, 36))
VEST_RGB = ((200, 36, 44), (40, 84, 204), (36, 150, 66))
HAIR_RGB = (None, (228, 228, 238), (246, 208, 66), (255, 120, 16), (52, 50, 62), (224, 40, 210))
ARM_RGB = ((236, 196, 40), (122, 60, 176))
LEG_RGB = ((124, 80, 42), (28, 146, 156))
_FIXED_RGB = {
    BG: BACKGROUND_RGB, OUTLINE: (26, 22, 30), SHOE: (70, 46, 30), BELT: (60, 40, 24),
    EYE: (20, 20, 28), MOUTH: (150, 40, 40), METAL: (206, 212, 222), WOOD: (138, 88, 44),
    GOLD: (236, 184, 28), ORB: (70, 226, 246), STRING: (150, 150, 150),
}
# Limbs on the far side of a profile view are darkened so crossing legs/arms stay readable.
_FAR_SHADE = 0.72


def palette(skin: int, vest: int, hair: int, arm: int, leg: int) -> np.ndarray:
  """[NUM_LABELS, 3] uint8 colour of every part label for one character."""
  lut = np.zeros((NUM_LABELS, 3), np.float64)
  for label, rgb in _FIXED_RGB.items():
    lut[label] = rgb
  lut[SKIN] = SKIN_RGB[skin]
  lut[VEST] = VEST_RGB[vest]
  lut[HAIR] = HAIR_RGB[hair] or SKIN_RGB[skin]  # bald: never drawn, but keep it defined
  lut[SLEEVE] = ARM_RGB[arm]
  lut[TROUSER] = LEG_RGB[leg]
  for near, far in ((SKIN, SKIN_FAR), (SLEEVE, SLEEVE_FAR), (TROUSER, TROUSER_FAR),
                    (SHOE, SHOE_FAR)):
    lut[far] = lut[near] * _FAR_SHADE
  return np.round(lut).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Poses as skeleton parameters
# --------------------------------------------------------------------------------------
# Angles are radians. A limb direction is "hanging down" rotated forward by theta (pi/2:
# pointing forward, pi: up, negative: backward) and then outward by phi. Arms are
# (theta_upper, phi_upper, theta_fore, phi_fore), legs (theta_thigh, theta_shin, phi).


@dataclasses.dataclass(frozen=True)
class _Pose:
  arm_l: tuple = (0.0, 0.08, 0.15, 0.08)
  arm_r: tuple = (0.0, 0.08, 0.15, 0.08)
  leg_l: tuple = (0.0, 0.0, 0.0)
  leg_r: tuple = (0.0, 0.0, 0.0)
  lean: float = 0.0        # torso pitch forward about the hips
  root_f: float = 0.0      # whole body forward (lunges)
  roll: float = 0.0        # image-plane rotation (falling over when hurt)
  w_hand: str = "r"        # hand holding the weapon
  w_dir: tuple | None = (0.25, -1.0, 0.75)  # weapon axis (L, Y, F); None: along forearm
  bow_draw: bool = False   # bow string pulled to the other hand


def _walk(f: int) -> _Pose:
  if f == 0:
    return _Pose()
  p = 2 * math.pi * (f - 1) / 8
  def leg(q):
    thigh = 0.5 * math.sin(q)
    # The knee bends while the leg swings forward (d thigh / dt > 0), lifting the foot.
    return (thigh, thigh - 0.9 * max(0.0, math.cos(q)), 0.0)
  def arm(q):
    up = -0.5 * math.sin(q)  # arms swing against the leg on their side
    return (up, 0.08, up + 0.35, 0.08)
  return _Pose(arm_l=arm(p), arm_r=arm(p + math.pi), leg_l=leg(p), leg_r=leg(p + math.pi))


def _spellcast(f: int) -> _Pose:
  up = (0.5, 1.3, 2.2, 2.75, 2.75, 2.75, 1.6)[f]
  out = (0.25, 0.45, 0.55, 0.5, 0.5, 0.5, 0.35)[f]
  bend = (0.6, 0.5, 0.3, 0.2, 0.2, 0.2, 0.5)[f]
  arm = (up, out, up + bend, out)
  spread = (0.0, 0.05, 0.1, 0.12, 0.12, 0.12, 0.05)[f]
  lean = (0.0, -0.05, -0.1, -0.12, -0.12, -0.12, -0.05)[f]
  return _Pose(arm_l=arm, arm_r=arm, leg_l=(0.0, 0.0, spread), leg_r=(0.0, 0.0, spread),
               lean=lean, w_dir=None)


def _thrust(f: int) -> _Pose:
  up = (0.4, 0.2, -0.2, -0.45, 0.3, 1.1, 1.3, 0.7)[f]
  bend = (1.0, 1.2, 1.6, 1.7, 1.3, 0.4, 0.2, 0.7)[f]
  lunge = (0.0, 0.1, 0.2, 0.3, 0.6, 1.0, 1.0, 0.5)[f]
  return _Pose(
      arm_r=(up, 0.1, up + bend, 0.05),
      arm_l=(0.3 + 0.6 * max(up, 0.0), 0.15, 1.45, 0.1),
      leg_l=(0.4 * lunge, 0.15 * lunge, 0.05), leg_r=(-0.4 * lunge, -0.45 * lunge, 0.05),
      lean=(0.0, 0.0, -0.05, -0.1, 0.1, 0.2, 0.2, 0.1)[f],
      root_f=(0.0, 0.0, -1.0, -1.5, 0.5, 2.0, 2.5, 1.0)[f],
      # Across the body as well as forward, so the thrust also shows from front and back.
      w_dir=(-0.45, 0.05, 1.0))


def _slash(f: int) -> _Pose:
  up = (0.6, 2.5, 2.9, 1.9, 0.9, 0.4)[f]
  bend = (0.8, 0.4, 0.2, -0.2, -0.3, 0.3)[f]
  out = (0.3, 0.2, 0.15, 0.1, 0.2, 0.3)[f]
  left = (0.3, 0.1, -0.2, 0.2, 0.5, 0.3)[f]
  return _Pose(arm_r=(up, out, up + bend, out), arm_l=(left, 0.15, left + 0.4, 0.1),
               leg_l=(0.25, 0.1, 0.05), leg_r=(-0.25, -0.3, 0.05),
               lean=(0.0, -0.1, -0.15, 0.1, 0.25, 0.1)[f], w_dir=None)


def _shoot(f: int) -> _Pose:
  bow_arm = (0.2, 0.7, 1.2, 1.5, 1.55, 1.55, 1.55, 1.55, 1.55, 1.55, 1.4, 0.9, 0.3)[f]
  # The drawing arm: elbow swings back while the forearm keeps pointing at the bow.
  draw_up = (0.2, 0.7, 1.2, 1.4, 1.0, 0.0, -0.8, -1.3, -1.4, -1.0, 0.2, 0.4, 0.2)[f]
  draw_fore = (0.3, 0.9, 1.4, 1.55, 1.6, 1.6, 1.6, 1.6, 1.6, 0.9, 0.4, 0.5, 0.3)[f]
  return _Pose(arm_l=(bow_arm, 0.1, bow_arm + 0.05, 0.05),
               arm_r=(draw_up, 0.25, draw_fore, -0.1),
               leg_l=(0.2, 0.1, 0.08), leg_r=(-0.2, -0.2, 0.08),
               w_hand="l", w_dir=(0.0, -1.0, 0.05), bow_draw=4 <= f <= 8)


def _hurt(f: int) -> _Pose:
  thigh = (0.0, 0.5, 1.2, 1.2, 0.8, 0.15)[f]
  shin = (0.0, -0.3, -0.4, -0.4, -0.2, 0.05)[f]
  arm_up = (0.1, 0.4, 0.3, 0.3, 0.6, 0.2)[f]
  arm_out = (0.6, 0.4, 0.25, 0.25, 0.3, 0.15)[f]
  arm = (arm_up, arm_out, arm_up + 0.3, arm_out)
  return _Pose(arm_l=arm, arm_r=arm, leg_l=(thigh, shin, 0.05), leg_r=(thigh, shin, 0.05),
               lean=(-0.2, 0.3, 0.45, 0.45, 0.3, 0.0)[f],
               roll=(0.0, 0.0, 0.0, 0.3, 0.95, 1.5708)[f],
               w_dir=(0.6, 0.7, 0.2))


_ACTION_POSE = {"walk": _walk, "spellcast": _spellcast, "thrust": _thrust,
                "slash": _slash, "shoot": _shoot, "hurt": _hurt}

# --------------------------------------------------------------------------------------
# Skeleton geometry (pixels). Character frame: L = towards the character's left,
# Y = down, F = forward.
# --------------------------------------------------------------------------------------

_GROUND = 60.5           # lowest point of the figure
_Y_HIP = 43.0
_Y_SHOULDER = 30.0
_Y_HEAD = 21.0
_HEAD_RX, _HEAD_RY = 6.5, 7.0
_UPPER_ARM, _FOREARM = 7.0, 6.5
_THIGH, _SHIN = 8.0, 8.0

# slim / broad: half widths of the torso at shoulders and hips, its half depth (seen in
# profile), and limb radii.
_BODY = (
    dict(shoulder=5.5, hip=4.5, depth=3.5, arm_r=1.5, leg_r=1.75),
    dict(shoulder=8.5, hip=7.5, depth=5.5, arm_r=2.25, leg_r=2.5),
)


def _limb(theta: float, phi: float, side: int) -> np.ndarray:
  return np.array([side * math.sin(phi), math.cos(phi) * math.cos(theta),
                   math.cos(phi) * math.sin(theta)])


def _unit(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


def _lean(p, lean: float) -> np.ndarray:
  """Rotates an upper-body point forward about the hips."""
  h, f = _Y_HIP - p[1], p[2]
  c, s = math.cos(lean), math.sin(lean)
  return np.array([p[0], _Y_HIP - h * c + f * s, h * s + f * c])


def _project(p: np.ndarray, direction: str) -> tuple[float, float, float]:
  """(x, y, depth) in the image of a character-frame point; larger depth = nearer."""
  l, y, f = p
  x, depth = {"down": (l, f), "up": (-l, -f), "right": (f, -l), "left": (-f, l)}[direction]
  return x, y, depth


# --------------------------------------------------------------------------------------
# Rasteriser
# --------------------------------------------------------------------------------------

def _q(v):
  """Rounds to 1/8 pixel so coverage decisions below are exact float arithmetic."""
  return np.round(np.asarray(v, np.float64) * 8.0) / 8.0


def _q2(p) -> tuple[float, float]:
  # Scalar _q for a 2D point; plain floats avoid numpy's per-call overhead, which is
  # most of the cost for shapes this small.
  return round(float(p[0]) * 8.0) / 8.0, round(float(p[1]) * 8.0) / 8.0


_GRID_Y, _GRID_X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5


def _dilate(m: np.ndarray) -> np.ndarray:
  d = m.copy()
  d[1:] |= m[:-1]
  d[:-1] |= m[1:]
  d[:, 1:] |= m[:, :-1]
  d[:, :-1] |= m[:, 1:]
  return d


def _window(x0, x1, y0, y1):
  """Slices of the pixels whose centres may lie in [x0, x1] x [y0, y1]: shapes are small,
  so testing only their bounding box is most of the rasteriser's speed."""
  c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)) + 1, IMAGE_SIZE)
  r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, IMAGE_SIZE)
  return (slice(r0, max(r0, r1)), slice(c0, max(c0, c1)))


def _capsule_mask(a, b, r) -> np.ndarray:
  (ax, ay), (bx, by) = _q2(a), _q2(b)
  m = np.zeros(_GRID_X.shape, bool)
  win = _window(min(ax, bx) - r, max(ax, bx) + r, min(ay, by) - r, max(ay, by) + r)
  dx, dy = bx - ax, by - ay
  px, py = _GRID_X[win] - ax, _GRID_Y[win] - ay
  n = dx * dx + dy * dy
  if n > 0:
    t = (px * dx + py * dy) / n
    np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)
    px -= t * dx
    py -= t * dy
  m[win] = px * px + py * py <= r * r
  return m


def _ellipse_mask(c, rx, ry, rot=0.0) -> np.ndarray:
  u, v = _local(c, rot)
  return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _polygon_mask(pts) -> np.ndarray:
  """Convex polygon (any winding)."""
  pts = _q(pts)
  m = np.zeros(_GRID_X.shape, bool)
  win = _window(pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max())
  gx, gy = _GRID_X[win], _GRID_Y[win]
  m_pos = np.ones(gx.shape, bool)
  m_neg = np.ones(gx.shape, bool)
  for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
    cross = (x1 - x0) * (gy - y0) - (y1 - y0) * (gx - x0)
    m_pos &= cross >= 0
    m_neg &= cross <= 0
  m[win] = m_pos | m_neg
  return m


def _rot2(rot: float) -> tuple[float, float]:
  # Dyadic cos/sin: see _q.
  return float(np.round(math.cos(rot) * 1024) / 1024), float(np.round(math.sin(rot) * 1024) / 1024)


def _local(c, rot=0.0):
  """Pixel coordinates in a frame centred at c and rotated by rot (u right, v down)."""
  c = _q(c)
  dx, dy = _GRID_X - c[0], _GRID_Y - c[1]
  if rot == 0.0:
    return dx, dy
  co, si = _rot2(rot)
  return co * dx + si * dy, -si * dx + co * dy


def _to_canvas(c, rot, uv) -> np.ndarray:
  co, si = _rot2(rot)
  uv = np.asarray(uv, np.float64)
  return np.stack([c[0] + co * uv[..., 0] - si * uv[..., 1],
                   c[1] + si * uv[..., 0] + co * uv[..., 1]], axis=-1)


class _Canvas:
  """Painter's-algorithm label map; every shape gets a 1-pixel dark outline unless asked."""

  def __init__(self):
    self.labels = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)

  def fill(self, mask, label, outline=True):
    if outline:
      self.labels[_dilate(mask) & ~mask] = OUTLINE
    self.labels[mask] = label

  def capsule(self, a, b, r, label, outline=True):
    self.fill(_capsule_mask(a, b, r), label, outline)

  def polyline(self, pts, r, label, outline=True):
    m = np.zeros(_GRID_X.shape, bool)
    for a, b in zip(pts[:-1], pts[1:]):
      m |= _capsule_mask(a, b, r)
    self.fill(m, label, outline)


# --------------------------------------------------------------------------------------
# Drawing a character
# --------------------------------------------------------------------------------------

def _hair_masks(style: int, view: str, s: int, c, rot) -> tuple[np.ndarray | None, ...]:
  """(hair drawn over the head, hair drawn behind the head/torso, hair in front of torso).

  ``view`` is front/back/side, ``s`` the facing sign in profile (+1: facing right). The
  shapes are in head-local pixels: u to the image right, v down, a = s*u forward.
  """
  u, v = _local(c, rot)
  a = s * u
  rx, ry = _HEAD_RX, _HEAD_RY
  in_head = (u / (rx + 1)) ** 2 + (v / (ry + 1)) ** 2 <= 1.0
  over = behind = front = None

  def rect(u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)

  def spikes(angles, sweep):
    """Triangles rooted on the scalp at ``angles`` (from straight up), tilted by sweep."""
    m = np.zeros(u.shape, bool)
    for g in angles:
      d = np.array([math.sin(g + sweep), -math.cos(g + sweep)])
      n = np.array([d[1], -d[0]])
      base = 0.8 * np.array([rx * math.sin(g), -ry * math.cos(g)])
      m |= _polygon_mask(_to_canvas(c, rot, np.array([base + 2.6 * n, base - 2.6 * n,
                                                      base + 5.5 * d])))
    return m

  cap = {"front": (v < -2.5) | ((np.abs(u) > rx - 1.5) & (v < 0.5)),
         "back": v < 3.5,
         "side": (v < -2.5) | ((a < -1.0) & (v < 3.0))}[view]

  if style == 0:  # bald
    pass
  elif style in (1, 2, 4):  # short cap (long and ponytail add to it)
    over = in_head & cap
    if style == 2:  # long: a curtain down to the shoulders
      if view == "front":
        behind = rect(-rx - 1.5, rx + 1.5, -2.0, 11.0) & ((v < 8.0) | (np.abs(u) > 3.0))
      elif view == "back":
        over = in_head
        front = rect(-rx - 1.0, rx + 1.0, 0.0, 12.0) & ((u / (rx + 1)) ** 2 + ((v - 5) / 8.0) ** 2 <= 1.0)
      else:
        front = (a >= -rx - 1.5) & (a <= -0.5) & (v >= -2.0) & (v <= 12.0) & \
            (((a + 0.5) / (rx + 1.0)) ** 2 + ((v + 2.0) / 14.0) ** 2 <= 1.0)
    elif style == 4:  # ponytail: a tied knot up top and one tail
      knot = ((u / 2.5) ** 2 + ((v + ry + 0.5) / 2.0) ** 2 <= 1.0) if view != "side" else \
          (((a + rx - 1.0) / 2.5) ** 2 + ((v + ry - 1.5) / 2.0) ** 2 <= 1.0)
      tail_pts = {"front": [(rx - 1.0, -ry + 1.0), (rx + 2.5, -2.0), (rx + 2.0, 8.0)],
                  "back": [(0.0, -ry + 2.0), (0.0, 4.0), (0.5, 12.0)],
                  "side": [(-rx + 1.0, -ry + 2.0), (-rx - 3.5, 3.0), (-rx - 2.5, 11.0)]}[view]
      tail_pts = np.array(tail_pts)
      if view == "side":
        tail_pts[:, 0] *= s
      pts = _to_canvas(c, rot, tail_pts)
      tail = _capsule_mask(pts[0], pts[1], 2.25) | _capsule_mask(pts[1], pts[2], 2.0)
      if view == "back":
        over = over | knot | tail
      else:
        behind = tail
        over = over | knot
  elif style == 3:  # spiky: the cap plus a crown of spikes, swept back in profile
    over = in_head & (v < -2.5 if view == "front" else cap)
    if view == "side":
      over |= spikes([s * g for g in (-0.9, -0.35, 0.2, 0.75, 1.3)], -s * 0.5)
    else:
      over |= spikes((-1.25, -0.65, 0.0, 0.65, 1.25), 0.0)
  elif style == 5:  # mohawk: a tall narrow crest on a shaved head
    crest = (u / (rx + 3.5)) ** 2 + (v / (ry + 4.5)) ** 2 <= 1.0
    if view == "front":
      over = crest & (np.abs(u) <= 1.75) & (v < -1.5)
    elif view == "back":
      over = crest & (np.abs(u) <= 1.75) & (v < 4.0)
    else:
      # A fin standing on the scalp from forehead to crown; the scalp itself stays bare.
      fin = (u / (rx + 3.0)) ** 2 + (v / (ry + 4.5)) ** 2 <= 1.0
      over = fin & (v < -ry * 0.3) & (a < rx - 2.0) & (a > -rx + 0.5) & \
          ~((u / rx) ** 2 + (v / ry) ** 2 <= 1.0)
  return over, behind, front


def _draw_label_map(body: int, hair: int, weapon: int, pose: int) -> np.ndarray:
  action, direction, frame = POSES[pose]
  P = _ACTION_POSE[action](frame)
  g = _BODY[body]
  view = {"down": "front", "up": "back", "left": "side", "right": "side"}[direction]
  facing = -1 if direction == "left" else 1
  profile = view == "side"
  root = np.array([0.0, 0.0, P.root_f])

  # --- 3D joints
  def upper(p):
    return _lean(np.asarray(p, np.float64), P.lean) + root
  joints = {}
  for name, side, arm in (("l", 1, P.arm_l), ("r", -1, P.arm_r)):
    sh = upper([side * (g["shoulder"] + 0.5 * g["arm_r"]), _Y_SHOULDER + 1.0, 0.0])
    el = sh + _UPPER_ARM * _limb(arm[0], arm[1], side)
    fore = _limb(arm[2], arm[3], side)
    wr = el + _FOREARM * fore
    joints["arm_" + name] = (sh, el, wr, fore)
  for name, side, leg in (("l", 1, P.leg_l), ("r", -1, P.leg_r)):
    hip = np.array([side * (g["hip"] - g["leg_r"] * 0.9), _Y_HIP, 0.0]) + root
    kn = hip + _THIGH * _limb(leg[0], leg[2], side)
    an = kn + _SHIN * _limb(leg[1], leg[2], side)
    toe = an + np.array([0.0, 0.5, 3.0])
    joints["leg_" + name] = (hip, kn, an, toe)
  head = upper([0.0, _Y_HEAD, 0.0])
  neck = (upper([0.0, _Y_SHOULDER + 1.0, 0.0]), upper([0.0, _Y_SHOULDER - 3.0, 0.0]))
  # The torso as the quadrilateral it shows from this side: shoulders to hips across the
  # body from the front or back, chest to back in profile.
  sw, hw, dp = g["shoulder"], g["hip"], g["depth"]
  if profile:
    torso3 = [(0, _Y_SHOULDER, -dp), (0, _Y_SHOULDER, dp), (0, _Y_HIP + 1, dp), (0, _Y_HIP + 1, -dp)]
    belt3 = [(0, _Y_HIP - 1, -dp), (0, _Y_HIP - 1, dp)]
  else:
    torso3 = [(-sw, _Y_SHOULDER, 0), (sw, _Y_SHOULDER, 0), (hw, _Y_HIP + 1, 0), (-hw, _Y_HIP + 1, 0)]
    belt3 = [(-hw, _Y_HIP - 1, 0), (hw, _Y_HIP - 1, 0)]
  torso3, belt3 = [upper(p) for p in torso3], [upper(p) for p in belt3]

  # --- project to the image, then roll (falling) and put the lowest point on the ground
  def proj(p):
    x, y, d = _project(p, direction)
    return np.array([x, y]), d
  pivot = np.array([0.0, 40.0])
  co, si = math.cos(P.roll), math.sin(P.roll)
  def xy(p):
    q = proj(p)[0] - pivot
    return pivot + np.array([co * q[0] - si * q[1], si * q[0] + co * q[1]])
  ground_pts = [joints[k][i] for k in ("leg_l", "leg_r") for i in (1, 2, 3)] + [head]
  ground_pts += [joints[k][2] for k in ("arm_l", "arm_r")]
  lowest = max(xy(p)[1] + (_HEAD_RY if p is head else 2.0) for p in ground_pts)
  shift = np.array([IMAGE_SIZE / 2, _GROUND - lowest])
  if P.roll:  # fallen over: centre head-to-feet horizontally, else the head leaves the frame
    soles = (joints["leg_l"][2] + joints["leg_r"][2]) / 2 + np.array([0.0, 2.0, 0.0])
    crown = upper([0.0, _Y_HEAD - _HEAD_RY - 3.0, 0.0])
    shift[0] -= (xy(crown)[0] + xy(soles)[0]) / 2
  def X(p):
    return xy(p) + shift
  depth = lambda p: proj(p)[1]

  canvas = _Canvas()
  items = []  # (depth, order, draw-callable)

  def add(d, fn):
    items.append((d, len(items), fn))

  # Limbs: in profile the far limbs are shaded; legs sit just behind the torso so the belt
  # and vest hem stay on top.
  for name in ("l", "r"):
    hip, kn, an, toe = joints["leg_" + name]
    d_leg = float(np.mean([depth(p) for p in (kn, an)]))
    far = profile and depth(hip) < 0
    trouser, shoe = (TROUSER_FAR, SHOE_FAR) if far else (TROUSER, SHOE)
    def draw_leg(hip=hip, kn=kn, an=an, toe=toe, trouser=trouser, shoe=shoe):
      canvas.polyline([X(hip), X(kn), X(an)], g["leg_r"], trouser)
      canvas.capsule(X(an), X(toe) if profile else X(an) + [0, 0.5], 1.9, shoe)
    add(-1.0 + 0.1 * d_leg if profile else -1.0 + 0.3 * d_leg, draw_leg)

  hand_depth = {}
  for name in ("l", "r"):
    sh, el, wr, fore = joints["arm_" + name]
    d_arm = float(np.mean([depth(p) for p in (el, wr)]))
    if profile:
      d_arm = depth(sh) + 0.5 * (d_arm - depth(sh))
    far = profile and depth(sh) < 0
    sleeve, skin = (SLEEVE_FAR, SKIN_FAR) if far else (SLEEVE, SKIN)
    hand_depth[name] = d_arm
    add(d_arm, lambda sh=sh, el=el, wr=wr, s_=sleeve: canvas.polyline(
        [X(sh), X(el), X(wr)], g["arm_r"], s_))
    add(d_arm + 0.02, lambda wr=wr, fore=fore, k=skin: canvas.capsule(
        X(wr), X(wr + 0.8 * fore), g["arm_r"] + 0.4, k))

  add(-0.2, lambda: canvas.capsule(X(neck[0]), X(neck[1]), 2.0, SKIN))

  def draw_torso():
    canvas.fill(_polygon_mask([X(p) for p in torso3]), VEST)
    # Broad shoulders read better rounded.
    if not profile:
      canvas.capsule(X(torso3[0]) + [1.0, 1.0], X(torso3[1]) + [-1.0, 1.0], 1.5, VEST, outline=False)
    b0, b1 = X(belt3[0]), X(belt3[1])
    canvas.capsule(b0, b1, 1.0, BELT, outline=False)
  add(0.0, draw_torso)

  hc = X(head)
  roll = P.roll
  over, behind, front = _hair_masks(hair, view, facing, hc, roll)
  if behind is not None:
    # Behind the head; also behind the torso when seen from the front.
    add(-0.5 if view == "front" else 0.05, lambda: canvas.fill(behind, HAIR))

  def draw_head():
    if not profile:  # ears
      for side in (-1, 1):
        ear = _to_canvas(hc, roll, np.array([side * _HEAD_RX, 0.5]))
        canvas.fill(_ellipse_mask(ear, 1.5, 2.0, roll), SKIN)
    canvas.fill(_ellipse_mask(hc, _HEAD_RX, _HEAD_RY, roll), SKIN)
    if view == "front":
      for side in (-1, 1):
        eye = _to_canvas(hc, roll, np.array([side * 2.5, 0.5]))
        canvas.fill(_ellipse_mask(eye, 0.75, 1.25, roll), EYE, outline=False)
      m0, m1 = _to_canvas(hc, roll, np.array([[-1.25, 4.25], [1.25, 4.25]]))
      canvas.capsule(m0, m1, 0.5, MOUTH, outline=False)
    elif profile:
      nose = _to_canvas(hc, roll, np.array([facing * (_HEAD_RX + 0.25), 1.5]))
      canvas.fill(_ellipse_mask(nose, 1.25, 1.25, roll), SKIN)
      # The head again, unoutlined, erases the nose's outline where it joins the face.
      canvas.fill(_ellipse_mask(hc, _HEAD_RX, _HEAD_RY, roll), SKIN, outline=False)
      eye = _to_canvas(hc, roll, np.array([facing * 3.0, 0.5]))
      canvas.fill(_ellipse_mask(eye, 0.75, 1.25, roll), EYE, outline=False)
    if over is not None:
      canvas.fill(over, HAIR)
  add(0.5, draw_head)
  if front is not None:
    add(0.6, lambda: canvas.fill(front, HAIR))

  # Weapon, held in one hand: over that arm (it is held on the outside of the arm) but
  # under the fist, which closes over the grip.
  if weapon:
    sh, el, wr, fore = joints["arm_" + P.w_hand]
    side = 1 if P.w_hand == "l" else -1
    d = _unit(fore if P.w_dir is None else (side * P.w_dir[0], P.w_dir[1], P.w_dir[2]))
    hand = wr + 0.8 * fore
    other = joints["arm_" + ("r" if P.w_hand == "l" else "l")][2]
    add(hand_depth[P.w_hand] + 0.01,
        lambda: _draw_weapon(canvas, weapon, hand, d, side, X, P.bow_draw, other))

  for _, _, fn in sorted(items, key=lambda t: (t[0], t[1])):
    fn()
  return canvas.labels


def _draw_weapon(canvas, weapon, hand, d, side, X, bow_draw, other_hand):
  at = lambda t: X(hand + t * d)
  if weapon == 1:  # sword: grip, gold cross-guard, long blade
    n = np.cross(d, (0.0, 0.0, 1.0)) if abs(d[2]) < 0.9 else np.cross(d, (0.0, 1.0, 0.0))
    n = _unit(n) if np.linalg.norm(n) > 1e-6 else np.array([1.0, 0.0, 0.0])
    canvas.capsule(at(2.0), at(15.0), 1.25, METAL)
    canvas.capsule(X(hand + 1.75 * d - 2.75 * n), X(hand + 1.75 * d + 2.75 * n), 1.0, GOLD)
    canvas.capsule(at(-2.5), at(1.0), 0.9, WOOD)
  elif weapon == 2:  # spear: long shaft, steel head
    canvas.capsule(at(-8.0), at(17.0), 0.75, WOOD)
    canvas.capsule(at(17.0), at(21.5), 1.75, METAL)
    canvas.capsule(at(20.5), at(23.0), 0.75, METAL)
  elif weapon == 3:  # bow: an arc through the hand, bulging forward and outward
    # Outward as well as forward, so the curve shows from the front and in profile.
    b = np.array([side * 0.8, 0.0, 1.0])
    b = _unit(b - np.dot(b, d) * d)
    ts = np.linspace(-1.0, 1.0, 9)
    pts = [X(hand + 10.0 * t * d + 3.5 * (1.0 - t * t) * b) for t in ts]
    tips = (X(hand - 10.0 * d), X(hand + 10.0 * d))
    if bow_draw:
      canvas.capsule(tips[0], X(other_hand), 0.4, STRING, outline=False)
      canvas.capsule(X(other_hand), tips[1], 0.4, STRING, outline=False)
    else:
      canvas.capsule(tips[0], tips[1], 0.4, STRING, outline=False)
    canvas.polyline(pts, 1.0, WOOD)
  elif weapon == 4:  # staff: tall shaft topped with a glowing orb
    canvas.capsule(at(-9.0), at(12.0), 1.0, WOOD)
    canvas.fill(_ellipse_mask(at(14.5), 2.75, 2.75), ORB)


@functools.lru_cache(maxsize=None)
def label_map(body: int, hair: int, weapon: int, pose: int) -> np.ndarray:
  """[64, 64] uint8 part labels of one (body, hair, weapon, pose); read-only, cached."""
  m = _draw_label_map(body, hair, weapon, pose)
  m.setflags(write=False)
  return m


def _check_attrs(attrs: Mapping[str, int]) -> None:
  for k in APPEARANCE:
    if not 0 <= int(attrs[k]) < FACTOR_SIZES[k]:
      raise ValueError(f"{k}={attrs[k]} out of range [0, {FACTOR_SIZES[k]})")


def render_character(attrs: Mapping[str, int], pose: int) -> np.ndarray:
  """[64, 64, 3] uint8 image of a character (``APPEARANCE`` keys; extra keys ignored)."""
  _check_attrs(attrs)
  if not 0 <= pose < NUM_POSES:
    raise ValueError(f"pose={pose} out of range [0, {NUM_POSES})")
  lut = palette(attrs["skin"], attrs["vest"], attrs["hair"], attrs["arm"], attrs["leg"])
  return lut[label_map(int(attrs["body"]), int(attrs["hair"]), int(attrs["weapon"]), int(pose))]


def render_batch(attrs: Mapping[str, Sequence[int]], poses: Sequence[int]) -> np.ndarray:
  """[N, 64, 64, 3] uint8: ``attrs[k][i]`` and ``poses[i]`` describe image i."""
  poses = np.asarray(poses, np.int64)
  cols = {k: np.broadcast_to(np.asarray(attrs[k], np.int64), poses.shape) for k in APPEARANCE}
  out = np.empty((len(poses), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for i in range(len(poses)):
    out[i] = render_character({k: cols[k][i] for k in APPEARANCE}, int(poses[i]))
  return out


# --------------------------------------------------------------------------------------
# tfds builder
# --------------------------------------------------------------------------------------

SMALL_POSES = tuple(pose_index("walk", d, f) for d in DIRECTIONS for f in (1, 3, 5, 7))
TINY_POSES = (pose_index("walk", "down", 0), pose_index("walk", "left", 3),
              pose_index("spellcast", "down", 3), pose_index("slash", "right", 2))


@dataclasses.dataclass(eq=False)
class SpritesConfig(tfds.core.BuilderConfig):
  """``poses``: the pose ids generated; ``manual``: read the real data from manual_dir."""
  poses: tuple[int, ...] = tuple(range(NUM_POSES))
  manual: bool = False


def variant_values(poses: Sequence[int]) -> dict[str, tuple[str, ...]]:
  """The names of the values that ``pose``, ``direction``, ``action`` and ``frame`` take
  in a variant made of ``poses`` (sprite-sheet order): what its ClassLabels list, so a
  variant's features (and the dataset card, ``python -m djax.data.show``) describe what it
  holds: sprites/small has 16 poses, 4 directions, 1 action (walk), 4 frames (1, 3, 5, 7).
  Stored values index these names; ``pose_id`` keeps the sprite-sheet id (``decode_pose``)."""
  poses = sorted(set(int(p) for p in poses))
  used = [POSES[p] for p in poses]
  return {
      "pose": tuple(POSE_NAMES[p] for p in poses),
      "direction": tuple(d for d in DIRECTIONS if any(u[1] == d for u in used)),
      "action": tuple(a for a in ACTIONS if any(u[0] == a for u in used)),
      "frame": tuple(str(f) for f in range(MAX_FRAMES) if any(u[2] == f for u in used)),
  }


MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Only the `original` config reads manual_dir; the others are generated locally.
Place one .npz per character under
  <manual_dir>/sprites/{train,validation,test}/*.npz
each with `images` [178, 64, 64, 3] uint8 (or float in [0, 1]; 60x60 frames are
edge-padded to 64x64) in sprite-sheet pose order (spellcast, thrust, walk, slash, shoot
x up, left, down, right; then hurt), `character` (int in [0, 672)) and the ints
`body, skin, vest, hair, arm, leg, weapon` (cardinalities 2, 4, 3, 6, 2, 2, 5).
See the docstring of djax.data.sprites for how Reed et al.'s release maps onto this.
"""


class Sprites(LocalBuilder):
  """Procedural Sprites-like characters (Reed et al. 2015 structure); see module doc."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Procedural renderer; 672 characters x up to 178 poses.",
      "2.0.0": "Each config's pose, direction, action and frame labels list the values it "
               "holds (small: 16 poses, not 178); pose_id is the sprite-sheet pose id.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      SpritesConfig(name="full", poses=tuple(range(NUM_POSES)),
                    description="All 178 poses; 119,616 images."),
      SpritesConfig(name="small", poses=SMALL_POSES,
                    description="4 directions x walk frames 1, 3, 5, 7 (16 poses)."),
      SpritesConfig(name="tiny", poses=TINY_POSES, description="4 poses, for tests."),
      SpritesConfig(name="original", manual=True,
                    description="The real Sprites data from manual_dir (see instructions)."),
  ]
  DEFAULT_CONFIG_NAME = "small"


  def _description(self) -> str:
    """Says what this config holds, from its poses (not a fixed text)."""
    cfg = self.builder_config
    n = len(cfg.poses)
    if cfg.manual:
      return (f"Reed et al.'s Sprites, read from manual_dir: characters x {n} poses, 7 "
              f"appearance factors.")
    return ("Procedurally generated pixel-art characters with the structure of Reed et al.'s "
            f"Sprites: {NUM_CHARACTERS} characters x {n} poses ({NUM_CHARACTERS * n:,} "
            f"images), 7 appearance factors.")

  def _info(self) -> tfds.core.DatasetInfo:
    values = variant_values(self.builder_config.poses)
    labels = {k: tfds.features.ClassLabel(names=list(values.get(k, FACTOR_NAMES[k])))
              for k in FACTORS}
    return tfds.core.DatasetInfo(
        builder=self,
        description=self._description(),
        features=tfds.features.FeaturesDict({
            # zlib: plain backgrounds compress ~10x, and it serialises as one bytes value
            # instead of 12,288 int64s (several times faster to write).
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                                          encoding="zlib"),
            **labels,
            "direction": tfds.features.ClassLabel(names=list(values["direction"])),
            "action": tfds.features.ClassLabel(names=list(values["action"])),
            "frame": tfds.features.ClassLabel(names=list(values["frame"])),
            "character": tfds.features.ClassLabel(num_classes=NUM_CHARACTERS),
            # the sprite-sheet pose id (0..177, decode_pose), the same in every config
            "pose_id": tfds.features.Scalar(dtype=np.int64),
        }),
        homepage="https://papers.nips.cc/paper/5845-deep-visual-analogy-making",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    if self.builder_config.manual:
      root = dl_manager.manual_dir / "sprites"
      return {split: self._generate_manual(root / split) for split in SPLIT_SIZES}
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    for character in split_characters(split):
      attrs = character_attributes(character)
      lut = palette(attrs["skin"], attrs["vest"], attrs["hair"], attrs["arm"], attrs["leg"])
      for pose in self.builder_config.poses:
        image = lut[label_map(attrs["body"], attrs["hair"], attrs["weapon"], pose)]
        yield character * NUM_POSES + pose, _example(image, character, attrs, pose)

  def _generate_manual(self, directory):
    files = sorted(directory.glob("*.npz"))
    if not files:
      raise FileNotFoundError(f"no .npz files in {directory}\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    for path in files:
      with path.open("rb") as fh, np.load(fh) as z:
        images = _as_uint8_64(z["images"], path)
        character = int(z["character"])
        attrs = {k: int(z[k]) for k in APPEARANCE}
      _check_attrs(attrs)
      for pose in range(NUM_POSES):
        yield character * NUM_POSES + pose, _example(images[pose], character, attrs, pose)


def _example(image, character, attrs, pose):
  """Labels by name (tfds encodes them as indices into the config's names), plus the
  sprite-sheet pose id."""
  action, direction, frame = POSES[pose]
  return {"image": image, **attrs, "pose": POSE_NAMES[pose], "direction": direction,
          "action": action, "frame": str(frame), "character": character, "pose_id": pose}


def _as_uint8_64(images: np.ndarray, path) -> np.ndarray:
  if images.ndim != 4 or images.shape[0] != NUM_POSES or images.shape[-1] != 3:
    raise ValueError(f"{path}: images must be [{NUM_POSES}, H, W, 3], got {images.shape}")
  if images.dtype != np.uint8:
    images = np.clip(np.round(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  pad_h, pad_w = IMAGE_SIZE - images.shape[1], IMAGE_SIZE - images.shape[2]
  if pad_h < 0 or pad_w < 0:
    raise ValueError(f"{path}: frames larger than {IMAGE_SIZE}x{IMAGE_SIZE}: {images.shape}")
  if pad_h or pad_w:
    images = np.pad(images, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                             (pad_w // 2, pad_w - pad_w // 2), (0, 0)), mode="edge")
  return images


_CITATION = """\
@inproceedings{reed2015deep,
  title={Deep Visual Analogy-Making},
  author={Reed, Scott E and Zhang, Yi and Zhang, Yuting and Lee, Honglak},
  booktitle={Advances in Neural Information Processing Systems},
  year={2015}
}"""


# --------------------------------------------------------------------------------------
# Preview sheets: python -m djax.data.sprites docs/
# --------------------------------------------------------------------------------------

def _sheet(rows: Sequence[Sequence[np.ndarray]], row_titles, cell_titles, scale=2):
  """Tiles images into a labelled PIL image (titles above cells, left of rows)."""
  from PIL import Image, ImageDraw
  cell, pad, left, top = IMAGE_SIZE * scale, 4, 70, 14
  ncol = max(len(r) for r in rows)
  sheet = Image.new("RGB", (left + ncol * (cell + pad), len(rows) * (cell + top + pad)),
                    (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for i, row in enumerate(rows):
    y = i * (cell + top + pad)
    draw.text((4, y + top + cell // 2 - 6), row_titles[i], fill=(0, 0, 0))
    for j, img in enumerate(row):
      x = left + j * (cell + pad)
      draw.text((x + 2, y + 1), cell_titles[i][j][:18], fill=(0, 0, 0))
      sheet.paste(Image.fromarray(np.kron(img, np.ones((scale, scale, 1), np.uint8))),
                  (x, y + top))
  return sheet


def save_previews(directory: str) -> None:
  """Writes sprites_grid.png (characters x poses) and sprites_factors.png (one factor
  varied per row) into ``directory``."""
  out = epath.Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  poses = [("walk", "down", 0), ("walk", "down", 3), ("walk", "up", 3), ("walk", "left", 3),
           ("walk", "right", 7), ("spellcast", "down", 3), ("spellcast", "left", 4),
           ("thrust", "right", 5), ("thrust", "down", 6), ("slash", "left", 1),
           ("slash", "up", 3), ("shoot", "right", 7), ("hurt", "down", 2), ("hurt", "down", 5)]
  chars = list(range(8))
  rows = [[render_character(character_attributes(c), pose_index(*p)) for p in poses]
          for c in chars]
  titles = ["/".join(FACTOR_NAMES[k][v][:5] for k, v in character_attributes(c).items()
                     if k in ("hair", "weapon")) for c in chars]
  _sheet(rows, [f"char {c}\n{t}" for c, t in zip(chars, titles)],
         [[f"{a[:5]} {d} {f}" for a, d, f in poses]] * len(rows)).save(out / "sprites_grid.png")

  base = dict(body=0, skin=0, vest=0, hair=1, arm=0, leg=0, weapon=1)
  walk = pose_index("walk", "down", 3)
  rows, row_titles, cell_titles = [], [], []
  for k in APPEARANCE:
    rows.append([render_character({**base, k: v}, walk) for v in range(FACTOR_SIZES[k])])
    row_titles.append(k)
    cell_titles.append(list(FACTOR_NAMES[k]))
  for action in ACTIONS[:-1]:
    rows.append([render_character(base, pose_index(action, d, ACTION_FRAMES[action] // 2))
                 for d in DIRECTIONS])
    row_titles.append(f"pose:\n{action}")
    cell_titles.append([f"{d} {ACTION_FRAMES[action] // 2}" for d in DIRECTIONS])
  rows.append([render_character(base, pose_index("walk", "right", f)) for f in range(9)])
  row_titles.append("pose:\nwalk cycle")
  cell_titles.append([f"right {f}" for f in range(9)])
  rows.append([render_character(base, pose_index("hurt", "down", f)) for f in range(6)])
  row_titles.append("pose:\nhurt")
  cell_titles.append([f"down {f}" for f in range(6)])
  _sheet(rows, row_titles, cell_titles).save(out / "sprites_factors.png")


if __name__ == "__main__":
  import sys
  save_previews(sys.argv[1] if len(sys.argv) > 1 else "docs")
