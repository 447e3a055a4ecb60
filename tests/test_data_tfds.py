"""The tfds image datasets of the papers, read through djax's pipeline on tfds mock data.

``tfds.testing.mock_data`` replaces each dataset's records by random examples of its real
features (shapes, dtypes, class counts), so these tests check djax's side: crops and sizes,
dtypes and value range, factor metadata, determinism; no data is downloaded or prepared.
"""

import ml_collections
import numpy as np
import pytest

from conftest import mock_tfds_data
from djax.data import pipeline, registry, tfds_datasets

NUM_EXAMPLES = 24


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds mock data (NUM_EXAMPLES examples a split), read as djax reads."""
  with mock_tfds_data(monkeypatch, NUM_EXAMPLES):
    yield


def _cfg(name, image_size, value_range=(-1.0, 1.0)):
  return ml_collections.ConfigDict(dict(name=name, image_size=image_size, value_range=value_range,
                                        data_dir="", manual_dir="", in_memory_max_gb=4.0))


# name, image size, channels, factor cardinalities that must be there, label key
CASES = [
    ("mnist", 28, 1, {"label": 10}, "label"),
    ("mnist", 32, 1, {"label": 10}, "label"),
    ("svhn_cropped", 32, 3, {"label": 10}, "label"),
    ("cifar10", 32, 3, {"label": 10}, "label"),
    ("celeb_a", 64, 3, {"Smiling": 2, "Male": 2, "Eyeglasses": 2}, None),
    ("celeb_a", 128, 3, {"Smiling": 2, "Bald": 2}, None),
    ("dsprites", 64, 1, {"label_shape": 3, "label_scale": 6, "label_orientation": 40,
                         "label_x_position": 32, "label_y_position": 32}, None),
    ("shapes3d", 64, 3, {"label_floor_hue": 10, "label_wall_hue": 10, "label_object_hue": 10,
                         "label_scale": 8, "label_shape": 4, "label_orientation": 15}, None),
    ("smallnorb", 96, 1, {"label_category": 5, "instance": 10, "label_elevation": 9,
                          "label_azimuth": 18, "label_lighting": 6}, "label_category"),
    ("smallnorb", 64, 1, {"label_category": 5}, "label_category"),
]


@pytest.mark.parametrize("name,size,channels,factors,label_key", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_tfds_dataset_through_the_pipeline(mock_tfds, name, size, channels, factors, label_key):
  cfg = _cfg(name, size, value_range=(0.0, 1.0))
  p = pipeline.get_dataset(cfg, "train", batch_size=8, num_devices=2, seed=3)
  meta = p.meta
  assert meta.size == NUM_EXAMPLES and meta.image_shape == (size, size, channels)
  for k, n in factors.items():
    assert meta.factors[k] == n, k
  if name == "celeb_a":
    assert len(meta.factors) == 40 and set(meta.factors.values()) == {2}
  assert meta.label_key == label_key
  if label_key:
    assert len(meta.class_names) == factors[label_key]
  spec = tfds_datasets.SPECS[name]
  assert meta.continuous_factors == dict(spec.continuous)
  assert meta.source.startswith(f"tfds {name}")

  b = p.batch(1)
  x = b["image"]
  assert x.shape == (2, 4, size, size, channels) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  for k in factors:
    v = b["labels"][k]
    assert v.shape == (2, 4) and v.dtype == np.int32
    assert 0 <= v.min() and v.max() < factors[k], k
  for k in spec.continuous:
    assert b["labels"][k].shape == (2, 4) and b["labels"][k].dtype == np.float32
  # determinism: same seed, same batch; another seed, another order
  again = pipeline.get_dataset(cfg, "train", batch_size=8, num_devices=2, seed=3).batch(1)
  np.testing.assert_array_equal(again["image"], x)
  other = pipeline.get_dataset(cfg, "train", batch_size=8, num_devices=2, seed=4).batch(1)
  assert not np.array_equal(other["image"], x)


def test_crops_and_pads_are_the_papers():
  rng = np.random.default_rng(0)
  face = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
  spec = tfds_datasets.SPECS["celeb_a"]
  hu = tfds_datasets.apply_variant(face, spec.variant(64))
  np.testing.assert_array_equal(hu, tfds_datasets.resize(face[55:163, 35:143], 64))
  lezama = tfds_datasets.apply_variant(face, spec.variant(128))
  np.testing.assert_array_equal(lezama, tfds_datasets.resize(face[20:198], 128))
  # a box resize by an integer factor is the mean of each block (rounded)
  flat = np.full((108, 108, 3), 77, np.uint8)
  assert (tfds_datasets.resize(flat, 54) == 77).all()
  digit = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
  padded = tfds_datasets.apply_variant(digit, tfds_datasets.SPECS["mnist"].variant(32))
  assert padded.shape == (32, 32, 1) and (padded[2:30, 2:30] == digit).all()
  assert padded.sum() == digit.sum()


def test_dsprites_pixels_become_0_or_255(mock_tfds):
  p = pipeline.get_dataset(_cfg("dsprites", 64, (0.0, 1.0)), "train", batch_size=8,
                           num_devices=1, seed=0)
  x = p.batch(0)["image"]
  assert set(np.unique(x)) <= {0.0, 1.0}


def test_image_size_the_dataset_cannot_give_names_both_sizes(mock_tfds):
  with pytest.raises(ValueError, match=r"'celeb_a' gives .*64.*128.*image_size=100"):
    pipeline.get_dataset(_cfg("celeb_a", 100), "train", batch_size=8, num_devices=1, seed=0)
  with pytest.raises(ValueError, match=r"'cifar10' gives .*32.*image_size=64"):
    registry.check_config(_cfg("cifar10", 64))
  registry.check_config(_cfg("cifar10", 16))  # an area downsampling by 2 is fine


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  cfg = _cfg("mnist", 28)
  cfg.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    pipeline.load_split(cfg, "train")
  msg = str(e.value)
  assert str(tmp_path) in msg and "python -m djax.data.tfds_datasets prepare mnist" in msg
  assert "djax[tf]" in msg and "manual_dir" in msg and "mnist_5k" in msg


def test_unknown_dataset_lists_the_known_names():
  with pytest.raises(ValueError) as e:
    registry.check_config(_cfg("no_such_dataset", 32))
  msg = str(e.value)
  for name in ("sprites", "mnist_5k", "styled_mnist", "three_moons", "celeb_a", "smallnorb"):
    assert name in msg
