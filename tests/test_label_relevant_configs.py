"""The image configs of Zheng & Sun 2019: the paper's architectures as built (CIFAR-10's
Table 3, FaceScrub's VGG-16 + Table 4, CUB at the authors' 128 px), and tiny runs through
djax.train: cifar10 on tfds mock data, facescrub and cub on files generated in tmp_path."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import mock_tfds_data
from djax import train
from djax.data import pipeline
from djax.methods import label_relevant as lr

HERE = os.path.dirname(__file__)


def _config(name, variant=None):
  path = os.path.join(HERE, "..", "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  c.num_devices = 1  # the tiny batches are 4 x 2: one device (the tests force several)
  return c


def _shapes(c, size):
  """Parameter shapes of every group, without computing anything."""
  m = lr.LabelRelevantVAE(c, axis_name=None)
  batch = {"image": jnp.zeros((2, size, size, 3)), "labels": {"label": jnp.zeros(2, jnp.int32)}}
  state = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), batch))
  def kernels(tree):  # in layer order (eval_shape's dicts come back sorted by name)
    order = lambda k: int("".join(ch for ch in k if ch.isdigit()) or -1)
    return [(k, tree[k]["kernel"].shape) for k in sorted(tree, key=order)
            if "kernel" in tree[k]]
  return m, state, kernels


def test_cifar10_config_is_table_3():
  c = _config("label_relevant_cifar10")
  assert c.data.name == "cifar10" and c.data.image_size == 32
  assert (c.model.zs_dim, c.model.zu_dim) == (100, 200)
  assert c.train.batch_size == 4 * 96 and c.loss.n_gm == 3
  m, state, kernels = _shapes(c, 32)  # init checks the decoder gives 32x32x3
  enc = [s for _, s in kernels(state.params["es"]["encoder"])]
  assert enc == [(5, 5, 3, 32), (5, 5, 32, 64), (3, 3, 64, 128), (3, 3, 128, 256),
                 (2 * 2 * 256, 1024), (1024, 100)]
  enc_u = [s for _, s in kernels(state.params["eu"])]
  assert enc_u[-1] == (1024, 2 * 200)  # mean and log-variance of z_u
  dec = [s for _, s in kernels(state.params["g"])]
  assert dec[0] == (300, 1024)  # concat(z_s, z_u) -> fc 1024
  assert [s[:2] for s in dec[1:]] == [(5, 5)] * 6 and dec[-1][-1] == 3
  assert [s[-1] for s in dec[1:]] == [256, 256, 128, 64, 32, 3]
  assert state.params["es"]["gm"]["mu"].shape == (10, 100)
  d = state.params["d"]
  assert "psi" in d and "embed" in d  # projection discriminator
  assert c.model.negative_slope == 0.0 and m.enc_s.negative_slope == 0.0  # Table 3: relu
  paper = _config("label_relevant_cifar10", "paper")
  np.testing.assert_allclose(paper.loss.kl_weight, 10 / 3072)  # §4.2: λ_kl = 10 / N_pixel
  np.testing.assert_allclose(paper.loss.rec_weight_eu, 1 / 200)  # λ_rec = 1 / N_zu
  with pytest.raises(ValueError, match="'paper'"):
    _config("label_relevant_cifar10", "big")


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds mock data (32 examples a split), read as djax reads."""
  with mock_tfds_data(monkeypatch, 32):
    yield


def _check_run(wd, steps=2):
  rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == list(range(1, steps + 1))
  assert all(np.isfinite(r["loss_rec"]) and np.isfinite(r["loss_gm"]) for r in rows)
  samples = os.listdir(os.path.join(wd, "samples"))
  for name in ("class_samples", "inpaint_right_half", "inpaint_bottom_half", "inpaint_centre"):
    assert any(f.startswith(name) for f in samples), (name, samples)
  assert os.path.exists(os.path.join(wd, "eval.json"))


def test_cifar10_tiny_run_on_mock_data(tmp_path, mock_tfds):
  c = _config("label_relevant_cifar10", "tiny")
  wd = str(tmp_path / "run")
  train.train_and_evaluate(c, wd)
  _check_run(wd)


def test_facescrub_config_is_vgg16_and_table_4():
  c = _config("label_relevant_facescrub")
  assert c.data.name == "facescrub" and c.data.image_size == 64
  assert c.model.num_classes == 530 and c.model.zs_dim == c.model.zu_dim == 512
  m, state, kernels = _shapes(c, 64)
  enc = [s for _, s in kernels(state.params["es"]["encoder"])]
  assert len(enc) == 13 + 2  # VGG-16's 13 convs, fc 1024, fc 512 (the code)
  assert [s[-1] for s in enc[:13]] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
  assert enc[13] == (2 * 2 * 512, 1024) and enc[14] == (1024, 512)
  d = kernels(state.params["d"])
  convs = [s for k, s in d if k.startswith("conv")]
  assert [s[-1] for s in convs] == [64, 128, 256, 256, 512, 512, 512]
  dense = [s for k, s in d if k.startswith("dense")]
  assert dense == [(512, 1024)]  # global average pooling: 512 features, not 2x2x512
  assert m.discriminator.global_pool
  adv = [s for _, s in kernels(state.params["cls"])]
  assert adv == [(512, 256), (256, 530)]  # B.2: fc 256, fc 530


def test_cub_config_runs_facescrubs_networks_at_128():
  c = _config("label_relevant_cub")
  assert c.data.name == "cub" and c.data.image_size == 128 and c.model.num_classes == 200
  _, state, kernels = _shapes(c, 128)
  enc = [s for _, s in kernels(state.params["es"]["encoder"])]
  assert enc[13] == (4 * 4 * 512, 1024)  # 128 / 32 = 4
  assert _config("label_relevant_cub", "paper64").data.image_size == 64
  _shapes(_config("label_relevant_cub", "paper64"), 64)


def _faces(root, people=4, per=8):
  rng = np.random.default_rng(0)
  for p in range(people):
    os.makedirs(root / f"person_{p}")
    for i in range(per):
      img = rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)
      Image.fromarray(img).save(root / f"person_{p}" / f"{i}.png")


def test_facescrub_tiny_run_on_generated_faces(tmp_path):
  _faces(tmp_path / "faces")
  c = _config("label_relevant_facescrub", "tiny")
  c.data.manual_dir = str(tmp_path / "faces")
  c.data.data_dir = str(tmp_path / "tfds")
  wd = str(tmp_path / "run")
  train.train_and_evaluate(c, wd)
  _check_run(wd)


def test_cub_config_reads_generated_birds_and_steps(tmp_path):
  d = tmp_path / "CUB_200_2011"
  rng = np.random.default_rng(0)
  lines = {k: [] for k in ("images", "image_class_labels", "train_test_split",
                           "bounding_boxes")}
  for i in range(1, 25):
    c, rel = 1 + i % 3, f"{1 + i % 3:03d}.bird/{i}.jpg"
    os.makedirs(d / "images" / os.path.dirname(rel), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(d / "images" / rel)
    lines["images"].append(f"{i} {rel}")
    lines["image_class_labels"].append(f"{i} {c}")
    lines["train_test_split"].append(f"{i} {int(i % 4 != 0)}")
    lines["bounding_boxes"].append(f"{i} 10.0 12.0 80.0 60.0")
  for k, v in lines.items():
    (d / f"{k}.txt").write_text("\n".join(v) + "\n")
  # The networks are FaceScrub's (its tiny run above; a step at 128 px compiles for a minute
  # on 2 cores); here the config's data reaches the model: a batch of the config's shapes and
  # labels, and the model built on it (init checks the decoder gives 128x128x3).
  c = _config("label_relevant_cub", "tiny")
  c.data.manual_dir = str(tmp_path)
  c.data.data_dir = str(tmp_path / "tfds")
  data = pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=0)
  assert data.meta.size == 18 and data.meta.factors["label"] == 200  # 6 of 24 are test
  b = data.batch(0)
  assert b["image"].shape == (1, 8, 128, 128, 3)
  assert set(np.unique(b["labels"]["label"])) <= {0, 1, 2}
  m = lr.LabelRelevantVAE(c, axis_name=None)
  batch = jax.tree_util.tree_map(lambda v: jnp.asarray(v[0]), b)
  state = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), batch))
  assert state.params["es"]["gm"]["mu"].shape == (200, 4)
