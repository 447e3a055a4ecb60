"""The offline datasets, really generated: mnist_5k, styled_mnist (tiny), three_moons; and
``python -m djax.data.show`` on them."""

import math

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from djax.data import (mnist_5k, mnist_5k_elastic, pipeline, show, stable_random, styled_mnist,
                       three_moons)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("offline_tfds"))


def _cfg(name, data_dir, image_size=None, value_range=(-1.0, 1.0), **kw):
  c = ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, manual_dir="",
                                     image_size=image_size, value_range=value_range,
                                     in_memory_max_gb=4.0))
  c.update(kw)
  return c


def test_stable_random_is_the_same_everywhere():
  np.testing.assert_allclose(stable_random.uniform([1, 2, 3], 3),
                             [0.67047226, 0.11101464, 0.51150908], rtol=1e-7)
  np.testing.assert_array_equal(stable_random.integers([4], 5, 1, 10), [10, 6, 10, 1, 7])
  np.testing.assert_allclose(stable_random.normal([5], 2), [-1.79981068, -0.40519251], rtol=1e-7)


# ------------------------------------------------------------------------------- mnist_5k


def test_mnist_5k_builder(data_dir):
  train, meta = pipeline.load_split(_cfg("mnist_5k", data_dir, 28), "train")
  test, _ = pipeline.load_split(_cfg("mnist_5k", data_dir, 28), "test")
  assert (len(train), len(test)) == (4000, 1000)
  assert meta.factors == {"label": 10} and meta.label_key == "label"
  assert meta.image_shape == (28, 28, 1) and len(meta.class_names) == 10
  # the features of tfds mnist (decoded): uint8 [28, 28, 1] and a 10-class label
  tfds_mnist = tfds.builder("mnist", data_dir=data_dir).info.features
  assert tuple(tfds_mnist["image"].shape) == train.arrays["image"].shape[1:]
  assert train.arrays["image"].dtype == np.uint8
  assert tfds_mnist["label"].num_classes == 10
  # stratified 400 / 100 per class, disjoint, the csv's digits
  assert (np.bincount(train.arrays["label"]) == 400).all()
  assert (np.bincount(test.arrays["label"]) == 100).all()
  images, labels = mnist_5k.load_arrays()
  tr, te = mnist_5k.split_indices("train"), mnist_5k.split_indices("test")
  assert not set(tr) & set(te) and len(set(tr) | set(te)) == 5000
  rows = {images[i].tobytes(): labels[i] for i in te}
  for x, y in zip(test.arrays["image"][:50], test.arrays["label"][:50]):
    assert rows[x.tobytes()] == y


def test_elastic_copies_keep_the_originals_and_distort_smoothly():
  images, _ = mnist_5k.split_arrays("train")
  x = images[:40, ..., 0]
  out = mnist_5k_elastic.elastic_copies(x, copies=3)
  assert out.shape == (120, 28, 28) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:40], x)  # copy 0: the digits themselves
  np.testing.assert_array_equal(out, mnist_5k_elastic.elastic_copies(x, copies=3))  # seeded
  for c in (1, 2):
    d = out[40 * c:40 * (c + 1)].astype(np.float32)
    diff = np.abs(d - x).mean(axis=(1, 2))
    assert (diff > 1).all()  # every copy moved
    # ... but stays the same digit: ink is roughly kept and lies where the digit was
    ink, ink0 = d.sum((1, 2)), x.astype(np.float32).sum((1, 2))
    assert np.median(np.abs(ink / ink0 - 1)) < 0.15 and np.all(np.abs(ink / ink0 - 1) < 0.6)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(d, x)]
    assert np.median(corr) > 0.5, corr
  assert not np.array_equal(out[40:80], out[80:])  # each copy its own field


def test_mnist_5k_elastic_builder(data_dir, monkeypatch):
  # Two copies instead of 15 keep the test quick; the builder code path is the same.
  monkeypatch.setattr(mnist_5k_elastic, "COPIES", 2)
  cfg = _cfg("mnist_5k_elastic", data_dir + "/elastic", 28)
  train, meta = pipeline.load_split(cfg, "train")
  test, _ = pipeline.load_split(cfg, "test")
  assert (len(train), len(test)) == (8000, 1000)
  assert meta.factors == {"label": 10} and meta.label_key == "label"
  images, labels = mnist_5k.split_arrays("train")
  # tfds stores examples in its own order: compare (image, label) multisets.
  want = sorted(zip((im.tobytes() for im in mnist_5k_elastic.elastic_copies(
      images[..., 0], copies=2)), np.tile(labels, 2).tolist()))
  got = sorted(zip((im[..., 0].tobytes() for im in train.arrays["image"]),
                   train.arrays["label"].tolist()))
  assert got == want
  t_images, t_labels = mnist_5k.split_arrays("test")
  assert sorted(zip((im.tobytes() for im in test.arrays["image"]), test.arrays["label"].tolist())) \
      == sorted(zip((im.tobytes() for im in t_images), t_labels.tolist()))


def test_mnist_5k_batches(data_dir):
  p = pipeline.get_dataset(_cfg("mnist_5k", data_dir, 32, (0.0, 1.0)), "train", batch_size=16,
                           num_devices=2, seed=1)
  b = p.batch(5)
  assert b["image"].shape == (2, 8, 32, 32, 1) and b["image"].dtype == np.float32
  assert b["image"].min() == 0.0 and b["image"].max() == 1.0
  assert (b["image"][:, :, :2] == 0).all()  # Mathieu's 32x32: zero padding
  assert p.steps_per_epoch == 250 and p.epoch_of(250) == 1
  again = pipeline.get_dataset(_cfg("mnist_5k", data_dir, 32, (0.0, 1.0)), "train",
                               batch_size=16, num_devices=2, seed=1).batch(5)
  np.testing.assert_array_equal(again["image"], b["image"])
  with pytest.raises(ValueError, match=r"'mnist_5k' gives .*28.*32.*image_size=64"):
    pipeline.get_dataset(_cfg("mnist_5k", data_dir, 64), "train", batch_size=16,
                         num_devices=1, seed=0)


# --------------------------------------------------------------------------- styled_mnist


@pytest.fixture(scope="module")
def styled(data_dir):
  cfg = _cfg("styled_mnist/tiny", data_dir, 64, (0.0, 1.0))
  return {s: pipeline.load_split(cfg, s) for s in styled_mnist.SPLITS}


def test_styled_mnist_splits_and_metadata(styled):
  sizes = {s: len(src) for s, (src, _) in styled.items()}
  assert sizes == {"reference": 40, "unlabelled": 80, "test_fit": 20, "test_eval": 20}
  meta = styled["unlabelled"][1]
  assert meta.image_shape == (64, 64, 3) and meta.label_key == "label"
  assert meta.continuous_factors == styled_mnist.FACTOR_RANGES
  ref, unl = styled["reference"][0].arrays, styled["unlabelled"][0].arrays
  assert not set(ref["digit"]) & set(unl["digit"])  # the two halves of the train digits
  assert len(set(ref["label"])) >= 8  # a class-balanced sample, not the first rows


def test_reference_digits_are_untransformed_edges(styled):
  ref = styled["reference"][0].arrays
  images, _, ids = styled_mnist.source_digits("mnist_5k", "train", limit=80)
  digit = {int(i): images[k] for k, i in enumerate(ids)}
  for k in range(5):
    d = digit[int(ref["digit"][k])]
    np.testing.assert_array_equal(ref["image"][k], styled_mnist.reference_image(d))
    edge = styled_mnist.edges(d)
    assert set(np.unique(ref["image"][k])) == {0, 255}
    assert (ref["image"][k][..., 0] > 0).sum() == edge.sum()
    for f in styled_mnist.FACTORS:
      assert ref[f][k] == 1.0


def test_unlabelled_digits_are_transformed_twice_as_stated(styled):
  unl = styled["unlabelled"][0].arrays
  digits, counts = np.unique(unl["digit"], return_counts=True)
  assert (counts == 2).all()
  assert (unl["width"] == np.round(unl["width"])).all()
  assert unl["width"].min() >= 1 and unl["width"].max() <= 10
  np.testing.assert_allclose(unl["R"] + unl["G"] + unl["B"], 1.0, rtol=1e-5)
  assert unl["scale"].min() >= 0.5 and unl["scale"].max() <= 1.0
  for k in range(10):
    x = unl["image"][k].astype(np.float64)
    # colour: every pixel is its grey level times (R, G, B)
    grey = x.max(axis=-1) / max(unl["R"][k], unl["G"][k], unl["B"][k])
    rgb = np.stack([unl["R"][k], unl["G"][k], unl["B"][k]])
    assert np.abs(x - grey[..., None] * rgb).max() <= 1.0
    # size: the digit fits in the centred box of side round(64 * scale)
    side = int(round(64 * unl["scale"][k]))
    top = (64 - side) // 2
    mask = x.sum(-1) > 0
    assert not mask[:top].any() and not mask[top + side:].any()
    assert not mask[:, :top].any() and not mask[:, top + side:].any()
  # the two copies of a digit differ
  first = np.flatnonzero(unl["digit"] == digits[0])
  assert not np.array_equal(unl["image"][first[0]], unl["image"][first[1]])


def test_transforms_on_a_dot():
  dot = np.zeros((64, 64), bool)
  dot[30, 30] = True
  for k in range(1, 11):
    assert styled_mnist.dilate(dot, k).sum() == k * k
  img = styled_mnist.style(dot, {"R": 0.5, "G": 0.25, "B": 0.25, "scale": 1.0, "width": 3.0})
  assert img[30, 30].tolist() == [128, 64, 64] and (img.sum(-1) > 0).sum() == 9
  small = styled_mnist.style(np.ones((64, 64), bool), {"R": 1.0, "G": 0.0, "B": 0.0,
                                                       "scale": 0.5, "width": 1.0})
  assert (small[..., 0] > 0).sum() == 32 * 32 and small[16:48, 16:48, 0].min() == 255


def test_styled_mnist_pipeline_two_streams(data_dir):
  cfg = _cfg("styled_mnist/tiny", data_dir, 64, (-1.0, 1.0))
  p = pipeline.get_dataset(cfg, "train", batch_size=16, num_devices=2, seed=0,
                           pairing="reference")
  assert p.meta.split == "unlabelled"  # 'train' is the unlabelled split
  b = p.batch(0)
  assert b["image"].shape == b["image_ref"].shape == (2, 8, 64, 64, 3)
  assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
  assert b["labels"]["width"].dtype == np.float32 and b["labels"]["label"].dtype == np.int32
  assert (b["labels_ref"]["scale"] == 1.0).all()
  assert not (b["labels"]["scale"] == 1.0).all()
  again = pipeline.get_dataset(cfg, "train", batch_size=16, num_devices=2, seed=0,
                               pairing="reference").batch(0)
  np.testing.assert_array_equal(again["image_ref"], b["image_ref"])


# ---------------------------------------------------------------------------- three_moons


def test_three_moons_is_zheng_and_suns(data_dir):
  train, meta = pipeline.load_split(_cfg("three_moons", data_dir), "train")
  assert meta.data_key == "point" and not meta.is_image
  assert meta.factors == {"label": 3} and meta.class_names == ("left", "middle", "right")
  a = train.arrays
  assert len(a["label"]) == 9000 and (np.bincount(a["label"]) == 3000).all()
  assert a["point"].dtype == np.float32 and a["point"].shape == (9000, 2)
  centre = np.asarray(three_moons.CENTERS)[a["label"]]
  clean = np.stack([centre + np.cos(a["angle"]), np.sin(a["angle"])], -1)
  noise = a["point"] - clean
  assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.15) < 0.005
  assert a["angle"].min() >= 0 and a["angle"].max() <= math.pi
  # the label is in x, not y: the class means of x are 2.2 apart, those of y equal
  mx = [a["point"][a["label"] == k, 0].mean() for k in range(3)]
  my = [a["point"][a["label"] == k, 1].mean() for k in range(3)]
  np.testing.assert_allclose(np.diff(mx), 2.2, atol=0.05)
  assert np.ptp(my) < 0.05


def test_three_moons_batches(data_dir):
  p = pipeline.get_dataset(_cfg("three_moons", data_dir), "train", batch_size=30,
                           num_devices=3, seed=0, labelled_fraction=0.1, pairing="random")
  b = p.batch(0)
  assert b["point"].shape == b["point2"].shape == (3, 10, 2) and b["point"].dtype == np.float32
  assert b["label_mask"].shape == (3, 10)
  assert abs(p.labelled.mean() - 0.1) < 1e-9


# ---------------------------------------------------------------------------------- show


@pytest.mark.parametrize("name,split", [("mnist_5k", None), ("three_moons", None),
                                        ("styled_mnist/tiny", "reference,unlabelled")])
def test_show_writes_a_grid_and_prints_the_card(data_dir, tmp_path, capsys, name, split):
  from PIL import Image
  out = str(tmp_path / "grid.png")
  argv = [f"--dataset={name}", f"--data_dir={data_dir}", f"--out={out}", "--num=8"]
  if split:
    argv.append(f"--split={split}")
  assert show.main(argv) == 0
  text = capsys.readouterr().out
  with Image.open(out) as im:
    assert im.size[0] > 100 and im.size[1] > 100
  assert f"dataset      {name}" in text and "splits" in text and "source" in text
  if name == "styled_mnist/tiny":
    assert "width [1, 10]" in text and "reference: 40" in text


def test_show_unknown_dataset_is_an_error(capsys):
  assert show.main(["--dataset=no_such_dataset"]) == 2
  assert "known:" in capsys.readouterr().err


def test_show_writes_into_the_working_directory_never_over_tracked_files(
    data_dir, tmp_path, monkeypatch, capsys):
  import subprocess
  monkeypatch.chdir(tmp_path)
  assert show.main(["--dataset=three_moons", f"--data_dir={data_dir}", "--num=8"]) == 0
  assert (tmp_path / "data_three_moons.png").exists()  # no docs/ folder made
  assert not (tmp_path / "docs").exists()
  capsys.readouterr()
  # a default path that git tracks (docs/ run from inside docs/) is refused, untouched
  subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
  subprocess.run(["git", "-C", str(tmp_path), "add", "data_three_moons.png"], check=True)
  before = (tmp_path / "data_three_moons.png").read_bytes()
  assert show.main(["--dataset=three_moons", f"--data_dir={data_dir}", "--num=4"]) == 2
  assert "tracked by git" in capsys.readouterr().err
  assert (tmp_path / "data_three_moons.png").read_bytes() == before
  out = str(tmp_path / "named.png")  # --out writes wherever it is told
  assert show.main(["--dataset=three_moons", f"--data_dir={data_dir}", f"--out={out}"]) == 0


def test_local_builders_prepare_quietly(tmp_path, capsys, caplog):
  """Nothing is downloaded: no tfds "Downloading and preparing dataset Unknown size ..." or
  "downloaded and prepared", no warning that the not-yet-prepared folder has no
  dataset_info.json; one line says what is generated where."""
  import logging
  with caplog.at_level(logging.INFO):
    source, _ = pipeline.load_split(_cfg("three_moons", str(tmp_path)), "test")
    pipeline.load_split(_cfg("three_moons", str(tmp_path)), "train")  # prepared: reused
  assert len(source) == 3000
  out = capsys.readouterr()
  text = out.out + out.err + caplog.text
  assert "Downloading" not in text and "Unknown size" not in text
  assert "downloaded and prepared" not in text
  assert "dataset_info.json" not in text
  assert out.err.count("djax: generating three_moons 1.0.0 locally (nothing is downloaded)") == 1


def test_two_runs_started_together_prepare_a_dataset_once(tmp_path):
  """Two processes reach a fresh data_dir at the same moment: one generates, the other
  waits for it and reads what it wrote (without the lock the second one's rename of its
  incomplete folder failed on the first one's)."""
  import subprocess
  import sys
  barrier = tmp_path / "ready"
  barrier.mkdir()
  data_dir = str(tmp_path / "tfds")
  code = (f"import os, time, ml_collections\n"
          f"from djax.data import pipeline\n"
          f"c = ml_collections.ConfigDict(dict(name='three_moons', data_dir={data_dir!r}, "
          f"manual_dir='', image_size=None, value_range=(-1.0, 1.0), in_memory_max_gb=4.0))\n"
          f"open(os.path.join({str(barrier)!r}, str(os.getpid())), 'w').close()\n"
          f"while len(os.listdir({str(barrier)!r})) < 2: time.sleep(0.01)\n"  # both imported
          f"print(len(pipeline.load_split(c, 'test')[0]))\n")
  procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-500:] for _, e in outs]
  assert [o.strip() for o, _ in outs] == ["3000", "3000"]
  assert sum(e.count("djax: generating three_moons") for _, e in outs) == 1
