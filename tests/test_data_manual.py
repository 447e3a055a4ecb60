"""facescrub and cub: tfds builders that read a manual_dir, tested on files generated in
tmp_path with the datasets' layouts (no real data)."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from djax.data import cub, facescrub, manual_images, pipeline


def _cfg(name, size, tmp_path, manual_dir):
  return ml_collections.ConfigDict(dict(
      name=name, image_size=size, value_range=(0.0, 1.0), data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual_dir) if manual_dir else "", in_memory_max_gb=4.0))


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def test_facescrub_reads_one_folder_per_person(tmp_path):
  root = tmp_path / "faces"
  people = ["Zoe_Saldana", "Adam_Brody", "Kim_Cattrall"]  # sorted: Adam, Kim, Zoe
  shade = {"Adam_Brody": 40, "Kim_Cattrall": 140, "Zoe_Saldana": 240}
  for p in people:
    for i in range(10):
      # not square, not 64x64, some grey: each becomes RGB 64x64 of the person's shade
      img = np.full((80, 70, 3), shade[p], np.uint8)
      _save(str(root / p / f"{p}_{i}.png"), img[..., 0] if i % 2 else img)
  (root / "README.txt").write_text("not an image, not a person")
  cfg = _cfg("facescrub", 64, tmp_path, root)
  train, meta = pipeline.load_split(cfg, "train")
  test, _ = pipeline.load_split(cfg, "test")
  assert meta.image_shape == (64, 64, 3) and meta.label_key == "label"
  assert meta.factors["label"] == 530
  assert len(train) == 27 and len(test) == 3  # 10 % of each person held out
  ex = train.take(np.arange(len(train)))
  labels = np.asarray(ex["label"])
  assert sorted(set(labels.tolist())) == [0, 1, 2]
  for c, p in enumerate(sorted(people)):  # class k is the k-th folder in name order
    imgs = np.asarray(ex["image"])[labels == c]
    assert imgs.shape[1:] == (64, 64, 3) and (imgs == shade[p]).all()
  t = np.asarray(test.take(np.arange(len(test)))["label"])
  assert sorted(t.tolist()) == [0, 1, 2]
  # image_size 32 is the stored 64 area-downsampled
  b = pipeline.get_dataset(_cfg("facescrub", 32, tmp_path, root), "train", batch_size=4,
                           num_devices=1, seed=0).batch(0)
  assert b["image"].shape == (1, 4, 32, 32, 3)


def test_facescrub_without_its_directory_says_which(tmp_path):
  for manual in (None, tmp_path / "nowhere"):
    with pytest.raises(FileNotFoundError) as e:
      pipeline.load_split(_cfg("facescrub", 64, tmp_path, manual), "train")
    msg = str(e.value)
    assert "\n" not in msg and "manual_dir" in msg and "one folder per person" in msg
    if manual:
      assert str(manual) in msg
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no images"):
    pipeline.load_split(_cfg("facescrub", 64, tmp_path, tmp_path / "empty"), "train")


def _write_cub(d, n_per_class=3, classes=(1, 2)):
  rows, labels, split, boxes = [], [], [], []
  i = 0
  for c in classes:
    for k in range(n_per_class):
      i += 1
      rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k}.jpg"
      img = np.zeros((60, 90, 3), np.uint8)  # black, the box a colour per class
      x, y, w, h = 10 + k, 5, 40, 30
      img[y:y + h, x:x + w] = (200, 10 * c, 0)
      _save(str(d / "images" / rel), img)
      rows.append(f"{i} {rel}")
      labels.append(f"{i} {c}")
      split.append(f"{i} {int(k != 0)}")
      boxes.append(f"{i} {float(x)} {float(y)} {float(w)} {float(h)}")
  for name, lines in (("images.txt", rows), ("image_class_labels.txt", labels),
                      ("train_test_split.txt", split), ("bounding_boxes.txt", boxes)):
    (d / name).write_text("\n".join(lines) + "\n")


def test_cub_crops_to_the_boxes_and_keeps_the_official_split(tmp_path):
  manual = tmp_path / "cub_download"
  _write_cub(manual / "CUB_200_2011")  # the tarball's own top folder is found too
  cfg = _cfg("cub", 128, tmp_path, manual)
  train, meta = pipeline.load_split(cfg, "train")
  test, _ = pipeline.load_split(cfg, "test")
  assert meta.image_shape == (128, 128, 3) and meta.factors["label"] == 200
  assert len(train) == 4 and len(test) == 2  # train_test_split.txt: k = 0 is test
  ex = train.take(np.arange(len(train)))
  np.testing.assert_array_equal(np.sort(ex["label"]), [0, 0, 1, 1])
  img = np.asarray(ex["image"])
  # only the box is kept: no black border (JPEG rings a little at the box's edge)
  assert img.shape == (4, 128, 128, 3) and img[..., 0].min() > 60
  assert img[..., 0].mean() > 190
  green = {0: 10, 1: 20}
  for im, c in zip(img, np.asarray(ex["label"])):
    assert abs(float(im[..., 1].mean()) - green[int(c)]) < 8
  b = pipeline.get_dataset(_cfg("cub", 64, tmp_path, manual), "train", batch_size=2,
                           num_devices=1, seed=0).batch(0)
  assert b["image"].shape == (1, 2, 64, 64, 3)  # the paper's 64: 128 area-downsampled


def test_cub_names_the_missing_files(tmp_path):
  d = tmp_path / "partial"
  _write_cub(d)
  os.remove(d / "bounding_boxes.txt")
  with pytest.raises(FileNotFoundError) as e:
    pipeline.load_split(_cfg("cub", 128, tmp_path, d), "train")
  msg = str(e.value)
  assert "\n" not in msg and str(d) in msg and "bounding_boxes.txt" in msg
  assert "images.txt" not in msg.split("lacks")[1].split(";")[0]
  with pytest.raises(FileNotFoundError, match="--config.data.manual_dir"):
    pipeline.load_split(_cfg("cub", 128, tmp_path, None), "train")


def test_stratified_test_split_is_per_class_and_fixed():
  labels = np.repeat([0, 1, 2], [10, 20, 1])
  t = manual_images.stratified_test(labels, 0.1, seed=3)
  assert t[labels == 0].sum() == 1 and t[labels == 1].sum() == 2 and t[labels == 2].sum() == 0
  np.testing.assert_array_equal(t, manual_images.stratified_test(labels, 0.1, seed=3))
  assert not np.array_equal(t, manual_images.stratified_test(labels, 0.1, seed=4))
  assert facescrub.NUM_CLASSES == 530 and cub.SIZE == 128
