"""The base of djax's own tfds builders (data generated or read locally, no download)."""

from __future__ import annotations

import sys

import tensorflow_datasets as tfds
from etils import epath


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """tfds's download-oriented messages do not fit builders that download nothing: it
  announces "Downloading and preparing dataset Unknown size (download: Unknown size, ...)"
  and then "downloaded and prepared to ...", and its ``is_prepared`` logs a warning ("Variant
  folder ... has no dataset_info.json") whenever the data is not there yet, which for
  these builders is simply the first use. Here: one line (stderr) saying what is generated
  where, and a quiet ``is_prepared``.

  tfds also finds a packaged builder's source through ``importlib_resources``, which is not
  always installed; pointing ``code_path`` at the subclass's own file avoids the lookup."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)

  def is_prepared(self) -> bool:
    # tfds's check (file_utils.is_valid_variant_dir) without its warning: a prepared
    # variant folder holds dataset_info.json and features.json.
    path = epath.Path(self.data_dir)
    return (path / "dataset_info.json").exists() and (path / "features.json").exists()

  def _full_name(self) -> str:
    config = self.builder_config.name if self.builder_config else ""
    return f"{self.name}/{config}" if config else self.name

  def _log_download_bytes(self) -> None:
    print(f"djax: generating {self._full_name()} {self.version} locally (nothing is "
          f"downloaded) in {self.data_dir}", file=sys.stderr, flush=True)

  def _log_download_done(self) -> None:
    pass  # tfds's progress bars have shown it; the next line is the caller's
