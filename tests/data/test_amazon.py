"""Amazon sequences with item text: UniSRec's "Scientific" (RecBole atomic files, published leave-last-out split)
and Office 2014 5-core (LC-Rec-style JSON), on tiny files with known answers, and the real files' counts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from advrec.cli import app
from advrec.data import (
    amazon_scientific_split,
    load_amazon_office,
    load_amazon_scientific,
    load_dataset,
    official_split,
)
from advrec.data.amazon import OFFICE, SCIENTIFIC, read_lcrec, read_unisrec
from advrec.data.splits import Split, leave_last_out
from advrec.errors import ConfigError, DataError
from advrec.experiment import ExperimentConfig, load_data, make_split, run_experiment
from advrec.text import item_texts

# ---------------------------------------------------------------------- a tiny "Scientific"
# Full sequences (item indices); histories are cut to the last 3 items (max_len 3):
#   user 0  0 1 2 3 4      no repeat
#   user 1  5 2 5 1 2      5 and 2 repeat; the test target 2 repeats a training item
#   user 2  3 4 0 0        the validation target 0 is the test target
#   user 3  1 3 1 5        the validation target 1 repeats a training item
SEQUENCES = [[0, 1, 2, 3, 4], [5, 2, 5, 1, 2], [3, 4, 0, 0], [1, 3, 1, 5]]
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
USERS = "AUSER0\t0\nAUSER1\t1\nAUSER2\t2\nAUSER3\t3\n"
ITEMS = "B000\t0\nB001\t1\nB002\t2\nB003\t3\nB004\t4\nB005\t5\n"
TEXT = (
    "item_id:token\ttext:token_seq\n"
    "B003\tMicroscope slides. Industrial & Scientific Lab Supplies. Acme. \n"
    "B000\tThermometer −50–50 °C. Industrial & Scientific Test Instruments. Ünit. \n"
    "B001\tGloves. Industrial & Scientific Safety. Safe. \n"
    "B002\tPipette. Industrial & Scientific Lab Supplies. Lab. \n"
    "B005\tBeaker. Industrial & Scientific Lab Supplies. Glass. \n"
)  # B004 has no text


def row(user: int, seq: list[int], at: int, max_len: int = 3) -> str:
    return f"{user}\t{' '.join(map(str, seq[max(0, at - max_len) : at]))}\t{seq[at]}\n"


def inter_files(sequences: list[list[int]]) -> dict[str, str]:
    """The train / valid / test files of the sequences, as UniSRec writes them (train rows longest first)."""
    train = "".join(row(u, s, at) for u, s in enumerate(sequences) for at in range(len(s) - 3, 0, -1))
    valid = "".join(row(u, s, len(s) - 2) for u, s in enumerate(sequences))
    test = "".join(row(u, s, len(s) - 1) for u, s in enumerate(sequences))
    return {"train.inter": HEADER + train, "valid.inter": HEADER + valid, "test.inter": HEADER + test}


def write_scientific(home: Path, **files: str) -> Path:
    """`home/amazon-scientific-unisrec` with the tiny files; `files` replaces some (keys like `train_inter`)."""
    folder = home / SCIENTIFIC
    folder.mkdir(parents=True, exist_ok=True)
    texts = {**inter_files(SEQUENCES), "text": TEXT, "item2index": ITEMS, "user2index": USERS}
    texts.update({k.replace("_", "."): v for k, v in files.items()})
    for suffix, text in texts.items():
        (folder / f"Scientific.{suffix}").write_text(text, encoding="utf-8")
    return folder


def cells(m: Any) -> dict[tuple[int, int], float]:
    coo = m.tocoo()
    return {(int(u), int(i)): float(v) for u, i, v in zip(coo.row, coo.col, coo.data, strict=True)}


def pairs(m: Any) -> set[tuple[int, int]]:
    return set(cells(m))


# the latest position of every (user, item) pair of SEQUENCES
LATEST = {(u, i): p for u, s in enumerate(SEQUENCES) for p, i in enumerate(s)}
TRAIN = {(0, 0), (0, 1), (0, 2), (1, 5), (2, 3), (2, 4), (3, 3)}
VALID = {(0, 3), (1, 1), (3, 1)}
TEST = {(0, 4), (1, 2), (2, 0), (3, 5)}


def test_sequences_rebuilt_with_the_latest_occurrence_of_a_repeat(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    X = load_amazon_scientific(tmp_path)
    assert X.shape == (4, 6) and X.name == SCIENTIFIC
    assert X.users.ids.tolist() == ["AUSER0", "AUSER1", "AUSER2", "AUSER3"]
    assert X.items.ids.tolist() == ["B000", "B001", "B002", "B003", "B004", "B005"]
    # one cell per (user, item); its timestamp is the position of the latest occurrence
    times = dict(zip(X.to_frame(raw_ids=False)[["user", "item"]].itertuples(index=False), X.timestamps, strict=True))
    assert {(int(u), int(i)): int(t) for (u, i), t in times.items()} == LATEST
    assert set(X.matrix.data.tolist()) == {1.0}
    assert X.meta["sequence_interactions"] == 18 and X.nnz == 14
    assert X.meta["repeats_dropped"] == 4 and X.meta["repeated_pairs"] == 4
    assert (X.meta["valid_is_test"], X.meta["valid_repeats_train"], X.meta["test_repeats_train"]) == (1, 1, 1)
    assert X.meta["official_parts"] == {"train": 7, "valid": 3, "test": 4}
    assert X.meta["dataset"] == SCIENTIFIC and X.meta["min_rating"] is None


def test_item_text_is_utf8_stripped_and_empty_where_missing(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    X = load_amazon_scientific(tmp_path)
    assert X.item_features is not None and list(X.item_features.columns) == ["text"]
    text = X.item_features["text"].tolist()
    assert text[0] == "Thermometer −50–50 °C. Industrial & Scientific Test Instruments. Ünit."
    assert text[3].startswith("Microscope slides.") and text[4] == ""
    assert X.meta["items_without_text"] == 1
    assert item_texts(X)[0] == text[0] and item_texts(X)[4] == "unknown"  # the text column is the default


def test_published_split_and_its_repeats(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    s = official_split(SCIENTIFIC, tmp_path)
    assert s.valid is not None
    assert (pairs(s.train.matrix), pairs(s.valid.matrix), pairs(s.test.matrix)) == (TRAIN, VALID, TEST)
    p = s.protocol
    assert p["name"] == "leave_last_out" and p["published"] is True and p["validation"] is True
    assert (p["valid_is_test"], p["valid_repeats_train"], p["test_repeats_train"], p["repeats_dropped"]) == (1, 1, 1, 4)
    # the test history holds the validation item (leave_last_out), and the timestamps ride along
    ev = s.eval_set("test")
    assert pairs(ev.history) == TRAIN | VALID and ev.times is not None
    assert cells(ev.times) == {k: float(LATEST[k]) for k in TRAIN | VALID}
    assert ev.users.tolist() == [0, 1, 2, 3]
    assert s.eval_set("valid").users.tolist() == [0, 1, 3]  # user 2's validation target is its test target


def test_published_split_agrees_with_leave_last_out_except_where_valid_is_test(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    s, loo = official_split(SCIENTIFIC, tmp_path), leave_last_out(load_dataset(SCIENTIFIC, tmp_path))
    differ: set[int] = set()
    for part in ("train", "valid", "test"):
        a, b = getattr(s, part), getattr(loo, part)
        differ |= {u for u, _ in pairs(a.matrix) ^ pairs(b.matrix)}
        np.testing.assert_array_equal(a.users.ids, b.users.ids)
    # user 2 (3 4 0 0) has no validation target in the published split; leave_last_out takes item 4 instead
    assert differ == {2}
    assert pairs(loo.valid.matrix) == VALID | {(2, 4)}  # type: ignore[union-attr]


def test_published_split_without_validation_folds_it_into_train(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    s = amazon_scientific_split(tmp_path, validation=False)
    assert s.valid is None and pairs(s.train.matrix) == TRAIN | VALID and pairs(s.test.matrix) == TEST
    assert s.protocol["validation"] is False and "folded into train" in s.protocol["description"]


def test_split_save_and_load_keeps_parts_and_protocol(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    s = official_split(SCIENTIFIC, tmp_path)
    back = Split.load(s.save(tmp_path / "split"))
    assert pairs(back.valid.matrix) == VALID and back.protocol == s.protocol  # type: ignore[union-attr]
    assert cells(back.eval_set("test").times) == cells(s.eval_set("test").times)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("files", "where", "problem"),
    [
        ({"train_inter": HEADER + "0\t0 x\t1\n"}, "Scientific.train.inter, line 2", "not an item index"),
        ({"valid_inter": HEADER + "0\t0 1 2\t9\n"}, "Scientific.valid.inter, line 2", "item 9 is outside 0..5"),
        ({"test_inter": HEADER + "7\t0 1 2\t3\n"}, "Scientific.test.inter, line 2", "user 7 is outside 0..3"),
        ({"test_inter": HEADER + "0\t1 2\n"}, "Scientific.test.inter, line 2", "expected 3 fields"),
        ({"user2index": "AUSER0\t0\nAUSER1\t2\n"}, "Scientific.user2index, line 2", "user index 2 where 1"),
        ({"item2index": ITEMS + "B000\t6\n"}, "Scientific.item2index, line 7", "duplicate item id"),
        ({"text": TEXT + "ZZZ\tNot an item.\n"}, "Scientific.text, line 7", "item 'ZZZ' is not in the item index"),
        ({"text": TEXT + "B004\ta\tb\n"}, "Scientific.text, line 7", "expected 2 fields"),
        ({"text": TEXT + "B003\tagain\n"}, "Scientific.text, line 7", "duplicate item"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, files: dict[str, str], where: str, problem: str) -> None:
    write_scientific(tmp_path, **files)
    with pytest.raises(DataError) as info:
        load_amazon_scientific(tmp_path)
    message = str(info.value)
    assert where in message and problem in message, message


def test_inconsistent_rows_are_refused_naming_the_line(tmp_path: Path) -> None:
    files = inter_files(SEQUENCES)
    lines = files["test.inter"].splitlines(keepends=True)
    lines[2] = "1\t2 5 3\t2\n"  # user 1's test history should be 2 5 1
    write_scientific(tmp_path, test_inter="".join(lines))
    with pytest.raises(DataError, match=r"Scientific.test.inter, line 3: the history of user 1 \(3 items\)"):
        read_unisrec(tmp_path / SCIENTIFIC)
    valid = files["valid.inter"]
    write_scientific(tmp_path, valid_inter=valid + "2\t3 4\t0\n")
    with pytest.raises(DataError, match=r"valid.inter, line 6: user 2 has a second validation row \(.*line 4\)"):
        read_unisrec(tmp_path / SCIENTIFIC)
    write_scientific(tmp_path, valid_inter=valid.replace("3\t1 3\t1\n", ""))
    with pytest.raises(DataError, match=r"valid.inter: user 3 has no row"):
        read_unisrec(tmp_path / SCIENTIFIC)
    train = files["train.inter"].splitlines(keepends=True)
    write_scientific(tmp_path, train_inter="".join([train[0], train[3], *train[1:3], *train[4:]]))
    with pytest.raises(DataError, match=r"train.inter, line 5: user 1's rows resume after other users' rows"):
        read_unisrec(tmp_path / SCIENTIFIC)
    write_scientific(tmp_path)
    (tmp_path / SCIENTIFIC / "Scientific.text").write_bytes(TEXT.encode().replace(b"Gloves", b"Gl\xffoves"))
    with pytest.raises(DataError, match=r"Scientific.text, line 4: bytes that are not valid utf-8"):
        read_unisrec(tmp_path / SCIENTIFIC)


# ---------------------------------------------------------------------- a tiny Office
OFFICE_INTER = {"0": [0, 1, 2], "1": [2, 0, 2, 1], "2": [1]}
OFFICE_ITEMS = {
    "0": {"title": "AT&amp;T Phone", "description": "A phone.", "brand": "AT&amp;T", "categories": "Office, Phones"},
    "1": {"title": "Stapler", "description": "", "brand": "Swingline", "categories": "Office, Staplers"},
    "2": {"title": "Pens (box of 12)", "description": None, "categories": "Office, Writing"},
}


def write_office(home: Path, inter: Any = None, items: Any = None, raw: dict[str, str] | None = None) -> Path:
    folder = home / OFFICE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Office.inter.json").write_text(json.dumps(OFFICE_INTER if inter is None else inter, indent=4))
    (folder / "Office.item.json").write_text(json.dumps(OFFICE_ITEMS if items is None else items, indent=4))
    for name, text in (raw or {}).items():
        (folder / name).write_text(text)
    return folder


def test_office_sequences_text_and_repeats(tmp_path: Path) -> None:
    write_office(tmp_path)
    X = load_amazon_office(tmp_path)
    assert X.shape == (3, 3) and X.name == OFFICE and X.users.ids.tolist() == [0, 1, 2]
    frame = X.to_frame(raw_ids=False)
    got = {(int(u), int(i)): int(t) for u, i, t in frame[["user", "item", "time"]].itertuples(index=False)}
    assert got == {(0, 0): 0, (0, 1): 1, (0, 2): 2, (1, 0): 1, (1, 2): 2, (1, 1): 3, (2, 1): 0}
    assert X.meta["repeats_dropped"] == 1 and X.meta["sequence_interactions"] == 8
    assert X.meta["items_with_description"] == 1 and X.meta["items_html_unescaped"] == 1
    f = X.item_features
    assert f is not None and list(f.columns) == ["title", "description", "brand", "categories", "text"]
    assert f["title"][0] == "AT&T Phone" and f["brand"][0] == "AT&T"
    assert f["text"].tolist() == [
        "AT&T Phone. Office, Phones. AT&T. A phone.",
        "Stapler. Office, Staplers. Swingline.",  # no description: kept, the part left out
        "Pens (box of 12). Office, Writing.",  # no brand key, null description
    ]
    assert X.titles() is not None and X.titles()[1] == "Stapler"  # type: ignore[index]
    s = leave_last_out(X)  # order alone makes the sequential protocol work
    assert pairs(s.test.matrix) == {(0, 2), (1, 1)} and pairs(s.valid.matrix) == {(0, 1), (1, 2)}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("inter", "items", "raw", "where", "problem"),
    [
        (None, None, {"Office.inter.json": '{\n  "0": [0, 1,\n}'}, "Office.inter.json, line 3", "not valid JSON"),
        ({"0": [0], "x": [1]}, None, None, "Office.inter.json, line 5", "user key 'x' is not an index"),
        ({"0": [0], "2": [1]}, None, None, "Office.inter.json, line 5", "user 2 is out of range"),
        ({"0": [0], "1": [1, 3]}, None, None, "Office.inter.json, line 5", "user 1: item 3 is outside 0..2"),
        ({"0": [0], "1": ["1"]}, None, None, "Office.inter.json, line 5", "expected a list of item indices"),
        (None, None, {"Office.inter.json": '{"0": [0],\n "0": [1]}'}, "Office.inter.json, line 2", "'0' appears twice"),
        (None, {"0": {"title": 3}}, None, "Office.item.json, line 2", "item 0: title is int, expected a string"),
        (None, {"0": ["Pen"]}, None, "Office.item.json, line 2", "item 0: expected an object"),
        (None, [1, 2], None, "Office.item.json", "expected a non-empty JSON object"),
    ],
)
def test_office_malformed_files_name_file_and_line(
    tmp_path: Path, inter: Any, items: Any, raw: dict[str, str] | None, where: str, problem: str
) -> None:
    folder = write_office(tmp_path, inter, items, raw)
    with pytest.raises(DataError) as info:
        read_lcrec(folder)
    message = str(info.value)
    assert where in message and problem in message, message


# ---------------------------------------------------------------------- dispatch, experiment and CLI
def test_dispatch_and_experiment_protocols(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    write_office(tmp_path)
    with pytest.raises(ConfigError, match="'amazon-office-2014-5core' has no official split"):
        official_split(OFFICE, tmp_path)
    with pytest.raises(ConfigError, match=r"load_dataset\('amazon-scientific-unisrec'\) has no option 'min_rating'"):
        load_dataset(SCIENTIFIC, tmp_path, min_rating=3.0)
    for protocol, valid in (("official", VALID), ("official_full", None)):
        cfg = ExperimentConfig(dataset=SCIENTIFIC, data_dir=str(tmp_path), protocol=protocol, model="Pop", ks=[2])
        s = make_split(load_data(cfg), cfg)  # min_rating (default 3.0) does not apply to these implicit data
        assert pairs(s.test.matrix) == TEST and s.protocol["published"] is True
        assert (s.valid is None) if valid is None else pairs(s.valid.matrix) == valid  # type: ignore[union-attr]
    cfg = ExperimentConfig(dataset=SCIENTIFIC, data_dir=str(tmp_path), protocol="official", model="Pop", ks=[2])
    _, outcome = run_experiment(cfg, tmp_path / "run")
    assert 0 <= outcome.report.summary["recall@2"] <= 1
    cfg = ExperimentConfig(dataset=OFFICE, data_dir=str(tmp_path), protocol="leave_last_out", model="Pop")
    assert pairs(make_split(load_data(cfg), cfg).test.matrix) == {(0, 2), (1, 1)}


def test_cli_lists_and_splits_the_amazon_datasets(tmp_path: Path) -> None:
    write_scientific(tmp_path)
    write_office(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    sci = next(ln for ln in lines if "amazon-scien" in ln)  # long names are cut to the table's width
    assert "yes" in sci and "│ 4 " in sci and "│ 6 " in sci and "14 (7 train + 3 valid +" in sci
    off = next(ln for ln in lines if "amazon-offic" in ln)
    assert "yes" in off and "│ 3 " in off and "│ 7 " in off
    out = tmp_path / "split"
    args = ["split", "--dataset", SCIENTIFIC, "--protocol", "official", "--data-dir", str(tmp_path), "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    back = Split.load(out)
    assert pairs(back.test.matrix) == TEST and back.protocol["name"] == "leave_last_out" and back.protocol["published"]
    args = [
        "split",
        "--dataset",
        OFFICE,
        "--protocol",
        "leave_last_out",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "Split(leave_last_out: train=3, valid=2, test=2)" in res.output, res.output


# ---------------------------------------------------------------------- the real files
def _real(data_dir: Path, folder: str, section: int) -> None:
    if not (data_dir / folder).is_dir():
        message = f"{data_dir / folder} is missing (see shared/data/SOURCES.md, section {section})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.integration
def test_real_scientific_counts(data_dir: Path) -> None:
    _real(data_dir, SCIENTIFIC, 6)
    X = load_amazon_scientific(data_dir, verify=True)  # sha256 of every file checked
    # UniSRec's table: 8,442 users, 4,385 items, 59,427 interactions; 291 repeats (of 264 pairs) dropped
    assert X.shape == (8_442, 4_385) and X.meta["sequence_interactions"] == 59_427
    assert X.meta["repeats_dropped"] == 291 and X.meta["repeated_pairs"] == 264 and X.nnz == 59_427 - 291
    assert X.users.ids[0] == "ABW8NXS7SV55K" and X.items.ids[0] == "B00TNNWMXI"
    # each user's latest kept position is the last of its sequence: lengths 5-80 add up to 59,427
    last = np.maximum.reduceat(X.timestamps, X.matrix.indptr[:-1])  # type: ignore[arg-type]
    assert int((last + 1).sum()) == 59_427 and last.min() + 1 == 5 and last.max() + 1 == 80
    assert X.item_features is not None and X.meta["items_without_text"] == 0
    assert abs(X.item_features["text"].str.len().mean() - 182.86) < 0.005  # SOURCES.md: 182.86 after strip
    s = amazon_scientific_split(data_dir)
    assert s.valid is not None and (s.train.nnz, s.valid.nnz, s.test.nnz) == (42_268, 8_426, 8_442)
    p = s.protocol
    assert (p["valid_is_test"], p["valid_repeats_train"], p["test_repeats_train"]) == (16, 51, 37)
    loo = leave_last_out(load_dataset(SCIENTIFIC, data_dir))
    differ: set[int] = set()
    for part in ("train", "valid", "test"):
        differ |= {u for u, _ in pairs(getattr(s, part).matrix) ^ pairs(getattr(loo, part).matrix)}
    # the 16 users whose validation target is their test target, and user 5322 (3128 3127 3128 3127 3127 3128):
    # two distinct items, so leave_last_out keeps 3127 in train where the published split validates on it
    assert len(differ) == 17 and 5322 in differ


@pytest.mark.integration
def test_real_office_counts(data_dir: Path) -> None:
    _real(data_dir, OFFICE, 7)
    X = load_amazon_office(data_dir, verify=True)
    assert X.shape == (4_905, 2_420) and X.nnz == 53_258 and X.meta["repeats_dropped"] == 0
    assert X.user_counts().min() == 5 and X.user_counts().max() == 94 and X.item_counts().min() >= 5
    f = X.item_features
    assert f is not None and X.meta["items_with_description"] == 1_781
    assert ((f["title"] != "").sum(), (f["brand"] != "").sum(), (f["categories"] != "").sum()) == (2_417, 1_935, 2_420)
    assert f["title"][2] == "AT&T 210 Corded Phone, Black, 1 Handset"  # "AT&amp;T" in the file
