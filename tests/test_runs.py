"""Run directories: refused when inconsistent, replaced atomically, extra files carried across a save."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import advrec.runs as runs
from advrec.data.splits import Split, ratio_split
from advrec.errors import DataError, ModelFileError
from advrec.models import BPRMF, EASE, Pop
from advrec.runs import load_run, replace_dir, save_run
from advrec.serving.store import Event, SQLiteEventStore
from advrec.testing import two_communities


@pytest.fixture
def data():
    return two_communities(30, 12)


@pytest.fixture
def split(data):
    return ratio_split(data, random_state=0)


@pytest.fixture
def run_dir(tmp_path, data, split) -> Path:
    return save_run(tmp_path / "run", EASE(l2=1.0).fit(split.train), data, split, dataset={"name": "toy"})


def tree_digest(path: Path) -> str:
    """SHA-256 over every file and folder under `path` (names, modes and bytes)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(f"{p.relative_to(path)}|{stat.S_IMODE(p.lstat().st_mode):o}|".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def edit_manifest(path: Path, change) -> None:
    doc = json.loads((path / "manifest.json").read_text())
    change(doc)
    (path / "manifest.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------------- consistency
def test_a_saved_run_loads_and_records_the_digest_of_its_model(run_dir, split):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["model_digest"]) == 64 and set(manifest["model_files"]) == {"arrays.safetensors", "params.json"}
    run = load_run(run_dir)
    assert run.model.n_items_ == split.n_items and len(run.users) == split.n_users


@pytest.mark.parametrize("file", ["arrays.safetensors", "params.json"])
def test_model_files_changed_after_the_save_are_refused(run_dir, file):
    target = run_dir / "model" / file
    data = target.read_bytes()
    target.write_bytes(data[:-1] if file == "arrays.safetensors" else data.replace(b"1.0", b"2.0", 1))
    with pytest.raises(ModelFileError, match=rf"{run_dir}: the model files do not match .*model/{file} \(changed\)"):
        load_run(run_dir)


def test_a_file_added_to_the_model_folder_is_refused(run_dir):
    (run_dir / "model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelFileError, match=r"model/extra\.bin \(unexpected\)"):
        load_run(run_dir)


def test_a_manifest_without_digest_is_refused(run_dir):
    edit_manifest(run_dir, lambda d: d.pop("model_digest"))
    with pytest.raises(ModelFileError, match=r"manifest\.json records no model_digest"):
        load_run(run_dir)


def test_a_manifest_naming_another_class_is_refused(run_dir):
    edit_manifest(run_dir, lambda d: d["model"].update({"class": "ItemKNN"}))
    with pytest.raises(ModelFileError, match=r"manifest\.json names model class 'ItemKNN' but model/ holds a EASE"):
        load_run(run_dir)


def test_a_model_with_one_user_vector_short_is_refused(tmp_path, data, split):
    """A BPRMF trained without the last user, saved beside a split that still has every user."""
    fewer = split.train.subset(users=np.arange(split.n_users - 1))
    model = BPRMF(factors=4, epochs=1, device="cpu", random_state=0).fit(fewer)
    path = save_run(tmp_path / "run", model, data, split, dataset={"name": "toy"})
    n = split.n_users
    with pytest.raises(ModelFileError, match=rf"keeps {n - 1} user vectors but the split has {n} users"):
        load_run(path)


def test_a_history_model_may_be_trained_on_other_users(tmp_path, data, split):
    model = Pop().fit(split.train.subset(users=np.arange(5)))
    assert load_run(save_run(tmp_path / "run", model, data, split, dataset={})).model.n_users_ == 5


def test_a_model_of_another_item_count_is_refused(tmp_path, data, split):
    model = Pop().fit(split.train.subset(items=np.arange(split.n_items - 1)))
    with pytest.raises(ModelFileError, match=rf"scores {split.n_items - 1} items but the split has {split.n_items}"):
        load_run(save_run(tmp_path / "run", model, data, split, dataset={}))


def test_id_maps_that_disagree_with_the_split_are_refused(run_dir):
    users = run_dir / "data" / "users.parquet"
    pd.read_parquet(users).iloc[:-1].to_parquet(users, index=False)
    with pytest.raises(ModelFileError, match=r"data/users\.parquet has 29 users but split/users\.parquet has 30"):
        load_run(run_dir)
    df = pd.read_parquet(run_dir / "split" / "users.parquet")
    df["user"] = df["user"].iloc[::-1].to_numpy()
    df.to_parquet(users, index=False)
    with pytest.raises(ModelFileError, match=r"differ at index 0: 129 vs 100"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda df: df.assign(user=df["user"].where(df.index != 1, 100)),
            "user ids must be unique; 100 appears more than once",
        ),
        (lambda df: df.assign(index=df["index"] + 1), "column 'index' must hold 0..29 once each"),
        (lambda df: df.drop(columns="index"), "column 'index' is missing"),
        (lambda df: df.assign(user=df["user"].astype(object).where(df.index != 3, None)), "null id at row 4"),
    ],
)
def test_bad_id_map_files_are_refused(run_dir, change, message):
    file = run_dir / "data" / "users.parquet"
    change(pd.read_parquet(file)).to_parquet(file, index=False)
    with pytest.raises(ModelFileError, match=rf"{file}: .*{message}"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("user", -1, r"column 'user' has -1 at row 3, outside 0\.\.29"),
        ("item", 12, r"column 'item' has 12 at row 3, outside 0\.\.11"),
        ("rating", np.nan, r"column 'rating' has nan at row 3, not finite"),
        ("rating", np.inf, r"column 'rating' has inf at row 3, not finite"),
    ],
)
def test_bad_split_files_are_refused(run_dir, column, value, message):
    file = run_dir / "split" / "interactions.parquet"
    df = pd.read_parquet(file)
    df.loc[2, column] = value
    df.to_parquet(file, index=False)
    with pytest.raises(DataError, match=rf"{file}: {message}"):
        Split.load(run_dir / "split")
    with pytest.raises(ModelFileError, match=rf"{file}: {message}"):
        load_run(run_dir)


# ---------------------------------------------------------------------- atomic replacement
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_an_interrupted_save_leaves_the_run_as_it_was(run_dir, data, split, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    (run_dir / "report.md").write_text("# report")
    before, names = tree_digest(run_dir), siblings(run_dir)

    def broken(self, path):
        (Path(path) / "half-written").parent.mkdir(parents=True, exist_ok=True)
        (Path(path) / "half-written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(Split, "save", broken)
    fewer = split.train.subset(users=np.arange(split.n_users - 1))
    with pytest.raises(OSError, match="disk full"):
        save_run(run_dir, Pop().fit(fewer), data, split, dataset={})
    assert tree_digest(run_dir) == before and siblings(run_dir) == names
    assert type(load_run(run_dir).model) is EASE


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_second_save_replaces_the_model_and_carries_the_open_event_store(run_dir, data, split, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    os.chmod(run_dir, 0o750)
    (run_dir / "report.md").write_text("# report")
    (run_dir / "audit").mkdir()
    (run_dir / "audit" / "membership.json").write_text("{}")
    store = SQLiteEventStore(run_dir / "events.db")
    try:
        store.append([Event("100", "500", 1.0, 1.0)])
        inode = (run_dir / "events.db").stat().st_ino
        save_run(run_dir, Pop().fit(split.train), data, split, dataset={"name": "toy"})
        assert (run_dir / "events.db").stat().st_ino == inode
        store.append([Event("101", "501", None, 2.0)])
        assert store.count() == 2 and [e.item_id for e in store.user_events("101")] == ["501"]
        with SQLiteEventStore(run_dir / "events.db") as fresh:  # what a restarted server sees
            assert fresh.count() == 2
    finally:
        store.close()
    assert (run_dir / "report.md").read_text() == "# report"
    assert (run_dir / "audit" / "membership.json").read_text() == "{}"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o750
    assert type(load_run(run_dir).model) is Pop
    assert siblings(run_dir) == ["run"]


def test_carry_chooses_the_entries_kept(run_dir, data, split):
    (run_dir / "report.md").write_text("old numbers")
    (run_dir / "training.png").write_bytes(b"png")
    save_run(run_dir, Pop().fit(split.train), data, split, dataset={}, carry=lambda p: p.suffix != ".md")
    assert not (run_dir / "report.md").exists() and (run_dir / "training.png").read_bytes() == b"png"


def test_replace_dir_builds_a_new_directory_and_refuses_a_file(tmp_path):
    path = replace_dir(tmp_path / "new" / "d", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert (path / "a.txt").read_text() == "a" and siblings(path) == ["d"]
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(ModelFileError, match="exists and is not a directory"):
        replace_dir(tmp_path / "f", lambda tmp: None)
    assert siblings(tmp_path / "f") == ["f", "new"]


def test_an_interrupted_forget_leaves_the_run_intact(run_dir, monkeypatch):
    from advrec.privacy.forget import forget_user

    def killed(self, path):
        raise OSError("killed")

    before = tree_digest(run_dir)
    monkeypatch.setattr(Split, "save", killed)
    with pytest.raises(OSError, match="killed"):
        forget_user(run_dir, 105)
    assert tree_digest(run_dir) == before and siblings(run_dir) == ["run"]
    monkeypatch.undo()
    forget_user(run_dir, 105)
    run = load_run(run_dir)
    assert 105 not in run.users and run.model.n_users_ == len(run.users) == run.split.n_users == 29
