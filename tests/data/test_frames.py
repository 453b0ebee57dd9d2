"""`load_interactions`: CSV/TSV/Parquet, and errors that name the file, the editor's line and the problem."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advrec.data import Interactions, load_interactions
from advrec.data.frames import DelimitedFile, read_delimited, sniff_sep
from advrec.errors import ConfigError, DataError


def write(tmp_path: Path, text: str, name: str = "x.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def load_error(path: Path, **kw: object) -> str:
    kw = {"rating": "rating", **kw}
    with pytest.raises(DataError) as info:
        load_interactions(path, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message, message
    return message


GOOD = "user,item,rating,time\n1,10,4,100\n1,11,2.5,200\n2,10,5,300\n"


# ---------------------------------------------------------------------- good input
def test_csv_with_rating_and_time(tmp_path: Path) -> None:
    X = load_interactions(write(tmp_path, GOOD), rating="rating", time="time")
    assert isinstance(X, Interactions)
    assert X.shape == (2, 2) and X.nnz == 3
    assert X.users.ids.tolist() == [1, 2] and X.items.ids.dtype.kind == "i"
    df = X.to_frame().sort_values("time")
    assert df["rating"].tolist() == [4.0, 2.5, 5.0]
    assert df["time"].tolist() == [100, 200, 300]
    assert X.name == "x" and X.meta["source"] == str(tmp_path / "x.csv")


def test_min_rating_and_core(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    X = load_interactions(path, rating="rating", min_rating=4)
    assert X.nnz == 2 and X.matrix.data.tolist() == [1.0, 1.0]
    C = load_interactions(path, rating="rating", core=2)
    assert C.nnz == 0 or (C.user_counts() >= 2).all()
    assert X.meta["min_rating"] == 4


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("x.tsv", "user\titem\n1\t2\n"),
        ("x.dat", "user::item\n1::2\n"),
        ("x.txt", "user;item\n1;2\n"),
        ("x", "user|item\n1|2\n"),
        ("x.csv", "user;item\n1;2\n"),  # a .csv separated by semicolons
    ],
)
def test_separator_is_sniffed(tmp_path: Path, name: str, text: str) -> None:
    X = load_interactions(write(tmp_path, text, name))
    assert X.users.ids.tolist() == [1] and X.items.ids.tolist() == [2]


def test_explicit_separator_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv.gz"
    path.write_bytes(gzip.compress(b"user\titem\trating\na\tb\t3\n"))
    assert sniff_sep(path) == "\t"
    X = load_interactions(path, rating="rating", sep="\t")
    assert X.users.ids.tolist() == ["a"] and X.nnz == 1


def test_ids_keep_text_and_leading_zeros(tmp_path: Path) -> None:
    X = load_interactions(write(tmp_path, "user,item\n007,b\n7,a\n"))
    assert X.users.ids.tolist() == ["007", "7"]
    assert X.users.index("007") != X.users.index("7")


def test_quoted_fields_and_blank_lines_count_as_lines(tmp_path: Path) -> None:
    text = 'user,item,rating,note\n\n1,10,4,"a, b"\n"2",11,3,"x\ny"\n3,12,oops,z\n'
    message = load_error(write(tmp_path, text))
    assert "line 6:" in message and "'oops'" in message
    X = load_interactions(write(tmp_path, text.replace("oops", "1"), "ok.csv"), rating="rating")
    assert X.nnz == 3


def test_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "user,item,rating\n1,10,4\n2,10,5\n1,10,2\n")
    assert load_interactions(path, rating="rating").to_frame().set_index("user")["rating"][1] == 2.0
    assert load_interactions(path, rating="rating", duplicates="sum").to_frame().set_index("user")["rating"][1] == 6
    message = load_error(path, duplicates="error")
    assert "line 4:" in message and "line 2" in message and "duplicate interaction" in message


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        load_interactions("x.csv", duplicates="first")
    with pytest.raises(ConfigError, match="rating column"):
        load_interactions("x.csv", min_rating=3)


# ---------------------------------------------------------------------- bad input
def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.csv")
    assert "no such file" in message


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert "empty" in load_error(write(tmp_path, text))


def test_header_only(tmp_path: Path) -> None:
    assert "line 1: no data rows" in load_error(write(tmp_path, "user,item,rating\n"))


def test_missing_column_lists_present_columns(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "user,item,score\n1,2,3\n"))
    assert "line 1: missing column 'rating'" in message
    assert "['user', 'item', 'score']" in message


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("user,item,rating\n1,10,4\n1,11,3,9\n", 3, "expected 3 fields separated by commas, found 4"),
        ("user,item,rating\n1,10,4,9\n1,11,3\n", 2, "expected 3 fields separated by commas, found 4"),
        ("user,item,rating\n1,10,4\n2,11,3\n1,11\n", 4, "expected 3 fields separated by commas, found 2"),
        ("user,item,rating\n1,10,4\n1,11,abc\n", 3, "rating 'abc' is not a number"),
        ("user,item,rating\n1,10,4\n\n1,11,\n", 4, "empty rating"),
        ("user,item,rating\n1,10,4\n1,11,nan\n", 3, "rating is 'nan', not a finite number"),
        ("user,item,rating\n1,10,4\n1,11,inf\n", 3, "rating is 'inf', not a finite number"),
        ("user,item,rating\n1,10,4\n,11,3\n", 3, "empty user"),
        ("user,item,rating\n1,10,4\n2, ,3\n", 3, "empty item"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    message = load_error(write(tmp_path, text))
    assert f"line {line}: {problem}" in message, message


def test_non_numeric_time(tmp_path: Path) -> None:
    path = write(tmp_path, "user,item,rating,time\n1,10,4,100\n1,11,3,2020-01-01\n")
    message = load_error(path, time="time")
    assert "line 3: time '2020-01-01' is not a number" in message


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "user,item,rating\n1,10,4\n1,Café,3\n", encoding="latin-1")
    assert "line 3: bytes that are not valid utf-8" in load_error(path)
    assert load_interactions(path, rating="rating", encoding="latin-1").items.ids.tolist() == ["10", "Café"]


def test_unknown_separator(tmp_path: Path) -> None:
    assert "separator" in load_error(write(tmp_path, "user item\n1 2\n", "x.txt"))


def test_delimited_file_helper(tmp_path: Path) -> None:
    path = write(tmp_path, "1::10::5\n2::10::4\n\n3::11::x\n", "r.dat")
    src = DelimitedFile(path, "::", names=["user", "item", "rating"], quoted=False)
    with pytest.raises(DataError, match=re.escape(f"{path}, line 4: rating 'x' is not a number")):
        src.read({"user": "int", "item": "int", "rating": "float"})
    df = read_delimited(path, "::", {"user": "int"}, names=["user", "item", "rating"], quoted=False)
    assert df["user"].tolist() == [1, 2, 3]
    assert src.line_of([0, 2]) == [1, 4]


# ---------------------------------------------------------------------- Parquet
def test_parquet_round_trip(tmp_path: Path) -> None:
    X = load_interactions(write(tmp_path, GOOD), rating="rating", time="time")
    path = tmp_path / "x.parquet"
    X.to_frame().to_parquet(path)
    Y = load_interactions(path, rating="rating", time="time")
    assert Y.users == X.users and Y.items == X.items
    assert (Y.matrix != X.matrix).nnz == 0
    np.testing.assert_array_equal(Y.timestamps, X.timestamps)


def test_parquet_datetime_time_and_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame(
        {"user": ["a", "b"], "item": ["x", "x"], "time": pd.to_datetime(["2020-01-01", "2020-01-02"])}
    ).to_parquet(path)
    X = load_interactions(path, time="time")
    assert sorted(X.timestamps.tolist()) == [1577836800, 1577923200]


def test_parquet_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "rating": [4.0, np.nan, 3.0]}).to_parquet(path)
    assert "row 2 (counting from 1): empty rating" in load_error(path)
    pd.DataFrame({"user": [1, None], "item": [1, 2], "rating": [4.0, 3.0]}).to_parquet(path)
    assert "row 2 (counting from 1): empty user" in load_error(path)
    pd.DataFrame({"user": [1], "item": [1], "rating": [np.inf]}).to_parquet(path)
    assert "row 1 (counting from 1): rating inf is not a finite number" in load_error(path)
    pd.DataFrame({"user": [1], "item": [1], "rating": ["good"]}).to_parquet(path)
    assert "rating 'good' is not a finite number" in load_error(path)
    pd.DataFrame({"user": [1], "item": [1]}).to_parquet(path)
    assert "missing column 'rating'; the columns are ['user', 'item']" in load_error(path)
    path.write_bytes(b"this is not parquet")
    assert "not a readable Parquet file" in load_error(path)
    path.write_bytes(b"")
    assert "empty" in load_error(path)
