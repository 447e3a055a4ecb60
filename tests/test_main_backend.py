"""djax.main applies host_memory.retain() only where it was measured: the CPU backend,
decided before jax starts a backend (JAX_PLATFORMS, else whether an accelerator plugin is
installed)."""

import importlib.util

from djax import main


def test_cpu_backend_expected(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert main.cpu_backend_expected()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not main.cpu_backend_expected()
  monkeypatch.setenv("JAX_PLATFORMS", "tpu")
  assert not main.cpu_backend_expected()
  monkeypatch.delenv("JAX_PLATFORMS")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: object() if name == "jax_cuda12_plugin" else real(name, *a))
  assert not main.cpu_backend_expected()
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name in main._ACCELERATOR_PLUGINS else real(name, *a))
  assert main.cpu_backend_expected()
