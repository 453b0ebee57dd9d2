"""Serving a sequential model: the history's order reaches the model, for stored users, events and ad-hoc lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from serving_helpers import AUTH, KEYS

from advrec.data.interactions import IdMap, Interactions
from advrec.experiment import ExperimentConfig, run_experiment
from advrec.runs import load_run
from advrec.serving.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """SASRec on ml-100k under leave-last-out, two epochs: only what serving does with it is tested."""
    params = {"dim": 16, "blocks": 1, "max_len": 20, "epochs": 2, "batch_size": 256, "device": "cpu"}
    cfg = ExperimentConfig(dataset="ml-100k", data_dir=str(data_dir), model="SASRec", protocol="leave_last_out",
                           params=params)  # fmt: skip
    path, _ = run_experiment(cfg, tmp_path_factory.mktemp("runs") / "sasrec")
    return path


def ids(response) -> list:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [x["item_id"] for x in response.json()["items"]]


def in_order(run, items: list[int]) -> Interactions:  # type: ignore[no-untyped-def]
    """One user whose history is `items` (raw ids) in this order."""
    idx = run.items.indices(items)
    m = np.zeros((1, len(run.items)), np.float32)
    m[0, idx] = 1.0
    # CSR holds the items by index: the j-th entry's time is the place in the list of the j-th smallest index
    return Interactions(sp.csr_matrix(m), IdMap([0], "user"), run.items, timestamps=np.argsort(idx))


def test_known_user_and_adhoc_order(sasrec_run: Path, store_url: str) -> None:
    run = load_run(sasrec_run)
    history = Interactions(run.split.history(), run.users, run.items, timestamps=run.split.history_times().data)
    with TestClient(create_app(sasrec_run, store_url=store_url, api_keys=KEYS), headers=AUTH) as c:
        r = c.get(f"/v1/users/{run.users.raw(7)}/recommendations", params={"k": 10})
        items, _ = run.model.recommend(history, np.array([7]), k=10)
        assert ids(r) == run.items.raw(items[0]).tolist() and r.json()["strategy"] == "history"

        forward, backward = [50, 172, 181, 1, 100], [100, 1, 181, 172, 50]
        a = c.post("/v1/recommendations", json={"history": [{"item_id": i} for i in forward], "k": 10})
        b = c.post("/v1/recommendations", json={"history": [{"item_id": i} for i in backward], "k": 10})
        assert ids(a) != ids(b)  # the order is read
        want, _ = run.model.recommend(in_order(run, forward), np.array([0]), k=10)
        assert ids(a) == run.items.raw(want[0]).tolist()

        # events extend a new user's sequence in the order they were stored
        events = [{"user_id": "newcomer", "item_id": i} for i in forward]
        assert c.post("/v1/interactions", json={"events": events}).status_code == 200
        assert ids(c.get("/v1/users/newcomer/recommendations", params={"k": 10})) == ids(a)
        assert c.get("/v1/items/50/similar", params={"k": 3}).status_code == 200
        # no history at all: the popular items, said so
        empty = c.post("/v1/recommendations", json={"history": [], "k": 3})
        popular = c.get("/v1/items/popular", params={"k": 3})
        assert empty.json()["strategy"] == "popularity" and ids(empty) == ids(popular)
