"""Gowalla (LightGCN/NGCF files): the vectorised parser on tiny files, the official split, the experiment path,
and the real files' counts (integration)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from advrec.cli import app
from advrec.data import gowalla_split, load_dataset, load_gowalla, official_split
from advrec.data.gowalla import read_lightgcn, read_user_items
from advrec.errors import ConfigError, DataError, DatasetNotFoundError, UnknownDatasetError
from advrec.experiment import ExperimentConfig, load_data, make_split, run_experiment
from advrec.runs import load_run

TRAIN = "0 0 1 2 3\n1 2 3 4\n2 0 5\n3 1 2 3 4 5\n"
TEST = "0 4\n1 0 5\n2 1\n3 0\n"
USERS = "org_id remap_id\n343 0\n5258 1\n7 2\n99 3\n"
ITEMS = "org_id remap_id\n8975 0\n9190 1\n11 2\n12 3\n13 4\n14 5\n"
TRAIN_PAIRS = {(0, 0), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (2, 0), (2, 5), (3, 1), (3, 2), (3, 3), (3, 4)}
TRAIN_PAIRS |= {(3, 5)}
TEST_PAIRS = {(0, 4), (1, 0), (1, 5), (2, 1), (3, 0)}


def write_folder(home: Path, **files: str) -> Path:
    """A LightGCN-format folder `home/lightgcn-gowalla` with the tiny files, some replaced by `files`."""
    folder = home / "lightgcn-gowalla"
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"train.txt": TRAIN, "test.txt": TEST, "user_list.txt": USERS, "item_list.txt": ITEMS}
    for name, text in {**texts, **{k.replace("_txt", ".txt"): v for k, v in files.items()}}.items():
        (folder / name).write_text(text)
    return folder


def pairs(m) -> set[tuple[int, int]]:  # type: ignore[no-untyped-def]
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


# ---------------------------------------------------------------------- parsing
def test_tiny_folder_parses_to_known_pairs(tmp_path: Path) -> None:
    train, test = read_lightgcn(write_folder(tmp_path))
    assert train.shape == test.shape == (4, 6)
    assert pairs(train.matrix) == TRAIN_PAIRS and pairs(test.matrix) == TEST_PAIRS
    assert train.users.ids.tolist() == [0, 1, 2, 3] and train.items is test.items
    assert train.user_features is not None and train.user_features["org_id"].tolist() == [343, 5258, 7, 99]
    assert train.item_features is not None and train.item_features["org_id"].tolist()[:2] == [8975, 9190]
    assert set(train.matrix.data.tolist()) == {1.0}


def test_parser_tolerates_blank_lines_crlf_and_lines_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"3 1 2\r\n\n0  0 5\r\n")
    u, i, line = read_user_items(path, 4, 6)
    assert list(zip(u.tolist(), i.tolist(), line.tolist(), strict=True)) == [(3, 1, 1), (3, 2, 1), (0, 0, 3), (0, 5, 3)]


def test_user_with_no_items_is_kept_as_an_empty_row(tmp_path: Path) -> None:
    _, test = read_lightgcn(write_folder(tmp_path, test_txt="0 4\n1\n2 1\n3 0\n"))
    assert test.user_counts().tolist() == [1, 0, 1, 1]


@pytest.mark.parametrize(
    ("files", "where", "problem"),
    [
        ({"train_txt": "0 1\n1 2 x\n"}, "train.txt, line 2", "unexpected character 'x'"),
        ({"train_txt": "0 1,2\n"}, "train.txt, line 1", "unexpected character ','"),
        ({"train_txt": "0 1\n4 2\n"}, "train.txt, line 2", "user 4 is outside 0..3"),
        ({"test_txt": "0 1\n\n1 6\n"}, "test.txt, line 3", "item 6 is outside 0..5"),
        ({"train_txt": "0 1\n1 2\n0 3\n"}, "train.txt, line 3", "user 0 is also on line 1"),
        ({"train_txt": "0 1 2 1\n"}, "train.txt, line 1", "item 1 appears twice for user 0"),
        ({"test_txt": "0 5\n2 0\n"}, "test.txt, line 2", "user 2 item 0 is also in"),
        ({"item_list_txt": "org_id remap_id\n1 0\n2 2\n"}, "item_list.txt, line 3", "item remap_id 2 where 1"),
        ({"user_list_txt": "org_id remap_id\n1 0\n2\n"}, "user_list.txt, line 3", "expected 2 fields"),
        ({"train_txt": "0 " + "9" * 19 + "\n"}, "train.txt, line 1", "more than 18 digits"),
        ({"train_txt": "\n\n"}, "train.txt", "holds no users"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, files: dict[str, str], where: str, problem: str) -> None:
    with pytest.raises(DataError) as info:
        read_lightgcn(write_folder(tmp_path, **files))
    message = str(info.value)
    assert where in message and problem in message, message


def test_test_pair_also_in_train_names_both_lines(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"test.txt, line 2: user 2 item 0 is also in .*train.txt, line 3"):
        read_lightgcn(write_folder(tmp_path, test_txt="0 5\n2 0\n"))


# ---------------------------------------------------------------------- loading and the official split
def test_load_gowalla_is_train_and_test_together(tmp_path: Path) -> None:
    write_folder(tmp_path)
    X = load_gowalla(tmp_path)
    assert pairs(X.matrix) == TRAIN_PAIRS | TEST_PAIRS and X.name == "gowalla"
    assert X.meta["official_parts"] == {"train": 14, "test": 5}
    assert load_dataset("gowalla", tmp_path).matrix.nnz == 19
    assert load_gowalla(tmp_path / "lightgcn-gowalla").nnz == 19  # data_dir may be the dataset folder itself


def test_official_split_carves_validation_per_user_from_train(tmp_path: Path) -> None:
    write_folder(tmp_path)
    s = gowalla_split(tmp_path, valid_share=0.1, random_state=7)
    assert s.valid is not None
    train, valid = pairs(s.train.matrix), pairs(s.valid.matrix)
    assert train | valid == TRAIN_PAIRS and not train & valid and pairs(s.test.matrix) == TEST_PAIRS
    # 0.1·n < 1 for every user (2 to 5 training items), so each gives exactly one, and keeps the rest in train
    assert s.valid.user_counts().tolist() == [1, 1, 1, 1]
    assert s.train.user_counts().tolist() == [3, 2, 1, 4]
    assert s.protocol["description"] == "official LightGCN split, validation carved from train (share 0.1, seed 7)"
    again = gowalla_split(tmp_path, valid_share=0.1, random_state=7)
    assert pairs(again.valid.matrix) == valid  # type: ignore[union-attr]
    seeds = {frozenset(pairs(gowalla_split(tmp_path, random_state=k).valid.matrix)) for k in range(8)}  # type: ignore[union-attr]
    assert len(seeds) > 1
    # the test ranking excludes all of train.txt, as LightGCN does
    assert pairs(s.eval_set("test").exclude) == TRAIN_PAIRS


def test_official_split_without_validation_keeps_all_of_train(tmp_path: Path) -> None:
    write_folder(tmp_path)
    s = official_split("gowalla", tmp_path, valid_share=None)
    assert s.valid is None and pairs(s.train.matrix) == TRAIN_PAIRS and pairs(s.test.matrix) == TEST_PAIRS
    assert s.protocol["valid_share"] is None and "no validation" in s.protocol["description"]
    with pytest.raises(ConfigError, match="valid_share must lie in"):
        gowalla_split(tmp_path, valid_share=1.0)


def test_dispatch_errors_name_the_dataset_or_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="load_dataset\\('gowalla'\\) has no option 'min_rating'"):
        load_dataset("gowalla", tmp_path, min_rating=3.0)
    with pytest.raises(ConfigError, match=r"'ml-1m' has no official split; datasets with one: .*gowalla"):
        official_split("ml-1m", tmp_path)
    with pytest.raises(UnknownDatasetError, match="no loader for dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(DatasetNotFoundError) as info:
        load_gowalla(tmp_path / "empty")
    message = str(info.value)
    assert "train.txt, test.txt, user_list.txt, item_list.txt" in message and "no download URL" in message
    assert str(tmp_path / "empty" / "lightgcn-gowalla") in message and "kuandeng/LightGCN" in message


# ---------------------------------------------------------------------- experiment and CLI paths
@pytest.mark.parametrize(
    ("model", "protocol"), [("Pop", "official"), ("EASE", "official_full"), ("ItemKNN", "official")]
)
def test_experiment_on_the_official_split(tmp_path: Path, model: str, protocol: str) -> None:
    write_folder(tmp_path)
    cfg = ExperimentConfig(dataset="gowalla", data_dir=str(tmp_path), protocol=protocol, model=model, ks=[2])
    X = load_data(cfg)  # min_rating (default 3.0) does not apply to implicit data
    assert X.nnz == 19
    path, outcome = run_experiment(cfg, tmp_path / "run", X=X)
    run = load_run(path)
    assert pairs(run.split.test.matrix) == TEST_PAIRS
    assert (run.split.valid is None) == (protocol == "official_full")
    assert run.split.protocol["name"] == "official" and 0 <= outcome.report.summary["recall@2"] <= 1


def test_official_protocol_refuses_core_and_other_datasets(tmp_path: Path) -> None:
    write_folder(tmp_path)
    cfg = ExperimentConfig(dataset="gowalla", data_dir=str(tmp_path), protocol="official", core=2)
    with pytest.raises(ConfigError, match="key 'core'"):
        make_split(load_gowalla(tmp_path), cfg)


def test_cli_datasets_lists_gowalla_with_counts(tmp_path: Path) -> None:
    write_folder(tmp_path)
    result = CliRunner().invoke(app, ["datasets", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "gowalla" in ln)
    assert "yes" in line and "19 (14 train + 5 test)" in line and "│ 4 " in line and "│ 6 " in line


# ---------------------------------------------------------------------- the real files
@pytest.mark.integration
def test_real_gowalla_counts(data_dir: Path) -> None:
    if not (data_dir / "lightgcn-gowalla" / "train.txt").is_file():
        message = f"{data_dir / 'lightgcn-gowalla'} is missing (see shared/data/SOURCES.md, section 5)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    s = gowalla_split(data_dir, valid_share=None, verify=True)  # sha256 of every file checked
    assert s.train.shape == (29_858, 40_981)
    assert (s.train.nnz, s.test.nnz) == (810_128, 217_242)
    assert s.train.user_counts().min() == 8 and s.train.user_counts().max() == 811  # SOURCES.md: 8-811 per user
    assert s.test.user_counts().min() == 1 and int(np.count_nonzero(s.test.item_counts())) == 38_546
    assert s.train.user_features is not None and s.train.user_features["org_id"].iloc[0] == 343
    carved = gowalla_split(data_dir)
    assert carved.valid is not None and carved.train.nnz + carved.valid.nnz == 810_128
    assert carved.train.user_counts().min() >= 1 and carved.valid.user_counts().min() >= 1
