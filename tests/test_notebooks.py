"""Every notebook in notebooks/ runs top to bottom on CPU at a tiny size, with this checkout as
its DJAX_SOURCE; the install cell stops the notebook when the source is missing or bad; and
requirements-tpu.txt pins every package djax depends on, inside pyproject's ranges.

The notebook gets its tiny size the way papermill sets parameters: a cell tagged
``injected-parameters`` after the one tagged ``parameters``. Its install cell runs
``pip install -e`` of this checkout only where that changes nothing (this environment's
djax is already an editable install of this checkout, as in CI's virtualenvs); elsewhere
(a developer's environment installed from another checkout) it runs with ``INSTALL=False``.
"""

import glob
import json
import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (ipykernel)")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(glob.glob(str(REPO / "notebooks" / "*.ipynb")))

# The tiny run of each notebook: seconds of compilation, two steps, one metric.
_TINY_MIXING = " ".join([
    "--config.data.name=sprites/tiny", "--config.data.image_size=16",
    "--config.model.n_chunks=4", "--config.model.chunk_size=4",
    "--config.model.encoder_spec=c8k3s2-c16k3s2-f",
    "--config.model.decoder_spec=d16k4-d8k4s2-d3k4s2",
    "--config.model.discriminator_spec=c8k3s2-f",
    "--config.model.classifier_spec=c8k3s2-p-f16-f",
    "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.save_every=2",
    "--config.train.eval_every=0", "\"--config.eval.metrics=('chunk_retrieval_map',)\"",
    "--config.eval.track_every=0", "--config.eval.untrained=False",
    "--config.eval.num_grid_images=2", "--config.progress_bar=False",
    "--config.tensorboard=False", "--config.num_devices=1",
])
_TINY_JACOBIAN = " ".join([
    "--config.stages.num_students=1", "--config.stages.teacher_epochs=1",
    "--config.stages.epochs_per_stage=1", "\"--config.stages.eval_stages=()\"",
    "--config.train.log_every=10", "--config.progress_bar=False",
])
_TINY_LABEL_RELEVANT = " ".join([
    "--config.model.zs_dim=4", "--config.model.zu_dim=4",
    "--config.model.encoder_s_spec=c8k4s2-f", "--config.model.encoder_u_spec=c8k4s2-f",
    "--config.model.decoder_spec=f392-r(7,7,8)-d8k4s2-d1k4s2",
    "--config.model.discriminator_spec=c8k4s2-f16", "--config.model.adversary_spec=f8-f",
    "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.save_every=2",
    "--config.train.eval_every=0", "\"--config.eval.metrics=('linear_probe',)\"",
    "--config.eval.num_grid_images=2", "--config.progress_bar=False",
    "--config.tensorboard=False", "--config.num_devices=1",
])
_TINY_MATHIEU = " ".join([
    "--config.model.trunk_spec=c8k5s2-c16k5s2", "--config.model.adversary_spec=c8k5s2-c16k5s2",
    "--config.model.s_dim=4", "--config.model.z_dim=4",
    "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.save_every=2",
    "--config.train.eval_every=0", "\"--config.eval.metrics=('part_probe',)\"",
    "--config.eval.num_grid_images=2", "--config.progress_bar=False",
    "--config.tensorboard=False", "--config.num_devices=1",
])
TINY = {
    "mixing_sprites_tpu.ipynb": dict(CONFIG="experiments/mixing_sprites.py:small", STEPS=2,
                                     OVERRIDES=_TINY_MIXING),
    "jacobian_mnist_tpu.ipynb": dict(CONFIG="experiments/jacobian_mnist.py:small", STEPS=0,
                                     OVERRIDES=_TINY_JACOBIAN),
    "label_relevant_tpu.ipynb": dict(CONFIG="experiments/label_relevant_mnist.py", STEPS=2,
                                     OVERRIDES=_TINY_LABEL_RELEVANT),
    "mathieu_mnist_tpu.ipynb": dict(CONFIG="experiments/mathieu_mnist.py:small", STEPS=2,
                                    OVERRIDES=_TINY_MATHIEU),
    # one row of Table 1 (tests/test_reference_based.py runs the table command itself)
    "reference_based_tpu.ipynb": dict(CONFIG="experiments/reference_based_mnist.py:tiny,srb_vae",
                                      STEPS=4, OVERRIDES=""),
}
# What each tiny run leaves: (its eval.json relative to WORKDIR, the step it records).
EXPECT = {"mixing_sprites_tpu.ipynb": ("eval.json", 2),
          "jacobian_mnist_tpu.ipynb": ("stage_01/eval.json", 31),
          "label_relevant_tpu.ipynb": ("eval.json", 2),
          "mathieu_mnist_tpu.ipynb": ("eval.json", 2),
          "reference_based_tpu.ipynb": ("eval.json", 4)}


def _installed_from_this_checkout() -> bool:
  """Whether this environment's djax is an editable install of this very checkout."""
  # the installed dist-info (a djax.egg-info in the checkout, left by setuptools, has no
  # direct_url.json and can come first on sys.path)
  for dist in metadata.distributions(name="djax"):
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    if info:
      return bool(info.get("dir_info", {}).get("editable")) and info.get("url") == REPO.as_uri()
  return False


def _with_parameters(path, **params):
  """The notebook with ``params`` injected after its ``parameters`` cell (as papermill)."""
  nb = nbformat.read(path, as_version=4)
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{path}: one cell tagged 'parameters', found {len(tagged)}"
  source = "# Injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
  cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(tagged[0] + 1, cell)
  return nb


def _execute(nb, cwd, env):
  old = dict(os.environ)
  os.environ.clear()
  os.environ.update(env)  # the kernel (and what it runs) inherits this environment
  try:
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    return client.execute()
  finally:
    os.environ.clear()
    os.environ.update(old)


def _env(tmp_path):
  env = dict(os.environ)
  env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")  # the data the tiny run generates
  env["DJAX_COMPILE_CACHE"] = str(tmp_path / "xla")
  env.pop("XLA_FLAGS", None)  # conftest's four forced devices: the notebook runs on one
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _outputs(nb) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))


def test_every_notebook_has_a_tiny_run():
  assert NOTEBOOKS, "notebooks/ is empty"
  assert {os.path.basename(p) for p in NOTEBOOKS} == set(TINY)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_from_this_checkout(path, tmp_path):
  install = _installed_from_this_checkout()
  workdir = tmp_path / "run"
  nb = _with_parameters(path, DJAX_SOURCE=str(REPO), REQUIREMENTS="", INSTALL=install,
                        WORKDIR=str(workdir), **TINY[os.path.basename(path)])
  nb = _execute(nb, tmp_path, _env(tmp_path))
  text = _outputs(nb)
  assert f"djax checkout: {REPO}" in text
  if install:
    assert f"pip install -q -e {REPO}" in text
  rel, step = EXPECT[os.path.basename(path)]
  assert (workdir / rel).exists() and glob.glob(str(workdir / os.path.dirname(rel) / "samples"
                                                     / "*.png"))
  with open(workdir / rel) as f:
    assert json.load(f)["step"] == step
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images, "the results cell shows the sample overview"


@pytest.mark.parametrize("source,error", [
    ("", "set DJAX_SOURCE"),
    ("/nonexistent/djax.git", "CalledProcessError"),  # git clone fails: the run stops there
])
def test_install_cell_stops_the_notebook_on_a_bad_source(source, error, tmp_path):
  nb = _with_parameters(NOTEBOOKS[0], DJAX_SOURCE=source, INSTALL=False,
                        WORKDIR=str(tmp_path / "run"))
  with pytest.raises(nbclient.exceptions.CellExecutionError, match=error):
    _execute(nb, tmp_path, _env(tmp_path))
  assert not (tmp_path / "run").exists()  # nothing after the install cell ran


def _name(requirement: str) -> str:
  return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_tpu_pins_every_dependency_within_its_range():
  from packaging.requirements import Requirement
  with open(REPO / "pyproject.toml", "rb") as f:
    deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
  pins = {}
  for line in (REPO / "requirements-tpu.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      req = Requirement(line)
      pins[_name(req.name)] = req
  for dep in deps:
    pin = pins.get(_name(dep.name))
    assert pin is not None, f"requirements-tpu.txt does not pin {dep.name}"
    exact = [s.version for s in pin.specifier if s.operator == "=="]
    assert exact, f"requirements-tpu.txt: {pin} is not an exact pin"
    assert dep.specifier.contains(exact[0], prereleases=True), (
        f"requirements-tpu.txt pins {pin}, outside pyproject's {dep}")
