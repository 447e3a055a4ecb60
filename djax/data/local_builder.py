"""The base of djax's own tfds builders (data generated or read locally, no download)."""

from __future__ import annotations

import sys

import tensorflow_datasets as tfds
from etils import epath


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """tfds finds a packaged builder's source through ``importlib_resources``, which is not
  always installed; pointing ``code_path`` at the subclass's own file avoids the lookup."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)
