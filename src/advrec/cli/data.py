"""Datasets: list them, split one, encode item texts, fine-tune the text encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from advrec.cli import PROTOCOL_HELP, DataDir, command, console, experiment_config


@command()
def datasets(
    data_dir: DataDir = None, counts: bool = typer.Option(True, help="load present datasets to count")
) -> None:
    """Known datasets: where their files are, whether they are present, and their counts."""
    from advrec.data.datasets import LOADERS, OFFICIAL_SPLITS, load_dataset
    from advrec.data.registry import data_home_source, list_datasets

    home, source = data_home_source(data_dir)
    console.print(f"data home: {home} (from {source})")
    table = Table("dataset", "present", "users", "items", "interactions", "folder")
    for st in list_datasets(data_dir):
        n = ("", "", "")
        if st.present and counts and st.name in LOADERS:
            X = load_dataset(st.name, data_dir=data_dir)
            parts = X.meta.get("official_parts") if st.name in OFFICIAL_SPLITS else None
            split = f" ({' + '.join(f'{v:,} {k}' for k, v in parts.items())})" if parts else ""
            n = (f"{X.n_users:,}", f"{X.n_items:,}", f"{X.nnz:,}{split}")
        present = "yes" if st.present else f"no (missing {', '.join(st.missing)})"
        table.add_row(st.name, present, *n, str(st.folder))
    console.print(table)


@command("encode-items")
def encode_items(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    model: Annotated[str | None, typer.Option(help="sentence-transformers model (default all-MiniLM-L6-v2)")] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="comma-separated item columns (default: the item table's text column, else title/year/…)"),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Encodes a dataset's item texts into the embedding cache (a second run reads them back)."""
    import time

    from advrec.data.datasets import load_dataset
    from advrec.text import SentenceEncoder, item_texts

    X = load_dataset(dataset, data_dir=data_dir)
    texts = item_texts(X, columns.split(",") if columns else None)
    enc = SentenceEncoder(model, progress=True)
    t0 = time.perf_counter()
    vectors = enc.encode(texts)
    secs = time.perf_counter() - t0
    console.print(f"{len(texts):,} items → {vectors.shape[1]}-d vectors in {secs:.1f}s; e.g. {texts[0]!r}")


@command("finetune-encoder")
def finetune_encoder(
    dataset: Annotated[str, typer.Option(help="dataset name (its items need text and its interactions times)")],
    protocol: Annotated[
        str | None,
        typer.Option(
            help="split whose training part gives the pairs: ratio | temporal | cold_items | … (default ratio)"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the split, the pair sample and training")] = None,
    out: Annotated[Path | None, typer.Option(help="model folder (default: the cache, named by a digest)")] = None,
    base: Annotated[
        str | None, typer.Option(help="local sentence-transformers folder (default all-MiniLM-L6-v2)")
    ] = None,
    epochs: int = 1,
    max_pairs: Annotated[int, typer.Option(help="at most this many item pairs (a seeded sample)")] = 20000,
    batch_size: Annotated[int, typer.Option(help="pairs per batch (the others are each pair's negatives)")] = 32,
    lr: float = 2e-5,
    window: Annotated[int, typer.Option(help="pairs of items at most this many steps apart in a history")] = 1,
    columns: Annotated[str | None, typer.Option(help="comma-separated item columns (default as encode-items)")] = None,
    min_rating: float | None = None,
    core: int | None = None,
    data_dir: DataDir = None,
) -> None:
    """Fine-tunes the sentence encoder on pairs of items that follow each other in the training part's histories;
    prints the model folder, which `encode-items --model`, `--set model=` (TextKNN) and `--set encoder=` (UniSRec)
    take. The same inputs a second time return the cached folder without training."""
    import time

    from advrec.experiment import load_data, make_split
    from advrec.text.finetune import MANIFEST
    from advrec.text.finetune import finetune_encoder as finetune

    cfg = experiment_config("Pop", dataset, data_dir, protocol, seed, min_rating, core, None, None)
    s = make_split(load_data(cfg), cfg)
    t0 = time.perf_counter()
    folder = finetune(
        s.train, out=out, base=base, columns=columns.split(",") if columns else None, epochs=epochs,
        batch_size=batch_size, lr=lr, max_pairs=max_pairs, window=window, random_state=cfg.seed,
    )  # fmt: skip
    info = json.loads((folder / MANIFEST).read_text())
    console.print(
        f"{info['pairs']:,} pairs of {info['items']:,} items from the {cfg.protocol} training part (seed {cfg.seed}); "
        f"trained in {info['train_seconds']:.1f}s (mean loss {info['loss_first_epoch']:.3f} in the first epoch, "
        f"{info['loss_last_epoch']:.3f} in the last); this call {time.perf_counter() - t0:.1f}s"
    )
    console.print(f"model: {folder}", soft_wrap=True)


@command()
def split(
    dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
    out: Annotated[Path, typer.Option(help="folder to write the split to")] = Path("splits/split"),
    protocol: Annotated[
        str,
        typer.Option(help=PROTOCOL_HELP),
    ] = "ratio",
    seed: int = 2020,
    min_rating: Annotated[float | None, typer.Option(help="keep ratings ≥ this, as implicit feedback")] = 3.0,
    core: Annotated[int | None, typer.Option(help="iterative k-core on users and items")] = None,
    data_dir: DataDir = None,
) -> None:
    """Splits a dataset under a protocol and writes it as Parquet, for advrec or other libraries."""
    from advrec.experiment import load_data, make_split

    cfg = experiment_config("Pop", dataset, data_dir, protocol, seed, min_rating, core, None, None)
    s = make_split(load_data(cfg), cfg)
    s.save(out)
    console.print(f"{s} → {out}")
