"""The command line: config files, overrides and the errors a user sees."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-m", "djax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_unknown_override_key_is_rejected(tmp_path):
  r = _run("--config=experiments/mixing_sprites.py:small", f"--workdir={tmp_path}",
           "--config.train.stepz=3")
  assert r.returncode != 0
  assert "stepz" in r.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_unknown_method_names_the_known_ones(tmp_path):
  r = _run("--config=experiments/mixing_sprites.py:small", f"--workdir={tmp_path}",
           "--config.method=mixingg")
  assert r.returncode != 0
  assert "unknown method 'mixingg'" in r.stderr and "mixing" in r.stderr


def test_unknown_variant_is_rejected(tmp_path):
  r = _run("--config=experiments/mixing_sprites.py:huge", f"--workdir={tmp_path}")
  assert r.returncode != 0 and "unknown variant 'huge'" in r.stderr


@pytest.mark.parametrize("variant", ["", ":small"])
def test_configs_build_and_decoders_fit_the_images(variant):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "experiments",
                                                                     "mixing_sprites.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant.lstrip(":") or None)
  from djax.methods import mixing
  mixing.Mixing(config)  # checks the decoder spec against data.image_size
  config.data.image_size = 48
  with pytest.raises(ValueError, match="produces .* images but the data is 48x48"):
    mixing.Mixing(config)
