"""The Extended Yale B builder (``yaleb``) on generated Cropped Yale files: the layout it reads,
the labels it parses from the file names, the split, the crop and resize, and the errors."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from djax.data import pipeline, registry, tfds_datasets
from djax.data import yaleb as Y

SUBJECTS = ("yaleB01", "yaleB15", "yaleB39")
LIGHTS = (("+000", "+00"), ("-035", "+15"), ("+130", "+20"), ("-110", "-20"), ("+005", "-10"),
          ("+070", "+45"), ("-020", "-40"))


def _write_pgm(path, image):
  """A binary PGM (P5) as in the Cropped Yale release."""
  h, w = image.shape
  with open(path, "wb") as f:
    f.write(f"P5\n{w} {h}\n255\n".encode() + image.astype(np.uint8).tobytes())


def _write_cropped_yale(root, subjects=SUBJECTS, lights=LIGHTS):
  """root/CroppedYale/yaleBNN/yaleBNN_P00A...E....pgm, plus an Ambient image and the
  release's other files; returns {file name: (image, subject, azimuth, elevation)}."""
  rng = np.random.default_rng(0)
  written = {}
  for subject in subjects:
    d = root / "CroppedYale" / subject
    d.mkdir(parents=True)
    for azimuth, elevation in lights:
      name = f"{subject}_P00A{azimuth}E{elevation}.pgm"
      image = rng.integers(0, 256, (192, 168), dtype=np.uint8)
      _write_pgm(d / name, image)
      written[name] = (image, subject, azimuth, elevation)
    _write_pgm(d / f"{subject}_P00_Ambient.pgm", np.zeros((192, 168), np.uint8))
    (d / f"{subject}_P00.info").write_text("the release's list of files\n")
    (d / f"{subject}_P00A+050E-40.pgm.bad").write_bytes(b"corrupt")
  return written


def _cfg(data_dir, manual_dir, image_size=64):
  return ml_collections.ConfigDict(dict(name="yaleb", image_size=image_size,
                                        value_range=(0.0, 1.0), data_dir=str(data_dir),
                                        manual_dir=str(manual_dir), in_memory_max_gb=4.0))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("yaleb")
  written = _write_cropped_yale(root / "manual")
  builder = Y.YaleB(data_dir=str(root / "data"), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
  return root, written, builder


def test_builder_reads_the_cropped_yale_layout(prepared):
  _, written, builder = prepared
  sources = builder.as_data_source()
  seen = {}
  features = builder.info.features
  for split in ("train", "test"):
    for e in sources[split]:
      subject = features["subject"].int2str(int(e["subject"]))
      azimuth = features["azimuth"].int2str(int(e["azimuth"]))
      elevation = features["elevation"].int2str(int(e["elevation"]))
      name = f"{subject}_P00A{azimuth}E{elevation}.pgm"
      assert name not in seen, name
      seen[name] = split
      image, w_subject, w_azimuth, w_elevation = written[name]
      np.testing.assert_array_equal(e["image"][..., 0], image)  # stored as read, 192x168
      assert (subject, azimuth, elevation) == (w_subject, w_azimuth, w_elevation)
      assert float(e["azimuth_degrees"]) == int(azimuth)
      assert float(e["elevation_degrees"]) == int(elevation)
  # every light-direction image once; Ambient, .info and .bad files skipped
  assert set(seen) == set(written)
  # per subject, ceil(7 / 5) = 2 images in test, the other 5 in train
  for subject in SUBJECTS:
    splits = [s for n, s in seen.items() if n.startswith(subject)]
    assert splits.count("test") == 2 and splits.count("train") == 5, subject
  assert features["subject"].num_classes == 38
  assert (features["azimuth"].num_classes, features["elevation"].num_classes) == (29, 12)


def test_split_is_a_function_of_the_files():
  entries = [(f"/x/{s}_P00A{a}E{e}.pgm", s, a, e) for s in SUBJECTS for a, e in LIGHTS]
  first = Y.split_of(entries)
  assert first == Y.split_of(list(entries))
  # another subject's files do not move this subject's split
  fewer = Y.split_of(entries[:len(LIGHTS)])
  assert fewer == first[:len(LIGHTS)]
  # subjects differ in which images they hold out (a per-subject permutation)
  per_subject = [tuple(first[i * len(LIGHTS):(i + 1) * len(LIGHTS)]) for i in range(3)]
  assert len(set(per_subject)) > 1


@pytest.mark.parametrize("size", [64, 32])
def test_pipeline_crops_the_central_square_and_resizes(prepared, size):
  root, written, _ = prepared
  cfg = _cfg(root / "data", root / "manual", size)
  registry.check_config(cfg)
  p = pipeline.get_dataset(cfg, "train", batch_size=5, num_devices=1, seed=0)
  meta = p.meta
  assert meta.image_shape == (size, size, 1) and meta.label_key == "subject"
  assert meta.factors == {"subject": 38, "azimuth": 29, "elevation": 12}
  assert meta.continuous_factors == {"azimuth_degrees": (-130.0, 130.0),
                                     "elevation_degrees": (-40.0, 90.0)}
  assert len(meta.class_names) == 38 and meta.class_names[0] == "yaleB01"
  b = p.batch(0)
  x = b["image"][0]
  assert x.shape == (5, size, size, 1) and x.dtype == np.float32
  for i in range(5):
    subject = Y.SUBJECTS[int(b["labels"]["subject"][0, i])]
    azimuth = Y.AZIMUTHS[int(b["labels"]["azimuth"][0, i])]
    elevation = Y.ELEVATIONS[int(b["labels"]["elevation"][0, i])]
    image = written[f"{subject}_P00A{azimuth}E{elevation}.pgm"][0]
    want = tfds_datasets.resize(image[12:180, :, None], size).astype(np.float32) / 255.0
    np.testing.assert_allclose(x[i], want, atol=1e-6)
    assert float(b["labels"]["azimuth_degrees"][0, i]) == int(azimuth)


def test_a_size_it_cannot_give_names_the_sizes(prepared):
  root, _, _ = prepared
  with pytest.raises(ValueError, match=r"'yaleb' gives \[32, 64\].*image_size=48"):
    registry.check_config(_cfg(root / "data", root / "manual", 48))


@pytest.mark.parametrize("make", ["nothing", "empty", "other_files"])
def test_missing_manual_dir_is_one_line_naming_it(tmp_path, make):
  manual = tmp_path / "manual"
  if make != "nothing":
    manual.mkdir()
  if make == "other_files":
    (manual / "README.txt").write_text("not the faces")
  cfg = _cfg(tmp_path / "data", manual)
  with pytest.raises(FileNotFoundError) as e:
    pipeline.get_dataset(cfg, "train", batch_size=4, num_devices=1, seed=0)
  msg = str(e.value)
  assert "\n" not in msg
  assert str(manual) in msg and "CroppedYale" in msg and "--config.data.manual_dir" in msg
  assert "yaleB01_P00A+000E+00.pgm" in msg


def test_no_manual_dir_at_all_says_to_pass_one(tmp_path):
  cfg = _cfg(tmp_path / "data", "")
  with pytest.raises(FileNotFoundError, match=r"--config.data.manual_dir=M") as e:
    pipeline.get_dataset(cfg, "train", batch_size=4, num_devices=1, seed=0)
  assert "\n" not in str(e.value)


def test_bad_file_names_are_errors_naming_the_file(tmp_path):
  assert Y.parse_name("yaleB02_P00_Ambient.pgm") is None
  assert Y.parse_name("yaleB02_P00A-035E+15.pgm") == ("yaleB02", "-035", "+15")
  with pytest.raises(ValueError, match=r"'yaleB02_P00A\+033E\+15.pgm' has azimuth \+033"):
    Y.parse_name("yaleB02_P00A+033E+15.pgm")
  with pytest.raises(ValueError, match=r"has subject yaleB14"):
    Y.parse_name("yaleB14_P00A+000E+00.pgm")
  with pytest.raises(ValueError, match=r"cannot read the light direction from 'face.pgm'"):
    Y.parse_name("face.pgm")
  root = tmp_path / "CroppedYale"
  (root / "yaleB01").mkdir(parents=True)
  _write_pgm(root / "yaleB01" / "yaleB02_P00A+000E+00.pgm", np.zeros((192, 168)))
  with pytest.raises(ValueError, match=r"subject yaleB02 but lies in folder yaleB01"):
    Y.list_images(root)
  _write_pgm(tmp_path / "small.pgm", np.zeros((100, 80)))
  with pytest.raises(ValueError, match=r"small.pgm is 100x80.*192x168"):
    Y.read_pgm(tmp_path / "small.pgm")


def test_yaleb_config_builds_the_six_conv_model():
  import importlib.util
  from djax import methods
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "mathieu_yaleb.py")
  spec = importlib.util.spec_from_file_location("mathieu_yaleb_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  assert (c.data.name, c.data.image_size, c.data.label_key) == ("yaleb", 64, "subject")
  assert (c.model.s_dim, c.model.z_dim, c.model.num_classes) == (64, 512, 38)
  layers = c.model.trunk_spec.split("-")
  assert len(layers) == 6 and all("k3" in layer for layer in layers)
  assert [layer.endswith("s2") for layer in layers] == [False, True] * 3
  method = methods.create(c)
  assert method.code_parts() == {"s": slice(0, 64), "z": slice(64, 576)}
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("tiny")


def test_a_failed_prepare_succeeds_once_the_files_are_there(tmp_path):
  cfg = _cfg(tmp_path / "data", tmp_path / "manual")
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "README.txt").write_text("not the faces")
  with pytest.raises(FileNotFoundError):
    pipeline.get_dataset(cfg, "train", batch_size=4, num_devices=1, seed=0)
  written = _write_cropped_yale(tmp_path / "manual", subjects=("yaleB02",))
  p = pipeline.get_dataset(cfg, "test", batch_size=2, num_devices=1, seed=0)
  assert p.meta.size == 2 and len(written) == len(LIGHTS)
