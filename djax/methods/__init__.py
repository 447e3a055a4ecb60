"""The method registry: a new method is one file in this package and one entry here."""

from __future__ import annotations

import importlib

METHODS: dict[str, str | type] = {
    "mixing": "djax.methods.mixing:Mixing",
    "jacobian_supervision": "djax.methods.jacobian_supervision:JacobianSupervision",
    "jacobian_attributes": "djax.methods.jacobian_attributes:AttributeJacobianSupervision",
    "mathieu": "djax.methods.specified_unspecified:SpecifiedUnspecified",
    "label_relevant_vae": "djax.methods.label_relevant:LabelRelevantVAE",
    "vae_family": "djax.methods.vae_family:VaeFamily",
    "reference_based": "djax.methods.reference_based:ReferenceBased",
}


def register(name: str, cls: type) -> None:
  """Adds a method class under ``name`` (e.g. a method defined outside djax)."""
  METHODS[name] = cls


def get_class(name: str) -> type:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
  entry = METHODS[name]
  if isinstance(entry, str):
    module, cls = entry.split(":")
    entry = getattr(importlib.import_module(module), cls)
  return entry


def create(config, axis_name: str | None = "batch"):
  return get_class(config.method)(config, axis_name=axis_name)
