"""A cost model of training across nodes: measured compute per epoch, computed communication per epoch, a link.

Predicts the epoch time of BPRMF (DDP), MultVAE (DDP) and IALS (all-gather) at 1, 2, 4, 8, 16 nodes on the
1M × 100k synthetic set (`benchmarks/scale.py`'s largest size: 1M users, 100k items, 40M training interactions):

    T(w) = C / w  +  B(w) / bandwidth  +  M(w) · latency

- C: the one-thread epoch time measured by `benchmarks/scale.py` (results/scale.json); for the DDP models times the
  ratio of the autograd step (what DDP trains through) to BPRMF's written-out step, measured on ml-1m here
  (`autograd_ratio`). MultVAE was not run at 1M × 100k: its C is extrapolated from the 100k × 10k epoch with the
  measured growth exponent in U·I (labelled). A node is one such one-thread process; compute splits perfectly.
- B(w): the bytes one node sends per epoch. DDP: every step all-reduces every gradient (dense), a ring sends
  2(w − 1)/w of the P parameters' bytes: S · 2(w − 1)/w · 4P, S steps per epoch. IALS: each half-step all-gathers
  the factors, (w − 1)/w of (U + I) · d floats per iteration. These are the formulas the comm hook and IALS's
  counter measure; `benchmarks/results/distributed.md` has the measured bytes at 2 processes to check them.
- M(w): messages per epoch, 2(w − 1) per ring all-reduce of each 25 MB bucket (DDP), (w − 1) per all-gather (IALS).
- No overlap of communication with compute (DDP overlaps bucket all-reduces with the backward pass: the
  prediction is an upper bound), no stragglers, the same speed per node as this machine's one thread.

Also the row-sparse alternative for BPRMF that advrec does not implement: exchanging only the rows a step touched
(B users + 2B items) instead of whole tables, to show what the dense all-reduce costs.

    python benchmarks/distributed_cost.py      # writes benchmarks/results/distributed_cost.{json,md}
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
NODES = (1, 2, 4, 8, 16)
LINKS = {"10 Gbit/s": 1.25e9, "100 Gbit/s": 12.5e9}
LATENCY = 20e-6  # seconds per message
BUCKET = 25 * 2**20  # DDP's default bucket size in bytes
FACTORS, HIDDEN, LATENT = 64, 600, 32  # BPRMF / IALS factors; MultVAE's defaults
BPR_BATCH, VAE_BATCH = 8192, 500


def autograd_ratio(repeats: int = 3) -> float:
    """Seconds per BPRMF epoch through autograd (as under DDP) over the written-out step's, on ml-1m, 1 thread."""
    import torch

    from advrec.data import load_dataset
    from advrec.data.splits import ratio_split
    from advrec.models import BPRMF
    from advrec.models.torch_base import TrainingPlugin

    torch.set_num_threads(1)
    train = ratio_split(load_dataset("ml-1m"), (0.8, 0.1, 0.1), random_state=2020).train
    times: dict[str, list[float]] = {"closed": [], "autograd": []}
    for _ in range(repeats):
        for name, plugins in (("closed", []), ("autograd", [TrainingPlugin()])):
            model = BPRMF(epochs=3, device="cpu", random_state=0).fit(train, plugins=plugins)
            times[name].append(float(np.median([r["seconds"] for r in model.training_log_])))
    return float(np.median(times["autograd"]) / np.median(times["closed"]))


def inputs(ratio: float) -> dict[str, dict[str, Any]]:
    scale = json.loads((RESULTS / "scale.json").read_text())
    rows = {(r["size"], r["model"]): r for r in scale["rows"]}
    big = rows[("1m", "IALS")]
    users, items, n = big["users"], big["items"], train_size(big["interactions"])
    vae_small = rows[("100k", "MultVAE")]
    exponent = scale["exponents"]["MultVAE"]["epoch_s vs U·I"]
    growth = (users * items / (vae_small["users"] * vae_small["items"])) ** exponent
    vae_params = 2 * items * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + 2 * HIDDEN + 2 * LATENT + items
    return {
        "IALS": {"compute": big["epoch_s"], "source": "measured (1 thread)", "users": users, "items": items},
        "BPRMF": {
            "compute": rows[("1m", "BPRMF")]["epoch_s"] * ratio, "source": f"measured × {ratio:.2f} (autograd step)",
            "params": (users + items) * FACTORS, "steps": math.ceil(n / BPR_BATCH),
        },
        "MultVAE": {
            "compute": vae_small["epoch_s"] * growth,
            "source": f"extrapolated: {vae_small['epoch_s']:.0f} s at 100k × 10k × (U·I growth)^{exponent:.2f}",
            "params": vae_params, "steps": math.ceil(users / VAE_BATCH),
        },
    }  # fmt: skip


def predict(model: str, spec: dict[str, Any], w: int, bandwidth: float) -> dict[str, float]:
    if model == "IALS":
        sent = (w - 1) / w * (spec["users"] + spec["items"]) * FACTORS * 4
        messages = 2 * (w - 1)
    else:
        nbytes = 4 * spec["params"]
        sent = spec["steps"] * 2 * (w - 1) / w * nbytes
        messages = spec["steps"] * math.ceil(nbytes / BUCKET) * 2 * (w - 1)
    compute = spec["compute"] / w
    comm = sent / bandwidth + messages * LATENCY
    return {"compute_s": compute, "comm_s": comm, "epoch_s": compute + comm, "bytes": sent}


def sparse_bpr(w: int, bandwidth: float, compute: float, n: int) -> float:
    """BPRMF epoch time if each step all-gathered only the rows it touched (B users + 2B items) instead."""
    steps = math.ceil(n / BPR_BATCH)
    sent = steps * (w - 1) / w * 3 * BPR_BATCH * FACTORS * 4
    return compute / w + sent / bandwidth + steps * (w - 1) * LATENCY


def train_size(interactions: int) -> int:
    """Training interactions of scale.py's per-user 8:2 split."""
    return round(0.8 * interactions)


def main() -> None:
    ratio = autograd_ratio()
    spec = inputs(ratio)
    rows_scale = json.loads((RESULTS / "scale.json").read_text())["rows"]
    n_train = train_size(next(r["interactions"] for r in rows_scale if r["size"] == "1m" and r["model"] == "IALS"))
    rows = []
    for model, s in spec.items():
        for link, bw in LINKS.items():
            for w in NODES:
                rows.append({"model": model, "link": link, "nodes": w, "compute_source": s["source"],
                             **predict(model, s, w, bw)})  # fmt: skip
    for link, bw in LINKS.items():
        for w in NODES:
            rows.append({"model": "BPRMF, row-sparse exchange (not implemented)", "link": link, "nodes": w,
                         "epoch_s": sparse_bpr(w, bw, spec["BPRMF"]["compute"], n_train)})  # fmt: skip
    out = {"date": time.strftime("%Y-%m-%d"), "autograd_ratio": ratio, "latency_s": LATENCY, "rows": rows}
    (RESULTS / "distributed_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# Predicted epoch time across nodes, 1M × 100k × 40M training interactions",
        "",
        f"Written by `benchmarks/distributed_cost.py` ({out['date']}); the model and its assumptions are in its",
        f"docstring and in docs/distributed.md. Autograd/written-out BPRMF step on ml-1m: {ratio:.2f}×.",
        "",
        "| model | link | " + " | ".join(f"{w} node{'s' if w > 1 else ''}" for w in NODES) + " |",
        "|---|---|" + "---:|" * len(NODES),
    ]
    for model in [*spec, "BPRMF, row-sparse exchange (not implemented)"]:
        for link in LINKS:
            cells = [r for r in rows if r["model"] == model and r["link"] == link]
            lines.append(f"| {model} | {link} | " + " | ".join(f"{r['epoch_s']:,.0f} s" for r in cells) + " |")
    lines += ["", "Compute per epoch on one node: " + "; ".join(f"{m} {s['compute']:,.0f} s ({s['source']})"
                                                         for m, s in spec.items()) + "."]  # fmt: skip
    (RESULTS / "distributed_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
