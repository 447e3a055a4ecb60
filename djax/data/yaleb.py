"""Extended Yale Face Database B, cropped faces, read from ``manual_dir`` (tfds builder ``yaleb``).

Mathieu et al. 2016 (supplementary §1, Fig. 9) train on Extended-YaleB with s = 64 and
z = 512: the label (what s should carry) is the subject, the unspecified factor (z) the
lighting. The data cannot be downloaded here; djax reads the standard "Cropped Yale" release
of Lee, Ho & Kriegman 2005 (``CroppedYale.zip``,
http://vision.ucsd.edu/~leekc/ExtYaleDatabase/ExtYaleB.html). Unzip it into a directory M and
pass ``--config.data.manual_dir=M``; djax expects::

  M/CroppedYale/yaleB01/yaleB01_P00A+000E+00.pgm
  M/CroppedYale/yaleB01/yaleB01_P00A-005E+10.pgm
  ...
  M/CroppedYale/yaleB39/yaleB39_P00A+130E+20.pgm

38 subject folders (yaleB01..yaleB39; there is no yaleB14), each up to 64 frontal (``P00``)
images under different light directions: ``A{+-}ddd`` is the light's azimuth and
``E{+-}dd`` its elevation in degrees, both parsed from the file name. The
``yaleBNN_P00_Ambient.pgm`` images (no point light, so no light direction) are skipped, and
so is anything not named ``*.pgm`` (the release's ``.bad`` files and ``.info`` lists). Each
image is 192 x 168 (rows x columns) 8-bit grayscale (binary PGM).

Features: ``image`` uint8 [192, 168, 1] as stored; ``subject`` ClassLabel (38 names
yaleB01..yaleB39, the class label); ``azimuth`` and ``elevation`` ClassLabels over the 29 and
12 light angles of the release (names as in the file names, e.g. ``+035``, ``-20``);
``azimuth_degrees`` / ``elevation_degrees`` the same angles as numbers (continuous factors).
A file with another angle or another subject is an error naming the file.

Splits (the paper states none): per subject, a seeded permutation of its images (sorted by
name; ``djax.data.stable_random``) puts one in five in ``test`` and the rest in ``train``, so
both splits hold every subject (s is probed on subjects it was trained on) and nearly every
light direction.

Image size (``djax.data.tfds_datasets.SPECS['yaleb']``): 64 (default) or 32, both the central
168 x 168 square (rows 12..180: the face from eyebrows to chin stays, the aspect ratio is not
distorted) area-resized. The paper does not state the resolution; 64x64 grayscale is the size
of its six-convolution NORB / Yale-B networks in djax (``experiments/mathieu_yaleb.py``) and of
the disentanglement literature.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from djax.data import stable_random
from djax.data.local_builder import LocalBuilder

HEIGHT, WIDTH = 192, 168
# yaleB01..yaleB39 without yaleB14: the 10 subjects of Yale B and the 28 of its extension
SUBJECTS = tuple(f"yaleB{i:02d}" for i in range(1, 40) if i != 14)
# The light directions of the release's 64 images per subject (file names yaleBNN_P00A..E..)
AZIMUTHS = tuple(f"{a:+04d}" for a in (-130, -120, -110, -95, -85, -70, -60, -50, -35, -25,
                                      -20, -15, -10, -5, 0, 5, 10, 15, 20, 25, 35, 50, 60, 70,
                                      85, 95, 110, 120, 130))
ELEVATIONS = tuple(f"{e:+03d}" for e in (-40, -35, -20, -10, 0, 10, 15, 20, 40, 45, 65, 90))
TEST_EVERY = 5  # one image in five of each subject goes to test
SEED = 1938
FOLDER = "CroppedYale"
_NAME = re.compile(r"^(yaleB\d\d)_P00A([+-]\d{3})E([+-]\d{2})\.pgm$")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download CroppedYale.zip (http://vision.ucsd.edu/~leekc/ExtYaleDatabase/ExtYaleB.html) and
unzip it into manual_dir, so that
  <manual_dir>/{FOLDER}/yaleB01/yaleB01_P00A+000E+00.pgm
exists (38 folders yaleB01..yaleB39, 192x168 grayscale .pgm files; *Ambient* files are
skipped). See the docstring of djax.data.yaleb.
"""


def missing_message(manual_dir) -> str:
  """The one-line error for a manual_dir without the Cropped Yale faces."""
  where = os.path.join(os.fspath(manual_dir), FOLDER) if manual_dir else None
  return (f"dataset 'yaleb' reads the Cropped Yale faces from manual_dir, but "
          f"{where or 'no manual_dir was given'}{' does not exist' if where else ''}: download "
          f"CroppedYale.zip (http://vision.ucsd.edu/~leekc/ExtYaleDatabase/ExtYaleB.html), "
          f"unzip it into a directory M so that M/{FOLDER}/yaleB01/yaleB01_P00A+000E+00.pgm "
          f"exists, and pass --config.data.manual_dir=M")


def parse_name(name: str) -> tuple[str, str, str] | None:
  """(subject, azimuth, elevation) of a Cropped Yale file name, None for an ``*Ambient*``
  image; anything else named ``*.pgm`` is an error naming the file."""
  if "Ambient" in name:
    return None
  m = _NAME.match(name)
  if m is None:
    raise ValueError(f"yaleb: cannot read the light direction from {name!r}; Cropped Yale files "
                     f"are named yaleBNN_P00A+aaaE+ee.pgm (e.g. yaleB01_P00A-035E+15.pgm)")
  subject, azimuth, elevation = m.groups()
  for value, known, what in ((subject, SUBJECTS, "subject"), (azimuth, AZIMUTHS, "azimuth"),
                             (elevation, ELEVATIONS, "elevation")):
    if value not in known:
      raise ValueError(f"yaleb: {name!r} has {what} {value}, which Cropped Yale does not hold "
                       f"(known: {', '.join(known)})")
  return subject, azimuth, elevation


def list_images(root) -> list[tuple[str, str, str, str]]:
  """[(path, subject, azimuth, elevation)] of every light-direction image under
  ``root`` (= manual_dir/CroppedYale), sorted by file name."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(missing_message(os.path.dirname(root)))
  out = []
  for folder in sorted(os.listdir(root)):
    directory = os.path.join(root, folder)
    if not os.path.isdir(directory):
      continue
    for name in sorted(os.listdir(directory)):
      if not name.endswith(".pgm"):
        continue
      parsed = parse_name(name)
      if parsed is None:
        continue
      if parsed[0] != folder:
        raise ValueError(f"yaleb: {os.path.join(directory, name)} is subject {parsed[0]} but "
                         f"lies in folder {folder}; put each file in its subject's folder")
      out.append((os.path.join(directory, name), *parsed))
  if not out:
    raise FileNotFoundError(f"dataset 'yaleb' found no yaleBNN_P00A...E....pgm files under "
                            f"{root}: unzip CroppedYale.zip so that "
                            f"{root}/yaleB01/yaleB01_P00A+000E+00.pgm exists")
  return out


def split_of(entries: list[tuple[str, str, str, str]]) -> list[str]:
  """The split of each entry of ``list_images``: per subject (in name order), a seeded
  permutation's first ceil(n / 5) images are ``test``, the others ``train``."""
  splits = ["train"] * len(entries)
  for subject in sorted({e[1] for e in entries}):
    members = [i for i, e in enumerate(entries) if e[1] == subject]
    perm = stable_random.permutation([SEED, SUBJECTS.index(subject)], len(members))
    for rank in perm[:-(-len(members) // TEST_EVERY)]:
      splits[members[rank]] = "test"
  return splits


def read_pgm(path) -> np.ndarray:
  """uint8 [192, 168, 1] of one Cropped Yale image (PIL reads binary and ASCII PGM)."""
  from PIL import Image
  with Image.open(path) as im:
    image = np.asarray(im.convert("L"))
  if image.shape != (HEIGHT, WIDTH):
    raise ValueError(f"yaleb: {path} is {image.shape[0]}x{image.shape[1]}, Cropped Yale images "
                     f"are {HEIGHT}x{WIDTH} (rows x columns)")
  return image[..., None]


CITATION = """\
@article{lee2005acquiring,
  title={Acquiring linear subspaces for face recognition under variable lighting},
  author={Lee, Kuang-Chih and Ho, Jeffrey and Kriegman, David J},
  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume={27}, number={5}, pages={684--698}, year={2005}
}"""


class YaleB(LocalBuilder):
  """Extended Yale B cropped faces from manual_dir; see the module docstring."""

  name = "yaleb"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Cropped Yale from manual_dir; per-subject 4:1 train/test split."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  LABEL_KEY = "subject"
  SOURCE = ("djax builder yaleb: the Cropped Extended Yale Face Database B (Lee, Ho & "
            "Kriegman 2005) read from manual_dir/CroppedYale")
  CITATION = CITATION

  def _log_download_bytes(self) -> None:
    # LocalBuilder's line says "generating"; this builder reads the user's files
    print(f"djax: preparing yaleb {self.version} from manual_dir/{FOLDER} (nothing is "
          f"downloaded) in {self.data_dir}", file=sys.stderr, flush=True)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Extended Yale Face Database B, cropped: 38 subjects under up to 64 light "
                     "directions (frontal pose), 192x168 grayscale; label = subject."),
        features=tfds.features.FeaturesDict({
            # zlib: encoding PNGs in tfds needs TensorFlow; decoded examples are the same
            "image": tfds.features.Tensor(shape=(HEIGHT, WIDTH, 1), dtype=np.uint8,
                                          encoding="zlib"),
            "subject": tfds.features.ClassLabel(names=list(SUBJECTS)),
            "azimuth": tfds.features.ClassLabel(names=list(AZIMUTHS)),
            "elevation": tfds.features.ClassLabel(names=list(ELEVATIONS)),
            "azimuth_degrees": tfds.features.Scalar(dtype=np.float32),
            "elevation_degrees": tfds.features.Scalar(dtype=np.float32),
        }),
        supervised_keys=("image", "subject"),
        homepage="http://vision.ucsd.edu/~leekc/ExtYaleDatabase/ExtYaleB.html",
        citation=self.CITATION,
    )

  def _split_generators(self, dl_manager):
    try:
      manual = dl_manager.manual_dir
    except (AssertionError, ValueError):  # tfds: the directory is missing or empty
      raise FileNotFoundError(missing_message(getattr(dl_manager, "_manual_dir", None))) from None
    entries = list_images(os.path.join(os.fspath(manual), FOLDER))
    splits = split_of(entries)
    return {split: self._generate_examples([e for e, s in zip(entries, splits) if s == split])
            for split in ("train", "test")}

  def _generate_examples(self, entries):
    for path, subject, azimuth, elevation in entries:
      yield os.path.basename(path), {
          "image": read_pgm(path), "subject": subject, "azimuth": azimuth,
          "elevation": elevation, "azimuth_degrees": float(azimuth),
          "elevation_degrees": float(elevation)}
