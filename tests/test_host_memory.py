"""djax.host_memory.retain: applied before the backend starts, refused (with the reason)
after; with it, a step that frees a large temporary buffer faults no fresh pages.

The probe needs a 64 MB temporary that every jax version materialises whole. A matrix
product feeding a second matrix product does: jax 0.10's XLA:CPU gives the 4096x4096
product an XLA temporary buffer, jax 0.12's fuses both products into one YNNPACK fusion
(``ynn_fusion``) whose runtime allocates the product as its own scratch, with malloc; both
are served by mmap and returned by munmap unless retain() is on. An elementwise function of
the product (``sum(sin(x @ x.T))``, this test's probe before) no longer works: jax 0.12
fuses the product, the sine and the sum into one tiled YNNPACK fusion that never holds the
whole product, so it faults nothing in either mode (jax 0.10: ~16,000 faults per call by
default).
"""

import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent("""
    import resource, sys
    from djax import host_memory  # first, as djax.main does: before any thread starts
    first = host_memory.retain() if sys.argv[1] == "retain" else "default"
    from djax import methods, train  # importing djax starts no backend
    import jax, jax.numpy as jnp
    # the product (64 MB) is the input of a second product: it exists whole on every version
    f = jax.jit(lambda x: jnp.sum(jnp.sin(x @ x.T) @ x))
    x = jnp.ones((4096, 64))
    for _ in range(30):  # the heap grows to its working size (about 20 calls here)
      f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
      f(x).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    print(jax.__version__)
    print(first)
    print(host_memory.retain())
    print(faults)
""")


def _run(mode):
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                       timeout=300, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  assert out.returncode == 0, out.stderr
  return out.stdout.strip().splitlines()[-4:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_retain_before_backend_and_not_after():
  version, first, second, faults = _run("retain")
  assert first.startswith("host memory: glibc keeps freed memory")
  assert "already started" in second
  _, _, _, faults_default = _run("default")
  # 64 MB freshly mapped each call is ~16,000 page faults (jax 0.10 and 0.12 alike); once
  # the heap has its working size, kept memory needs none.
  assert float(faults_default) > 12000, (version, faults_default)
  assert float(faults) < 100, (version, faults)
