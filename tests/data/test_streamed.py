"""`load_interactions_streamed`: the same result and the same errors as `load_interactions`, in tiny batches."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advrec.data import Interactions, load_interactions
from advrec.data.streamed import load_interactions_streamed
from advrec.errors import ConfigError, DataError

GOOD = (
    "user,item,rating,time\n"
    "1,10,4,100\n"
    "1,11,2.5,200\n"
    "\n"
    " 2 ,10,5,300\n"
    "u3,12,1,50\n"
    "1,10,3,90\n"  # repeats (1, 10) with an earlier time: "last" keeps line 2's
    "2,x,2,10\n"
    "2,10,1,300\n"  # repeats (2, 10) at the same time: the later line wins
)


def identical(a: Interactions, b: Interactions) -> None:
    assert a.users == b.users and a.items == b.items
    assert a.users.ids.dtype == b.users.ids.dtype and a.items.ids.dtype == b.items.ids.dtype
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(a.matrix, name), getattr(b.matrix, name)), name
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert np.array_equal(a.timestamps, b.timestamps)  # type: ignore[arg-type]
    assert a.name == b.name and a.meta == b.meta


def write(tmp_path: Path, text: str, name: str = "x.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("duplicates", ["last", "sum"])
@pytest.mark.parametrize("columns", [{"rating": "rating", "time": "time"}, {"rating": "rating"}, {"time": "time"}, {}])
def test_csv_in_batches_of_three_rows_equals_the_whole_file_reader(
    tmp_path: Path, duplicates: str, columns: dict[str, str]
) -> None:
    path = write(tmp_path, GOOD)
    whole = load_interactions(path, duplicates=duplicates, **columns)  # type: ignore[arg-type]
    streamed = load_interactions_streamed(path, duplicates=duplicates, batch_rows=3, **columns)  # type: ignore[arg-type]
    identical(whole, streamed)
    assert streamed.users.ids.tolist() == ["1", "2", "u3"] and streamed.items.ids.tolist() == ["10", "11", "12", "x"]


@pytest.mark.parametrize("duplicates", ["last", "sum"])
def test_parquet_in_batches_of_three_rows_equals_the_whole_file_reader(tmp_path: Path, duplicates: str) -> None:
    df = pd.DataFrame(
        {
            "user": [7, 7, 3, 9, 7, 3],
            "item": ["a", "b", "a", "c", "a", "b"],
            "rating": [4.0, 2.5, 5.0, 1.0, 3.0, 2.0],
            "time": pd.to_datetime([100, 200, 300, 50, 90, 10], unit="s"),
        }
    )
    path = tmp_path / "x.parquet"
    df.to_parquet(path, row_group_size=2)
    kw = dict(rating="rating", time="time", duplicates=duplicates)
    identical(load_interactions(path, **kw), load_interactions_streamed(path, batch_rows=3, **kw))  # type: ignore[arg-type]


def test_a_larger_random_file_with_integer_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    df = pd.DataFrame(
        {
            "user": rng.integers(0, 10**9, 500)[rng.integers(0, 500, n)],
            "item": rng.integers(0, 300, n),  # repeated pairs are frequent
            "rating": rng.integers(1, 6, n).astype(float),
            "time": rng.integers(0, 1000, n),
        }
    )
    csv, parquet = tmp_path / "r.csv", tmp_path / "r.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet)
    for path in (csv, parquet):
        for dup in ("last", "sum"):
            kw = dict(rating="rating", time="time", duplicates=dup)
            expected = load_interactions(path, **kw)  # type: ignore[arg-type]
            identical(expected, load_interactions_streamed(path, batch_rows=997, **kw))  # type: ignore[arg-type]
    assert expected.users.ids.dtype.kind == "i"


@pytest.mark.parametrize("late", ["007", "+7", "-0", "7.0", "abc"])
def test_ids_turn_to_text_when_a_late_one_is_not_a_canonical_integer(tmp_path: Path, late: str) -> None:
    path = write(tmp_path, f"user,item\n1,5\n2,6\n3,7\n7,8\n{late},9\n")
    streamed = load_interactions_streamed(path, batch_rows=2)
    identical(load_interactions(path), streamed)
    assert streamed.users.ids.dtype.kind == ("i" if late == "-0" else "U")  # "-0" is canonical: user 0


def test_tsv_gzip_and_crlf(tmp_path: Path) -> None:
    text = GOOD.replace(",", "\t").replace("\n", "\r\n")
    path = tmp_path / "x.tsv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    kw = dict(rating="rating", time="time")
    identical(load_interactions(path, **kw), load_interactions_streamed(path, batch_rows=2, **kw))  # type: ignore[arg-type]


def test_min_rating_and_core_as_the_whole_file_reader(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    kw = dict(rating="rating", min_rating=2.0, core=1)
    identical(load_interactions(path, **kw), load_interactions_streamed(path, batch_rows=3, **kw))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- errors: the same message as load_interactions
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user,item,rating\n1,2,3\n\n1\n", "line 4: expected 3 fields separated by commas, found 1"),
        (
            "user,item,rating\n1,2,3\n4,5,6\n7,8,9\n\n1,2,3,4\n",
            "line 6: expected 3 fields separated by commas, found 4",
        ),
        ("user,item,rating\n1,2,3\n\n4,5,x\n", "line 4: rating 'x' is not a number"),
        ("user,item,rating\n1,2,3\n\n4,,5\n", "line 4: empty item"),
        ("user,item,rating\n1,2,3\n4,5,6\n7,8,9\n  ,1,5\n", "line 5: empty user"),
        ("user,item,rating\n1,2,3\n4,5,\n", "line 3: empty rating"),
        ("user,item,rating\n1,2,3\n\n4,1,inf\n", "line 4: rating is 'inf', not a finite number"),
        ('user,item,rating\n"1",2,3\n"4","5\n6",7\n8,9,x\n', "line 5: rating 'x' is not a number"),
        (
            "user,item,rating\n1,2,3\n3,4,5\n1,2,1\n",
            "line 4: duplicate interaction (user 1, item 2); it is also on line 2",
        ),
        ("usr,item,rating\n1,2,3\n", "line 1: missing column 'user'; the columns are ['usr', 'item', 'rating']"),
        ("user,item,user\n1,2,3\n", "line 1: the column name 'user' appears more than once in the header"),
        ("user,item,rating\n", "no data rows"),
        ("\n\n", "the file is empty"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    messages = []
    for reader, kw in ((load_interactions, {}), (load_interactions_streamed, {"batch_rows": 1})):
        with pytest.raises(DataError) as info:
            reader(path, rating="rating", duplicates="error", **kw)  # type: ignore[operator]
        messages.append(str(info.value))
    assert str(path) in messages[1] and expected in messages[1], messages[1]
    if "no data rows" not in expected:
        assert messages[0] == messages[1]  # word for word what load_interactions says


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pd.DataFrame({"user": [1, None, 3], "item": [1, 2, 3], "rating": [1.0, 2.0, 3.0]}), "row 2"),
        (pd.DataFrame({"user": ["a", "b", " "], "item": [1, 2, 3], "rating": [1.0, 2.0, 3.0]}), "row 3"),
        (pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "rating": [1.0, np.inf, 3.0]}), "row 2"),
        (pd.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "rating": [1.0, 2.0, np.nan]}), "row 3"),
        (pd.DataFrame({"user": [1, 2, 1], "item": [1, 2, 1], "rating": [1.0, 2.0, 3.0]}), "row 3"),
    ],
)
def test_malformed_parquet_names_the_row(tmp_path: Path, frame: pd.DataFrame, expected: str) -> None:
    path = tmp_path / "x.parquet"
    frame.to_parquet(path)
    messages = []
    for reader, kw in ((load_interactions, {}), (load_interactions_streamed, {"batch_rows": 2})):
        with pytest.raises(DataError) as info:
            reader(path, rating="rating", duplicates="error", **kw)  # type: ignore[operator]
        messages.append(str(info.value))
    assert f"{path}, {expected} (counting from 1)" in messages[1]
    assert messages[0] == messages[1]


def test_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="batch_rows must be ≥ 1"):
        load_interactions_streamed(path, batch_rows=0)
    with pytest.raises(ConfigError, match="one-character sep"):
        load_interactions_streamed(write(tmp_path, "user::item\n1::2\n", "x.dat"))
    with pytest.raises(ConfigError, match="min_rating needs a rating column"):
        load_interactions_streamed(path, min_rating=3)
    with pytest.raises(DataError, match="no such file"):
        load_interactions_streamed(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="missing column 'score'"):
        frame = pd.DataFrame({"user": [1], "item": [2]})
        frame.to_parquet(tmp_path / "y.parquet")
        load_interactions_streamed(tmp_path / "y.parquet", rating="score")
