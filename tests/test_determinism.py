"""The same seed gives the same numbers with 1 and 2 threads (each run in a fresh process with its own count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PIPELINES = r"""
import hashlib, json, sys, warnings
import numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(int(sys.argv[1]))
from advrec.models import BPRMF, MultVAE
from advrec.robustness import adversarial_fit, attack_embeddings

def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()

# big enough that torch splits its kernels across threads (batches of 2048 × 64 factors)
rng = np.random.default_rng(0)
n, m = 1500, 400
p = rng.power(0.3, m)
rows = np.repeat(np.arange(n), 40)
cols = rng.choice(m, size=len(rows), p=p / p.sum())
X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, m))
X.data[:] = 1.0
users = np.arange(200)
out = {}
bpr = BPRMF(epochs=2, device="cpu").fit(X)
out["BPRMF"] = digest(bpr.score(X, users), [r["loss"] for r in bpr.training_log_])
apr = adversarial_fit(BPRMF(epochs=1, device="cpu"), X, pretrained=bpr)
out["APR"] = digest(apr.score(X, users))
out["PGD"] = digest(attack_embeddings(bpr, X, eps=0.5, method="pgd", steps=2).score(X, users))
vae = MultVAE(epochs=2, device="cpu").fit(X)
out["MultVAE"] = digest(vae.score(X, users), [r["loss"] for r in vae.training_log_])
print(json.dumps(out))
"""


def fingerprints(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(
        [sys.executable, "-c", PIPELINES, str(threads)], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to run torch on two threads")
def test_same_seed_same_numbers_with_one_and_two_threads() -> None:
    one, two = fingerprints(1), fingerprints(2)
    differ = [name for name in one if one[name] != two[name]]
    assert not differ, f"1 and 2 threads give other numbers for {differ}"
