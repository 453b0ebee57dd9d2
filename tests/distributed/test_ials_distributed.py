"""iALS across two gloo processes started by torchrun: after every half-step both ranks hold the same factors, and
the fit gives the numbers of one process; plus the cutting of rows into shares, without processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ials_dist_worker import CASES, fit, record

import advrec
from advrec.distributed.factors import ALL_GATHER, RowShares, balanced_cuts, common_seed, refuse_single_node
from advrec.models.ials import IALS

WORKER = Path(__file__).resolve().parent / "ials_dist_worker.py"
RANKS = 2
N_USERS, N_ITEMS, FACTORS, ITEMSIZE = 48, 24, 8, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the workers' records, from one torchrun of two processes over every case."""
    out = tmp_path_factory.mktemp("ials-dist")
    src = str(Path(advrec.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={RANKS}", "--rdzv-backend=c10d"]
    args += [f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--max-restarts=0", str(WORKER), str(out)]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return out


def load(folder: Path, case: str, r: int) -> dict[str, np.ndarray]:
    with np.load(folder / f"{case}-rank{r}.npz") as f:
        return dict(f)


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_hold_the_same_factors_after_every_half_step(ranks: Path, case: str) -> None:
    first, second = (load(ranks, case, r) for r in range(RANKS))
    assert sorted(first) == sorted(second)
    assert sum(k.startswith("half_step_") for k in first) == 2 * int(first["scalars"][1])
    for key in first:
        if key not in ("comm_bytes", "scalars"):
            np.testing.assert_array_equal(first[key], second[key], err_msg=f"{case}: {key} differs between ranks")


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c].get("random_state", 7) is not None])
def test_two_processes_give_the_numbers_of_one(ranks: Path, case: str) -> None:
    two, one = load(ranks, case, 0), record(fit(case))
    assert sorted(two) == sorted(one)
    np.testing.assert_array_equal(two["scalars"][1:], one["scalars"][1:], err_msg="epochs run and best epoch")
    for key in one:
        if key.startswith("half_step_") or key in ("user_factors", "item_factors", "ndcg", "loss"):
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-7, err_msg=f"{case}: {key}")
    assert not np.isnan(one["ndcg"][-1])
    assert one["scalars"][0] == 0 and (one["comm_bytes"] == 0).all()  # no "comm_bytes" in one process's log


@pytest.mark.parametrize("case", list(CASES))
def test_bytes_sent_are_the_padded_blocks_of_the_all_gathers(ranks: Path, case: str) -> None:
    """Each rank sends its block, padded to the largest share, to the other rank: half the rows or more per side,
    all of them when one rank holds a whole side; rank 0 also sends each validation result (8 bytes)."""
    first, second = (load(ranks, case, r) for r in range(RANKS))
    per_iteration = int(first["scalars"][0])
    assert per_iteration == int(second["scalars"][0])
    row_bytes = FACTORS * ITEMSIZE
    assert -(-N_USERS // 2) * row_bytes + -(-N_ITEMS // 2) * row_bytes <= per_iteration
    assert per_iteration <= (N_USERS + N_ITEMS) * row_bytes
    if case == "cg-one-chunk":
        assert per_iteration == (N_USERS + N_ITEMS) * row_bytes
    validated = ~np.isnan(first["ndcg"])
    np.testing.assert_array_equal(first["comm_bytes"], per_iteration + 8 * validated)
    np.testing.assert_array_equal(second["comm_bytes"], np.full(len(validated), per_iteration))


def test_every_rank_refuses_training_data_that_differ_between_ranks(ranks: Path) -> None:
    for r in range(RANKS):
        message = (ranks / f"other-data-rank{r}.txt").read_text()
        assert "training data differs between ranks: ranks [1]" in message, message


def test_balanced_cuts_give_contiguous_parts_of_about_equal_weight() -> None:
    np.testing.assert_array_equal(balanced_cuts(np.ones(10), 2), [0, 5, 10])
    np.testing.assert_array_equal(balanced_cuts(np.ones(10), 3), [0, 3, 7, 10])
    np.testing.assert_array_equal(balanced_cuts(np.ones(10), 1), [0, 10])
    np.testing.assert_array_equal(balanced_cuts(np.array([9.0, 1, 1, 1]), 2), [0, 1, 4])
    np.testing.assert_array_equal(balanced_cuts(np.ones(1), 3), [0, 0, 1, 1])
    cuts = balanced_cuts(np.random.default_rng(0).random(101), 4)
    assert cuts[0] == 0 and cuts[-1] == 101 and (np.diff(cuts) >= 0).all()


def test_one_process_is_one_share_and_sends_nothing() -> None:
    shares = RowShares.of_units(np.array([0, 5, 9, 12]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(shares.starts, [0, 12])
    assert shares.own == (0, 12) and shares.gather_bytes(FACTORS, ITEMSIZE) == 0
    assert common_seed(None) is None and common_seed(3) == 3
    refuse_single_node("EASE")  # no process group: nothing to refuse
    assert IALS.scale_out == ALL_GATHER
