"""MovieLens loaders on the real files (`data_dir` fixture), and the dataset registry without network."""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from advrec.data import Interactions, list_datasets, load_movielens, registry
from advrec.data.registry import DatasetInfo, data_home, dataset_dir
from advrec.errors import DataError, DatasetNotFoundError, UnknownDatasetError

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> Interactions:
    return load_movielens("ml-100k", data_dir=data_dir, download=False)


@pytest.fixture(scope="module")
def ml1m(data_dir: Path) -> Interactions:
    return load_movielens("ml-1m", data_dir=data_dir, download=False)


def entry(X: Interactions, user: object, item: object) -> tuple[float, int]:
    """(value, timestamp) of one stored entry."""
    u, i = X.users.index(user), X.items.index(item)
    row = slice(X.matrix.indptr[u], X.matrix.indptr[u + 1])
    pos = row.start + int(np.flatnonzero(X.matrix.indices[row] == i)[0])
    assert X.timestamps is not None
    return float(X.matrix.data[pos]), int(X.timestamps[pos])


# ---------------------------------------------------------------------- real data
@integration
def test_ml100k_counts_and_tables(ml100k: Interactions) -> None:
    X = ml100k
    assert (X.nnz, X.n_users, X.n_items) == (100_000, 943, 1_682)
    assert X.name == "ml-100k" and X.meta["dataset"] == "ml-100k"
    assert X.users.ids.tolist() == list(range(1, 944))  # ascending raw ids
    assert entry(X, 196, 242) == (3.0, 881250949)  # first line of u.data
    assert np.bincount(X.matrix.data.astype(int)).tolist() == [0, 6_110, 11_370, 27_145, 34_174, 21_201]
    items = X.item_features
    assert items is not None and len(items) == X.n_items and list(items.columns) == ["title", "year", "genres"]
    toy = items.iloc[X.items.index(1)]
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", 1995, "Animation|Children's|Comedy")
    assert items.iloc[X.items.index(543)]["title"] == "Misérables, Les"  # latin-1
    assert str(items["year"].dtype) == "Int64"
    assert items.iloc[X.items.index(267)]["title"] == "unknown" and items["year"].isna().sum() == 1
    users = X.user_features
    assert users is not None and list(users.columns) == ["gender", "age", "occupation", "zip"]
    assert users.iloc[0].tolist() == ["M", 24, "technician", "85711"]
    assert users["gender"].value_counts().to_dict() == {"M": 670, "F": 273}


@integration
def test_ml1m_counts_and_tables(ml1m: Interactions) -> None:
    X = ml1m
    assert (X.nnz, X.n_users, X.n_items) == (1_000_209, 6_040, 3_706)
    assert entry(X, 1, 1193) == (5.0, 978300760)  # first line of ratings.dat
    assert X.timestamps.min() == 956703932 and X.timestamps.max() == 1046454590  # type: ignore[union-attr]
    items = X.item_features
    assert items is not None and items["title"].notna().all()
    assert items.iloc[X.items.index(73)]["title"] == "Misérables, Les"  # latin-1
    assert items.iloc[X.items.index(1)][["title", "year", "genres"]].tolist() == [
        "Toy Story",
        1995,
        "Animation|Children's|Comedy",
    ]
    users = X.user_features
    assert users is not None
    assert users.iloc[0].tolist() == ["F", 1, 10, "48067"]
    assert users["gender"].value_counts().to_dict() == {"M": 4_331, "F": 1_709}
    assert users["age"].value_counts().sort_index().tolist() == [222, 1_103, 2_096, 1_193, 550, 496, 380]
    assert users["occupation"].nunique() == 21


@integration
def test_ml1m_recbole_protocol(data_dir: Path, ml1m: Interactions) -> None:
    X = load_movielens("ml-1m", data_dir=data_dir, min_rating=3, core=10, download=False)
    assert (X.nnz, X.n_users, X.n_items) == (834_449, 6_033, 3_123)
    assert set(X.matrix.data.tolist()) == {1.0}
    assert X.user_counts().min() >= 10 and X.item_counts().min() >= 10
    assert X.meta == {"dataset": "ml-1m", "min_rating": 3, "core": 10, "duplicates": "last"}
    assert X.item_features is not None and len(X.item_features) == X.n_items
    assert X.item_features.iloc[X.items.index(1)]["title"] == "Toy Story"  # features follow the filter
    assert X.user_features is not None and len(X.user_features) == X.n_users
    assert X.binarize().nnz == ml1m.binarize(3).core_filter(10).nnz


@integration
def test_ml_latest_small_tags(data_dir: Path) -> None:
    X = load_movielens("ml-latest-small", data_dir=data_dir, download=False)
    assert (X.nnz, X.n_users, X.n_items) == (100_836, 610, 9_724)
    assert X.user_features is None
    items = X.item_features
    assert items is not None and list(items.columns) == ["title", "year", "genres", "tags"]
    assert items.iloc[X.items.index(1)]["tags"] == "fun|pixar"
    tagged = items["tags"] != ""
    assert 1_000 < tagged.sum() < 1_572
    assert (items["tags"] == items["tags"].str.lower()).all()
    assert entry(X, 1, 1) == (4.0, 964982703)
    assert sorted(set(X.matrix.data.tolist()))[:2] == [0.5, 1.0]


@integration
def test_corrupted_copy_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    shutil.copytree(data_dir / "ml-100k", folder)
    lines = (folder / "u.data").read_text().splitlines(keepends=True)
    lines[4] = "186\t302\n"  # line 5 loses two fields
    (folder / "u.data").write_text("".join(lines))
    with pytest.raises(DataError, match=r"u\.data, line 5: expected 4 fields separated by tabs, found 2"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


def test_ml1m_format_errors_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::4::978300761\n2::10::x::978300762\n")
    (folder / "movies.dat").write_bytes("10::Café (1999)::Drama\n20::Heat (1995)::Action|Crime\n".encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 3: rating 'x' is not a number"):
        load_movielens("ml-1m", data_dir=tmp_path, download=False)
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::4::978300761\n2::10::3::978300762\n")
    X = load_movielens("ml-1m", data_dir=tmp_path, download=False)
    assert X.item_features is not None and X.item_features["title"].tolist() == ["Café", "Heat"]
    with pytest.raises(DataError, match=r"ratings\.dat, line 3: duplicate rating.*line 1"):
        (folder / "ratings.dat").write_text("1::10::5::1\n1::20::4::2\n1::10::3::3\n")
        load_movielens("ml-1m", data_dir=tmp_path, download=False, duplicates="error")
    (folder / "users.dat").write_text("1::F::1::10::48067\n1::M::56::16::70072\n")
    with pytest.raises(DataError, match=r"users\.dat, line 2: duplicate user id"):
        load_movielens("ml-1m", data_dir=tmp_path, download=False)


def test_unknown_movielens_name() -> None:
    with pytest.raises(UnknownDatasetError, match="ml-100k, ml-1m, ml-latest-small"):
        load_movielens("ml-10m", download=False)


# ---------------------------------------------------------------------- registry, no network
def test_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADVREC_DATA_DIR", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("ADVREC_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr("sys.prefix", str(tmp_path / "venv"))  # no environment's advrec.toml either
    assert data_home() == tmp_path / ".cache" / "advrec" / "datasets"


def test_the_data_home_comes_from_a_configuration_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`advrec ...` typed in a shell finds the datasets `make` found: the environment's advrec.toml (written by
    make), a user's config.toml before it, $ADVREC_DATA_DIR before both; a broken file is named."""
    from advrec.data.registry import data_home_source
    from advrec.errors import DataError

    monkeypatch.delenv("ADVREC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("sys.prefix", str(tmp_path / "venv"))
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "advrec.toml").write_text('[data]\nhome = "../shared"\n')
    assert data_home_source() == ((tmp_path / "shared").resolve(), str(tmp_path / "venv" / "advrec.toml"))
    user = tmp_path / "config" / "advrec" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[data]\nhome = "/srv/data"\n')
    assert data_home() == Path("/srv/data")
    monkeypatch.setenv("ADVREC_DATA_DIR", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    monkeypatch.delenv("ADVREC_DATA_DIR")
    user.write_text("[data]\nhome = 3\n")
    with pytest.raises(DataError, match=r"config\.toml: \[data\] home must be a folder path"):
        data_home()
    user.write_text("[data\n")
    with pytest.raises(DataError, match="not a valid advrec configuration file"):
        data_home()
    user.write_text("")  # sets nothing: the environment's file is read
    assert data_home() == (tmp_path / "shared").resolve()


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UnknownDatasetError) as info:
        dataset_dir("movielens-2", download=False)
    assert "ml-100k" in str(info.value) and "ml-1m" in str(info.value) and "ml-latest-small" in str(info.value)


def test_offline_names_files_and_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(url: str, dest: Path, quiet: bool = False) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(registry, "_download", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_movielens("ml-1m", data_dir=tmp_path)
    message = str(info.value)
    for part in ("ratings.dat", "movies.dat", "users.dat", str(tmp_path / "ml-1m"), "ml-1m.zip", "no network"):
        assert part in message, message
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        dataset_dir("ml-100k", tmp_path, download=False)


@integration
def test_present_datasets_are_found(data_dir: Path) -> None:
    status = {s.name: s for s in list_datasets(data_dir)}
    assert set(status) >= {"ml-100k", "ml-1m", "ml-latest-small"}
    assert status["ml-1m"].present and status["ml-1m"].folder == data_dir / "ml-1m"
    assert dataset_dir("ml-100k", data_dir, download=False, verify=True) == data_dir / "ml-100k"
    # data_dir may also name the dataset folder itself
    assert dataset_dir("ml-100k", data_dir / "ml-100k", download=False) == data_dir / "ml-100k"


def fake_dataset(tmp_path: Path, files: dict[str, bytes], top: str = "fake-ds", sha: dict | None = None) -> DatasetInfo:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for name, data in files.items():
            zf.writestr(f"{top}/{name}", data)
        zf.writestr("__MACOSX/._junk", b"junk")
    archive = tmp_path / "server" / "fake-ds.zip"
    archive.parent.mkdir()
    archive.write_bytes(buf.getvalue())
    return DatasetInfo(
        name="fake",
        url=archive.as_uri(),
        folder="fake",
        archive_folder="fake-ds",
        files=("ratings.csv",),
        sha256=sha if sha is not None else {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
    )


def test_download_extract_and_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {"ratings.csv": b"user,item\n1,2\n", "README": b"hello", "sub/extra.txt": b"more"}
    info = fake_dataset(tmp_path, files)
    monkeypatch.setitem(registry.DATASETS, "fake", info)
    home = tmp_path / "home"
    folder = dataset_dir("fake", home, quiet=True)
    assert folder == home / "fake"
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in home.iterdir()) == ["fake"]  # archive and temporary files removed
    assert next(s for s in list_datasets(home) if s.name == "fake").present

    def no_download(url: str, dest: Path, quiet: bool = False) -> None:
        raise AssertionError("present files must not be downloaded again")

    monkeypatch.setattr(registry, "_download", no_download)
    assert dataset_dir("fake", home) == folder
    (folder / "ratings.csv").write_bytes(b"user,item\n1,3\n")
    with pytest.raises(DataError, match=r"ratings\.csv.*does not match"):
        dataset_dir("fake", home, verify=True)


def test_renamed_top_folder_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = fake_dataset(tmp_path, {"ratings.csv": b"user,item\n1,2\n"}, top="fake-ds-v2")
    monkeypatch.setitem(registry.DATASETS, "fake", info)
    assert (dataset_dir("fake", tmp_path / "home", quiet=True) / "ratings.csv").is_file()


def test_checksum_mismatch_installs_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {"ratings.csv": b"user,item\n1,2\n", "README": b"hello"}
    info = fake_dataset(tmp_path, files, sha={"ratings.csv": "0" * 64})
    monkeypatch.setitem(registry.DATASETS, "fake", info)
    home = tmp_path / "home"
    with pytest.raises(DataError, match=r"ratings\.csv from file:.*sha256 [0-9a-f]{64} does not match"):
        dataset_dir("fake", home, quiet=True)
    assert not (home / "fake" / "ratings.csv").exists()
    assert [p.name for p in home.iterdir()] == []


def test_not_a_zip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html>moved</html>")
    info = DatasetInfo(name="fake", url=page.as_uri(), folder="fake", archive_folder="", files=("a.csv",))
    monkeypatch.setitem(registry.DATASETS, "fake", info)
    with pytest.raises(DataError, match="not a zip archive"):
        dataset_dir("fake", tmp_path / "home", quiet=True)


def test_a_file_of_your_own_is_a_dataset(tmp_path: Path) -> None:
    """`load_dataset` (and so `advrec train --dataset`) takes a path to a CSV/TSV/Parquet file, its columns found
    by their names; a file without a user column is refused naming its columns."""
    from advrec.data.datasets import is_file_dataset, load_dataset
    from advrec.errors import ConfigError, DataError

    path = tmp_path / "events.csv"
    path.write_text("UserID,item_id,Rating,ts\nu1,a,5,1\nu1,b,2,2\nu2,a,4,3\n")
    X = load_dataset(str(path), min_rating=4)
    assert (X.n_users, X.n_items, X.nnz) == (2, 2, 2) and X.timestamps is not None
    df = pd.DataFrame({"customer_id": [1, 2, 2], "sku": ["x", "y", "x"]})
    df.to_parquet(tmp_path / "buys.parquet")
    assert load_dataset(str(tmp_path / "buys.parquet"), min_rating=3).nnz == 3  # no rating column: implicit
    assert is_file_dataset("a/b.tsv.gz") and not is_file_dataset("ml-100k")
    with pytest.raises(ConfigError, match="has no option 'verify'"):
        load_dataset(str(path), verify=True)
    (tmp_path / "bad.csv").write_text("who,what\n1,2\n")
    with pytest.raises(DataError, match=r"no user column among \['who', 'what'\]"):
        load_dataset(str(tmp_path / "bad.csv"))


@pytest.mark.integration
def test_lastfm_listening_counts_load_with_artist_names(data_dir: Path) -> None:
    from advrec.data.datasets import IMPLICIT_DATASETS, load_dataset

    X = load_dataset("hetrec2011-lastfm-2k", data_dir=data_dir)
    assert (X.n_users, X.n_items, X.nnz) == (1892, 17632, 92834)  # SOURCES.md's verified counts
    assert X.matrix.data.min() == 1 and X.matrix.data.max() == 352698  # listening counts, as they are
    assert "hetrec2011-lastfm-2k" in IMPLICIT_DATASETS  # min_rating does not drop small counts
    titles = dict(zip(X.items.ids.tolist(), X.item_features["title"], strict=True))
    assert titles[51] == "Duran Duran" and "" not in set(titles.values())
