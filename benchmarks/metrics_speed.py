"""Seconds per metric on N codes of D dims with sprites-like factors (not a test).

    python -m benchmarks.metrics_speed --n=10000 --dims=10,128

Prints wall and CPU seconds per metric (CPU counts every thread of this process, so CPU >
wall means it used several cores; on a busy shared machine wall > CPU) and the 1-minute load
average before and after, which says how busy the machine was.
"""

import argparse
import os
import time

import numpy as np

from djax.metrics import disentanglement as dm
from djax.metrics import retrieval

METRICS = "retrieval_map,mig,sap,dci,factor_vae,beta_vae"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=10000)
  ap.add_argument("--dims", default="10,128")
  ap.add_argument("--metrics", default=METRICS)
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  cards = {"body": 2, "skin": 4, "vest": 3, "hair": 6, "arm": 2, "leg": 2, "pose": 16}
  factors = {k: rng.integers(0, c, args.n) for k, c in cards.items()}
  fns = {"retrieval_map": lambda x: retrieval.factor_map(x, factors),
         "mig": lambda x: dm.mig(x, factors), "sap": lambda x: dm.sap(x, factors),
         "dci": lambda x: dm.dci(x, factors), "factor_vae": lambda x: dm.factor_vae(x, factors),
         "beta_vae": lambda x: dm.beta_vae(x, factors)}
  print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
  for d in (int(v) for v in args.dims.split(",")):
    codes = np.concatenate([np.stack([factors[k] for k in cards], 1),
                            rng.normal(size=(args.n, max(d - len(cards), 0)))], 1)[:, :d]
    codes = codes + 0.3 * rng.normal(size=codes.shape)
    for name in args.metrics.split(","):
      wall, cpu = time.perf_counter(), time.process_time()
      fns[name](codes)
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      print(f"N={args.n} D={d} {name}: {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
  print(f"load average (1 min) {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
  main()
