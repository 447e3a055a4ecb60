"""Seconds per metric on N codes of D dims with sprites-like factors (not a test).

    python -m benchmarks.metrics_speed --n=10000 --dims=10,128
"""

import argparse
import time

import numpy as np

from djax.metrics import disentanglement as dm
from djax.metrics import retrieval


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=10000)
  ap.add_argument("--dims", default="10,128")
  ap.add_argument("--metrics", default="retrieval_map,mig,sap,dci,factor_vae,beta_vae")
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  cards = {"body": 2, "skin": 4, "vest": 3, "hair": 6, "arm": 2, "leg": 2, "pose": 16}
  factors = {k: rng.integers(0, c, args.n) for k, c in cards.items()}
  fns = {"retrieval_map": lambda x: retrieval.factor_map(x, factors),
         "mig": lambda x: dm.mig(x, factors), "sap": lambda x: dm.sap(x, factors),
         "dci": lambda x: dm.dci(x, factors), "factor_vae": lambda x: dm.factor_vae(x, factors),
         "beta_vae": lambda x: dm.beta_vae(x, factors)}
  for d in (int(v) for v in args.dims.split(",")):
    codes = np.concatenate([np.stack([factors[k] for k in cards], 1),
                            rng.normal(size=(args.n, max(d - len(cards), 0)))], 1)[:, :d]
    codes = codes + 0.3 * rng.normal(size=codes.shape)
    for name in args.metrics.split(","):
      t = time.time()
      fns[name](codes)
      print(f"N={args.n} D={d} {name}: {time.time() - t:.1f} s", flush=True)


if __name__ == "__main__":
  main()
