"""One module per paper; ``create`` builds the method a config names."""

from __future__ import annotations

import importlib

METHODS = {
    "mixing": ("djax.methods.mixing", "Mixing"),
    "jacobian_supervision": ("djax.methods.jacobian_supervision", "JacobianSupervision"),
    "jacobian_attributes": ("djax.methods.jacobian_attributes", "AttributeJacobianSupervision"),
}


def create(config, axis_name: str | None = "batch"):
  if config.method not in METHODS:
    raise ValueError(f"unknown method {config.method!r}; known methods: {sorted(METHODS)}")
  module, cls = METHODS[config.method]
  return getattr(importlib.import_module(module), cls)(config, axis_name=axis_name)
