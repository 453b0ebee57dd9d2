"""Known datasets: their files, checksums, download URLs, and where they live on disk.

The data home is `data_dir` when given, else the environment variable `ADVREC_DATA_DIR`, else `home` in the
`[data]` table of a configuration file (`$XDG_CONFIG_HOME/advrec/config.toml`, then `advrec.toml` in the Python
environment's prefix, which `make` writes when it finds the project's shared data), else
`~/.cache/advrec/datasets`. A dataset lives in `<data home>/<folder>/` (e.g. `ml-1m/ratings.dat`).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from advrec.errors import DataError, DatasetNotFoundError, UnknownDatasetError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetStatus",
    "data_home",
    "data_home_source",
    "dataset_dir",
    "get_dataset",
    "list_datasets",
    "verify_files",
]

log = logging.getLogger(__name__)

ENV_VAR = "ADVREC_DATA_DIR"
GROUPLENS = "https://files.grouplens.org/datasets"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetInfo:
    """A known dataset: the files its loader needs and the known sha256 of every file we check.

    `url` is the archive to download ("" when there is none: the files are put in place by hand, from
    `source`).
    """

    name: str
    url: str
    folder: str  # folder under the data home
    archive_folder: str  # folder inside the archive ("" = the archive's root)
    files: tuple[str, ...]  # files the loader needs
    sha256: Mapping[str, str] = field(default_factory=dict)  # file -> sha256 (needed files and extras)
    description: str = ""
    license: str = ""
    source: str = ""  # where the files come from, when there is no download URL


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a known dataset is on disk (see `list_datasets`)."""

    name: str
    folder: Path
    present: bool
    missing: tuple[str, ...]
    url: str
    description: str


_ML_LICENSE = "GroupLens research licence: non-commercial research use; see the README"

DATASETS: dict[str, DatasetInfo] = {
    "ml-100k": DatasetInfo(
        name="ml-100k",
        url=f"{GROUPLENS}/movielens/ml-100k.zip",
        folder="ml-100k",
        archive_folder="ml-100k",
        files=("u.data", "u.item", "u.user"),
        sha256={
            "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
            "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        },
        description="MovieLens 100K (1998): 100,000 ratings 1–5 by 943 users on 1,682 movies",
        license=_ML_LICENSE,
    ),
    "ml-1m": DatasetInfo(
        name="ml-1m",
        url=f"{GROUPLENS}/movielens/ml-1m.zip",
        folder="ml-1m",
        archive_folder="ml-1m",
        files=("ratings.dat", "movies.dat", "users.dat"),
        sha256={
            "README": "2d5ddce86ccbd247207456165827b4b9ddf27282bca93807d4c763e28414f133",
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "ratings.dat": "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
        description="MovieLens 1M (2003): 1,000,209 ratings 1–5 by 6,040 users on 3,706 movies",
        license=_ML_LICENSE,
    ),
    "ml-latest-small": DatasetInfo(
        name="ml-latest-small",
        url=f"{GROUPLENS}/movielens/ml-latest-small.zip",
        folder="ml-latest-small",
        archive_folder="ml-latest-small",
        files=("ratings.csv", "movies.csv", "tags.csv"),
        sha256={
            "README.txt": "569448aba20b7eb111dbaa271231a51a9c25add372ededf84256dc592a1fceaf",
            "links.csv": "028a4a1d17751ca9276e0e0718cfc22356350f224a996e1ec348c23274b9209d",
            "movies.csv": "c47b783f23eb304413307e1bb05335e427737da20ec8d3c0e96335567dd5f3dc",
            "ratings.csv": "80da8b3393dae325bbba5a31f291a6ba55d8d4f4396de3c456f2c1635b1b70e8",
            "tags.csv": "68eec00a0820c2faa8863a6df7032f13d5899a4462bce9a97213905297ff3d34",
        },
        description="MovieLens latest-small (2018): 100,836 ratings 0.5–5 by 610 users on 9,724 movies, tags",
        license=_ML_LICENSE,
    ),
    "hetrec2011-lastfm-2k": DatasetInfo(
        name="hetrec2011-lastfm-2k",
        url=f"{GROUPLENS}/hetrec2011/hetrec2011-lastfm-2k.zip",
        folder="hetrec2011-lastfm-2k",
        archive_folder="",
        files=("user_artists.dat", "artists.dat", "user_friends.dat"),
        sha256={
            "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
            "readme.txt": "6fe5d1e6f67b025fc50cd70883dd1a1ff16c5ff37b5b7abfb33644b83468b209",
            "user_artists.dat": "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
            "user_friends.dat": "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7",
        },
        description="Last.fm HetRec 2011: listening counts of 1,892 users on 17,632 artists, social graph",
        license="non-commercial use only; see readme.txt",
    ),
    "gowalla": DatasetInfo(
        name="gowalla",
        url="",
        folder="lightgcn-gowalla",
        archive_folder="",
        files=("train.txt", "test.txt", "user_list.txt", "item_list.txt"),
        sha256={
            "README.md": "d2eea49ca83f034c71ddaa03422d4491e86fb6131bccfb35e35ec5f575a10955",
            "item_list.txt": "6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139",
            "test.txt": "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
            "train.txt": "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
            "user_list.txt": "5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1",
        },
        description=(
            "Gowalla check-ins, the LightGCN/NGCF split: 29,858 users, 40,981 locations, "
            "810,128 train + 217,242 test interactions (implicit)"
        ),
        license="research use only (no licence for the data itself was found)",
        source="the Data/gowalla/ folder of the kuandeng/LightGCN repository on GitHub, commit b067ec05",
    ),
    "amazon-scientific-unisrec": DatasetInfo(
        name="amazon-scientific-unisrec",
        url="",
        folder="amazon-scientific-unisrec",
        archive_folder="",
        files=(
            "Scientific.train.inter",
            "Scientific.valid.inter",
            "Scientific.test.inter",
            "Scientific.text",
            "Scientific.item2index",
            "Scientific.user2index",
        ),
        sha256={
            "Scientific.item2index": "896ab1017508cf20834d3d0537da9f8f624324223a835af272a98ba16f8c087a",
            "Scientific.test.inter": "546da7e5f44002b4518d7fd58066684bc09613f76c240914e16976d57cfe7083",
            "Scientific.text": "95887e6bda76e54f59b71b566320520d5da74e21d3b6ff8f20bfb6e8e84aa831",
            "Scientific.train.inter": "7284f6489d956fa20c9b64ffc84569264320edba5c3bc2fcb22db2ea083a1163",
            "Scientific.user2index": "f0162b1a3a0c6b7e816f86208e7b36f65d6787923126f9558fbc6d368e4c4974",
            "Scientific.valid.inter": "5f37c84d3b54617cdc46638c89dfe8741c7efc4987acd5eb64de2cbd4311f46c",
        },
        description=(
            'Amazon Industrial & Scientific (2018) as UniSRec\'s "Scientific": 8,442 users, 4,385 items with text, '
            "59,427 interactions in sequence order, published leave-last-out split"
        ),
        license="research use only (no licence for the data itself was found)",
        source="the dataset/Scientific/ folder of the ysh-1998/CoWPiRec repository on GitHub, commit 97b0c8e8",
    ),
    "amazon-office-2014-5core": DatasetInfo(
        name="amazon-office-2014-5core",
        url="",
        folder="amazon-office-2014-5core",
        archive_folder="",
        files=("Office.inter.json", "Office.item.json"),
        sha256={
            "Office.inter.json": "10f983c76de3d2443ae68bf50bc6231962ab493f4d08c7e716e2f183ae70d698",
            "Office.item.json": "df013666416847d0f3468f08d9f68877faf251f71b51247050e98da5b705b5c7",
        },
        description=(
            "Amazon Office Products (2014), 5-core: 4,905 users, 2,420 items with title, description, brand and "
            "categories, 53,258 interactions in sequence order"
        ),
        license="research use only (no licence for the data itself was found)",
        source="the data/Office/ folder of the yuyq18/APAO repository on GitHub, commit aa08fcfa",
    ),
}


def get_dataset(name: str) -> DatasetInfo:
    """The `DatasetInfo` of a known dataset; `UnknownDatasetError` lists the known names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}") from None


def config_files() -> list[Path]:
    """The configuration files read, in order: the user's, then the Python environment's."""
    user = Path(os.environ.get("XDG_CONFIG_HOME", "").strip() or Path.home() / ".config")
    return [user / "advrec" / "config.toml", Path(sys.prefix) / "advrec.toml"]


def configured_data_home() -> tuple[Path, Path] | None:
    """(data home, file) from the first configuration file that sets `[data] home` (a relative path is taken
    from the file's folder); None when none does. A file that is not TOML, or a `home` that is not a string, is
    refused naming the file."""
    import tomllib

    for path in config_files():
        if not path.is_file():
            continue
        try:
            home = tomllib.loads(path.read_text()).get("data", {}).get("home")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise DataError(f"{path}: not a valid advrec configuration file ({err})") from None
        if home is None:
            continue
        if not isinstance(home, str) or not home.strip():
            raise DataError(f"{path}: [data] home must be a folder path (a string), got {home!r}")
        return (path.parent / Path(home).expanduser()).resolve(), path
    return None


def data_home(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """`data_dir` when given, else `$ADVREC_DATA_DIR`, else a configuration file's `[data] home`, else
    `~/.cache/advrec/datasets` (not created)."""
    return data_home_source(data_dir)[0]


def data_home_source(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The data home and where it came from (what `advrec datasets` prints)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "--data-dir"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser(), f"${ENV_VAR}"
    configured = configured_data_home()
    if configured is not None:
        return configured[0], str(configured[1])
    return Path.home() / ".cache" / "advrec" / "datasets", "the default cache"


def _missing(folder: Path, info: DatasetInfo) -> list[str]:
    return [f for f in info.files if not (folder / f).is_file()]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_files(folder: str | Path, info: DatasetInfo | str) -> None:
    """Checks the sha256 of every file of `info` present in `folder`; a mismatch raises `DataError`."""
    info = get_dataset(info) if isinstance(info, str) else info
    folder = Path(folder)
    for fname, expected in info.sha256.items():
        path = folder / fname
        if path.is_file():
            actual = _sha256(path)
            if actual != expected:
                raise DataError(
                    f"{path}: sha256 {actual} does not match the known checksum {expected} of "
                    f"{info.name}/{fname}; the file is corrupt or not the original"
                )


def _not_found(info: DatasetInfo, folder: Path, reason: str) -> DatasetNotFoundError:
    missing = _missing(folder, info)
    if info.url:
        inside = f"folder {info.archive_folder}/ of" if info.archive_folder else "the root of"
        origin = f"the {inside} {info.url}"
    else:
        origin = info.source or "the dataset's publisher"
    return DatasetNotFoundError(
        f"dataset {info.name!r} is not in {folder} (missing: {', '.join(missing)}); {reason}.\n"
        f"To use it offline, put the files {', '.join(info.files)} (from {origin}) into "
        f"{folder}{os.sep}, or pass data_dir= (or set {ENV_VAR}) to the folder that holds {info.folder}{os.sep}."
    )


def dataset_dir(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    quiet: bool = False,
    verify: bool = False,
) -> Path:
    """The folder that holds dataset `name`, downloading and extracting its archive when files are missing.

    `data_dir` (or `$ADVREC_DATA_DIR`) may also point at the dataset folder itself. Extracted files are
    checked against the known sha256 (a mismatch raises `DataError`); `verify=True` also checks files
    already present. When the files are missing and cannot be downloaded, `DatasetNotFoundError` says
    which files to put in which folder.
    """
    info = get_dataset(name)
    root = data_home(data_dir)
    folder = root / info.folder
    for candidate in (folder, root):
        if not _missing(candidate, info):
            if verify:
                verify_files(candidate, info)
            return candidate
    if not info.url:
        raise _not_found(info, folder, "it has no download URL")
    if not download:
        raise _not_found(info, folder, "downloading is off (download=False)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{info.name}-", suffix=".zip", dir=root)
        os.close(fd)
    except OSError as e:
        raise _not_found(info, folder, f"cannot write to {root} ({e})") from e
    archive = Path(tmp_name)
    try:
        try:
            _download(info.url, archive, quiet=quiet)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise _not_found(info, folder, f"downloading {info.url} failed ({e})") from e
        _extract(archive, info, folder)
    finally:
        archive.unlink(missing_ok=True)
    return folder


def _progress(total: int, label: str, quiet: bool) -> tqdm:
    """A byte-counting tqdm bar on stderr; off when quiet or when stderr is not a terminal."""
    return tqdm(
        total=total or None,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=quiet or not sys.stderr.isatty(),
    )


def _download(url: str, dest: Path, quiet: bool = False) -> None:
    """Streams `url` to `dest` (through a temporary file in the same folder, then `os.replace`)."""
    log.info("downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            with _progress(total, f"downloading {url.rsplit('/', 1)[-1]}", quiet) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _archive_prefix(names: list[str], info: DatasetInfo, archive: Path) -> str:
    """The folder inside the archive that holds the dataset's files (tolerates a renamed top folder)."""
    prefix = f"{info.archive_folder.strip('/')}/" if info.archive_folder else ""
    if all(prefix + f in names for f in info.files):
        return prefix
    first = info.files[0]
    for n in names:
        if (n == first or n.endswith("/" + first)) and "__MACOSX" not in n:
            return n[: len(n) - len(first)]
    raise DataError(
        f"{archive}: the archive from {info.url} does not hold {', '.join(info.files)} "
        f"(expected them under {prefix or 'its root'})"
    )


def _extract(archive: Path, info: DatasetInfo, folder: Path) -> None:
    """Extracts the dataset's folder of `archive` into `folder`, checking every known sha256 first."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise DataError(f"the file downloaded from {info.url} is not a zip archive ({e})") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with zf, tempfile.TemporaryDirectory(prefix=f".{info.name}-", dir=folder.parent) as tmp:
        names = [m.filename for m in zf.infolist() if not m.is_dir()]
        prefix = _archive_prefix(names, info, archive)
        extracted: list[str] = []
        for member in zf.infolist():
            if member.is_dir() or not member.filename.startswith(prefix) or "__MACOSX" in member.filename:
                continue
            rel = PurePosixPath(member.filename[len(prefix) :])
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                log.warning("skipping unsafe archive member %r", member.filename)
                continue
            target = Path(tmp, *rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            expected = info.sha256.get(str(rel))
            if expected is not None and digest.hexdigest() != expected:
                raise DataError(
                    f"{rel} from {info.url}: sha256 {digest.hexdigest()} does not match the known checksum "
                    f"{expected}; the download is corrupt or the archive changed upstream (nothing was installed)"
                )
            extracted.append(str(rel))
        missing = [f for f in info.files if f not in extracted]
        if missing:
            raise DataError(f"the archive from {info.url} does not hold {', '.join(missing)}")
        for rel_name in extracted:
            dest = folder / rel_name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp, rel_name), dest)
    log.info("extracted %d files of %s into %s", len(extracted), info.name, folder)


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetStatus]:
    """Every known dataset and whether its files are present under the data home."""
    root = data_home(data_dir)
    out = []
    for info in DATASETS.values():
        folder = root / info.folder
        missing = _missing(folder, info)
        if missing and not _missing(root, info):
            folder, missing = root, []
        out.append(
            DatasetStatus(
                name=info.name,
                folder=folder,
                present=not missing,
                missing=tuple(missing),
                url=info.url,
                description=info.description,
            )
        )
    return out
