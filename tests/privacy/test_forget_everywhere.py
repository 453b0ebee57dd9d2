"""Forget reaches every copy: the event store (SQLite, PostgreSQL), the split, the id maps and the model."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.data.splits import Split, ratio_split
from advrec.errors import UnknownIdError
from advrec.models import EASE
from advrec.privacy.forget import forget_user
from advrec.privacy.membership import MembershipAttack, partition_users
from advrec.runs import load_run, save_run
from advrec.serving.store import Event, open_store

TARGET = "forget-me-7f3a9c"
GHOST = "ghost-only-events-91b2"


def named_users(m: sp.csr_matrix, target_row: int = 7) -> Interactions:
    ids = np.array([f"member-{i:04d}" for i in range(m.shape[0])], dtype=object)
    ids[target_row] = TARGET
    return Interactions(sp.csr_matrix(m), IdMap(ids.astype(str), "user"), IdMap(np.arange(m.shape[1]), "item"))


def occurrences(folder: Path, needle: str) -> dict[str, int]:
    """Files under `folder` whose bytes hold `needle`, with the count."""
    found = {}
    for f in folder.rglob("*"):
        if f.is_file():
            n = f.read_bytes().count(needle.encode())
            if n:
                found[str(f.relative_to(folder))] = n
    return found


@pytest.fixture
def ease_run(random_matrix, tmp_path: Path) -> Path:
    X = named_users(random_matrix(120, 80, seed=3))
    split = ratio_split(X, random_state=0)
    return save_run(tmp_path / "run", EASE(l2=5.0).fit(split.train), X, split, dataset={"name": "tiny"})


def add_events(store_url: str, **tables: str) -> None:
    with open_store(store_url, **tables) as store:
        store.append([Event(TARGET, str(i), None, 1.0 + i) for i in range(5)])
        store.append([Event("member-0001", "3", None, 2.0), Event(GHOST, "4", None, 3.0)])


def test_forget_leaves_no_byte_of_the_user_in_the_run_directory(ease_run: Path) -> None:
    add_events(f"sqlite:///{ease_run / 'events.db'}")
    assert occurrences(ease_run, TARGET), "the raw id is stored somewhere before forget (else the check is empty)"
    result = forget_user(ease_run, TARGET)
    assert result.events_removed == 5 and result.interactions_removed > 0
    assert occurrences(ease_run, TARGET) == {}
    assert sorted(p.name for p in ease_run.parent.iterdir()) == ["run"]  # no temporary or old copy beside it
    run = load_run(ease_run)  # consistent: model, split and id maps agree
    assert TARGET not in run.users and run.split.n_users == 119
    with open_store(f"sqlite:///{ease_run / 'events.db'}") as store:
        assert not store.has_user(TARGET) and store.has_user("member-0001") and store.has_user(GHOST)
    manifest = json.loads((ease_run / "manifest.json").read_text())
    assert manifest["forgotten"][-1]["events_removed"] == 5
    with pytest.raises(UnknownIdError, match="already forgotten"):
        forget_user(ease_run, TARGET)


def test_a_user_known_only_from_events_can_be_forgotten(ease_run: Path) -> None:
    add_events(f"sqlite:///{ease_run / 'events.db'}")
    result = forget_user(ease_run, GHOST)
    assert (result.method, result.events_removed, result.interactions_removed) == ("events only", 1, 0)
    assert occurrences(ease_run, GHOST) == {}
    assert load_run(ease_run).split.n_users == 120  # the training data did not change
    assert json.loads((ease_run / "manifest.json").read_text())["forgotten"][-1]["events_removed"] == 1
    with pytest.raises(UnknownIdError):
        forget_user(ease_run, "never-there")


def test_forget_reaches_a_postgresql_store(ease_run: Path) -> None:
    url = os.environ.get("ADVREC_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set $ADVREC_TEST_POSTGRES_URL to a PostgreSQL URL to run the PostgreSQL store tests")
    table = f"advrec_test_{uuid.uuid4().hex[:12]}"
    try:
        add_events(url, table=table)
        with open_store(url, table=table) as store:
            result = forget_user(ease_run, TARGET, store=store)
            assert result.events_removed == 5 and not store.has_user(TARGET) and store.has_user(GHOST)
        assert TARGET not in load_run(ease_run).users
    finally:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for name in (table, f"{table}_idempotency"):
                conn.execute(f"DROP TABLE IF EXISTS {name}")  # type: ignore[arg-type]


def forgotten_member_scores(random_matrix, tmp_path: Path, seed: int) -> tuple[float, float, float]:
    """The attack's score of its surest member before and after `forget_user`, and non-members' 90th percentile."""
    X = random_matrix(400, 300, seed=1 + seed)
    parts = partition_users(X, random_state=seed)
    attack = MembershipAttack(k=10, item_dim=16, random_state=seed)
    attack.fit(EASE(l2=0.5).fit(parts.shadow_in), parts.shadow_in, parts.shadow_out)
    target = EASE(l2=0.5).fit(parts.target_in)
    members, non_members = attack.score(target, parts.target_in), attack.score(target, parts.target_out)
    surest = int(np.argmax(members))
    data = named_users(parts.target_in, target_row=surest)
    whole = Split(protocol={"name": "all training"}, train=data, valid=None, test=data)
    path = save_run(tmp_path / f"target-{seed}", target, data, whole, dataset={"name": "random"})
    forget_user(path, TARGET)
    after = attack.score(load_run(path).model, parts.target_in[[surest]])
    return float(members[surest]), float(after[0]), float(np.quantile(non_members, 0.9))


def test_a_forgotten_user_scores_as_a_non_member(random_matrix, tmp_path: Path) -> None:
    """The membership attack is sure about a member; after forget_user it scores them like a non-member."""
    before, after, _ = forgotten_member_scores(random_matrix, tmp_path, seed=0)
    # seeds 0-9 (partition, attack and data): before 0.999-1.000; after 0.000-0.209, while non-members' 90th
    # percentile is 0.027-0.221; the attack calls a score < 0.5 a non-member
    assert before > 0.95 and after < 0.5
