"""A torchrun worker for the data-parallel training tests: fits one model on a fixed dataset and writes what the
tests compare (a digest of the parameters after every step, the final validation metric, the final weights).

    python -m torch.distributed.run --nproc-per-node 2 ... train_worker.py MODEL OUT [--die-at STEP] [--checkpoint DIR]

`--die-at`: the process of rank 1 exits at that step of its first attempt (a marker file in OUT says it did), so
torchrun's restart policy restarts the job, which resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advrec import distributed
from advrec.data.splits import ratio_split
from advrec.models import BPRMF, MultVAE
from advrec.models.torch_base import Phase
from advrec.privacy.dp import fit_private, privacy_manifest
from advrec.testing import two_communities


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def recording(cls: type) -> type:
    """`cls` whose steps append the parameters' digest to `digests` (and may exit, see the module docstring)."""

    class Recorded(cls):  # type: ignore[misc, valid-type]
        digests: list[str]
        die_at: int | None = None
        marker: Path | None = None

        def _train_step(self, phase: Phase, batch: Any) -> Any:
            out = super()._train_step(phase, batch)
            self.digests.append(digest(self.network_))
            step = len(self.digests)
            if self.die_at == step and distributed.rank() == 1 and self.marker and not self.marker.exists():
                self.marker.write_text("died")
                os._exit(17)  # a worker killed mid-epoch
            return out

    Recorded.__name__ = cls.__name__
    return Recorded


def make(name: str) -> Any:
    if name == "BPRMF":
        return recording(BPRMF)(factors=8, epochs=4, batch_size=64, eval_every=1, device="cpu", random_state=3)
    if name == "MultVAE":
        return recording(MultVAE)(hidden=32, latent=8, epochs=4, batch_size=16, device="cpu", random_state=3)
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--die-at", type=int)
    parser.add_argument("--checkpoint")
    parser.add_argument("--dp", action="store_true", help="DP-SGD (noise multiplier 1, clipping 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    X = two_communities(80, 40, density=0.4, random_state=1)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=2)
    model = make(args.model)
    model.digests = []
    model.die_at = args.die_at
    model.marker = args.out / "died"
    if args.dp:
        fit_private(model, split.train, noise_multiplier=1.0, max_grad_norm=1.0)
    else:
        model.fit(split.train, valid=split, checkpoint=args.checkpoint)
    rank = distributed.rank()
    result = {
        "rank": rank,
        "world_size": distributed.world_size(),
        "digests": model.digests,
        "final": digest(model.network_),
        "valid": getattr(model, "best_valid_", None),
        "privacy": privacy_manifest(model),
        "log": [{k: v for k, v in row.items() if k != "seconds"} for row in model.training_log_],
        "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
    }
    (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    np.save(args.out / f"scores{rank}.npy", model.score(split.train, np.arange(5)))


if __name__ == "__main__":
    main()
    distributed.exit_worker()
