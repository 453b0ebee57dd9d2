"""Contrastive fine-tuning of the sentence encoder on interaction data: items that follow each other in users'
histories are pulled together (in the spirit of BLaIR, Hou et al. 2024, which aligns item text with behaviour).

For a batch of B (anchor, positive) item pairs with text vectors a_k, p_k, the loss is sentence-transformers'
MultipleNegativesRankingLoss (InfoNCE with in-batch negatives),

    L = −(1/B) Σ_k log( exp(s·cos(a_k, p_k)) / Σ_j exp(s·cos(a_k, p_j)) ),   s = `scale` = 1/temperature,

plus, with `symmetric=True`, the same term from each positive back to the anchors (averaged with it).
Batches never hold an item twice, so no in-batch negative is the anchor's own item.

The tuned model is a sentence-transformers folder (safetensors weights) that `SentenceEncoder`, `TextKNN(model=)`
and `UniSRec(encoder=)` take; its vectors are cached under their own identity (the sha256 of its weights).
By default it is kept under the advrec cache home in a folder named by a digest of the base model's identity, the
pairs' texts and the settings, so the same call a second time returns it without training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advrec.data.interactions import Interactions
from advrec.data.sequences import time_order
from advrec.errors import ConfigError, DataError
from advrec.text.encoder import SentenceEncoder, _text_keys, cache_home, default_model_path, resolve_precision
from advrec.text.item_text import item_texts

log = logging.getLogger(__name__)

MANIFEST = "advrec_finetune.json"


def cooccurrence_pairs(
    X: Interactions,
    max_pairs: int | None = None,
    random_state: int | np.random.Generator | None = 0,
    window: int = 1,
) -> np.ndarray:
    """(n, 2) int64 pairs (i, j), i < j, of distinct items that lie at most `window` steps apart in some user's
    history ordered by (time, item index), each pair once however often (and in whichever order) it occurs; with
    more than `max_pairs` of them, a seeded random sample of `max_pairs`. Rows are sorted."""
    if not isinstance(X, Interactions) or X.timestamps is None:
        raise DataError("co-occurrence pairs need Interactions with timestamps (the order of each history)")
    if not isinstance(window, int | np.integer) or window < 1:
        raise ConfigError(f"window must be a positive integer, got {window!r}")
    if max_pairs is not None and max_pairs < 1:
        raise ConfigError(f"max_pairs must be at least 1 (or None for all pairs), got {max_pairs}")
    m = X.matrix
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = time_order(m, X.timestamps)  # each user's entries by (time, item), users one after the other
    users, items = rows[order], m.indices[order].astype(np.int64)
    found = []
    for step in range(1, int(window) + 1):
        same = users[step:] == users[:-step]
        found.append(np.column_stack([items[:-step][same], items[step:][same]]))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = np.random.default_rng(random_state)
        pairs = pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


def distinct_item_batches(pairs: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The pairs' row indices in a seeded random order, cut into batches of `batch_size` in which no item occurs
    twice (a pair whose item is already in the batch waits for a later one). The last batches may be smaller."""
    batches: list[np.ndarray] = []
    pending = rng.permutation(len(pairs))
    while len(pending):
        batch: list[int] = []
        seen: set[int] = set()
        waiting: list[int] = []
        for row in pending:
            a, b = int(pairs[row, 0]), int(pairs[row, 1])
            if len(batch) < batch_size and a not in seen and b not in seen:
                batch.append(int(row))
                seen.update((a, b))
            else:
                waiting.append(int(row))
        batches.append(np.array(batch, dtype=np.int64))
        pending = np.array(waiting, dtype=np.int64)
    return batches


def _digest(base_identity: str, pair_keys: np.ndarray, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"base": base_identity, "settings": settings}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(pair_keys).tobytes())
    return h.hexdigest()


def _finished(folder: Path, digest: str) -> bool:
    """Whether `folder` holds a fine-tuned model made from the inputs that `digest` names."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("digest") == digest
    except (OSError, ValueError):
        return False


def finetune_encoder(
    X: Interactions,
    out: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    columns: Sequence[str] | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    max_pairs: int | None = 20000,
    window: int = 1,
    scale: float = 20.0,
    symmetric: bool = False,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_length: int | None = 128,
    device: str = "cpu",
    precision: str = "auto",
    random_state: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Fine-tunes the sentence encoder `base` (None: the offline all-MiniLM-L6-v2) on the item texts of
    `cooccurrence_pairs(X, max_pairs, random_state, window)` and returns the folder of the tuned model.

    Pairs come only from `X`: pass the training part of a split, so held-out interactions never reach the model.
    Training: MultipleNegativesRankingLoss (`scale` = 1/temperature, `symmetric` adds the positive → anchor
    term), AdamW (`lr`, `weight_decay` on all but biases and LayerNorm), linear warm-up over the first `warmup`
    share of the steps then linear decay to 0, gradient norm clipped at 1, texts cut at `max_length` tokens (None:
    the model's own limit), `epochs` passes over the pairs in seeded batches without a repeated item. Dropout and
    order follow `random_state`; the same inputs give the same weights on the same machine. `precision`: the
    weights stay float32; "bfloat16" computes under bfloat16 autocast (about 2x faster on a CPU with native
    bfloat16), "auto" does so where the hardware has it (`encoder.resolve_precision`; float16 is not used).

    `out`: where the model goes (refused if it holds something else); None: `<cache home>/finetuned/<digest>`,
    read back without training when the same inputs come again. Written to a temporary folder, then renamed.
    """
    if not isinstance(X, Interactions):
        raise DataError("fine-tuning needs Interactions with item text and timestamps, not a bare matrix")
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 2)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if not lr > 0 or not scale > 0 or not 0 <= warmup < 1 or weight_decay < 0:
        raise ConfigError(f"need lr > 0, scale > 0, 0 ≤ warmup < 1, weight_decay ≥ 0; got {lr}, {scale}, "
                          f"{warmup}, {weight_decay}")  # fmt: skip
    if max_length is not None and max_length < 2:
        raise ConfigError(f"max_length must be at least 2 tokens (or None), got {max_length}")
    from advrec.devices import resolve_device

    compute = resolve_precision(precision, resolve_device(device))
    compute = "bfloat16" if compute == "float16" else compute  # float16 would need loss scaling
    texts = item_texts(X, columns)
    pairs = cooccurrence_pairs(X, max_pairs, random_state, window)
    if len(pairs) == 0:
        raise DataError(
            "no two distinct items follow each other in any user's history, so there is nothing to fine-tune on"
        )
    source = Path(default_model_path()) if base is None else Path(base)
    base_identity = SentenceEncoder(source, device="cpu", precision="float32").identity
    keys = _text_keys(texts)[pairs]  # (n, 2, 16): the pairs named by their texts
    settings = dict(
        epochs=int(epochs), batch_size=int(batch_size), lr=lr, window=int(window), scale=scale, symmetric=symmetric,
        warmup=warmup, weight_decay=weight_decay, max_length=max_length, precision=compute,
        random_state=int(random_state),
    )  # fmt: skip
    digest = _digest(base_identity, keys, settings)
    target = Path(out) if out is not None else cache_home(cache_dir) / "finetuned" / digest[:24]
    if _finished(target, digest):
        log.info("fine-tuned encoder found at %s (same base, pairs and settings)", target)
        return target
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and holds something else; remove it or choose another folder")
    t0 = time.perf_counter()
    st, losses = _train(str(source), texts, pairs, settings, device, progress)
    manifest = {
        "digest": digest, "base": str(source), "base_identity": base_identity, "pairs": len(pairs),
        "items": len(np.unique(pairs)), "settings": settings, "loss_first_epoch": losses[0],
        "loss_last_epoch": losses[-1], "train_seconds": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    _save(st, target, manifest)
    log.info("fine-tuned encoder saved to %s", target)
    return target


def _load_base(source: str, device: Any) -> Any:
    """The base model as a float32 SentenceTransformer on `device`."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("fine-tuning needs sentence-transformers: pip install 'advrec[text]'") from None
    from transformers.utils import logging as hf_logging

    if Path(source).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()  # loading and saving are quick; their bars only clutter the output
    try:
        return SentenceTransformer(source, device=str(device)).float()
    except OSError as exc:
        raise ConfigError(f"cannot load base text model {source!r}: {exc}") from None


def _optimizer(st: Any, settings: dict[str, Any], total: int) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) and its schedule: linear warm-up, then linear decay to 0."""
    import torch

    no_decay = ("bias", "LayerNorm", "layer_norm", "norm.weight")
    named = list(st.named_parameters())
    decayed = [p for n, p in named if not any(k in n for k in no_decay)]
    plain = [p for n, p in named if any(k in n for k in no_decay)]
    groups = [{"params": decayed, "weight_decay": settings["weight_decay"]}, {"params": plain, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=settings["lr"])
    warm = max(1, math.ceil(settings["warmup"] * total))

    def factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train(
    source: str, texts: list[str], pairs: np.ndarray, settings: dict[str, Any], device: str, progress: bool | None
) -> tuple[Any, list[float]]:
    """Loads `source` and trains it on the pairs; returns the model (float32, eval mode) and each epoch's mean loss."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from advrec.devices import deterministic, resolve_device
    from advrec.progress import Steps, progress_wanted

    dev = resolve_device(device)
    rng = np.random.default_rng(settings["random_state"])
    epoch_batches = [distinct_item_batches(pairs, settings["batch_size"], rng) for _ in range(settings["epochs"])]
    steps = [(e, b) for e, batches in enumerate(epoch_batches) for b in batches]
    sums, counts = np.zeros(settings["epochs"]), np.zeros(settings["epochs"])
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), deterministic():
        torch.manual_seed(settings["random_state"])
        st = _load_base(source, dev)
        full_length = st.max_seq_length
        if settings["max_length"] is not None:
            st.max_seq_length = min(settings["max_length"], full_length or settings["max_length"])
        if settings["symmetric"]:
            loss_fn = MultipleNegativesRankingLoss(
                st, scale=settings["scale"], directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
            )
        else:
            loss_fn = MultipleNegativesRankingLoss(st, scale=settings["scale"])
        optimizer, schedule = _optimizer(st, settings, len(steps))
        st.train()
        bar = Steps(steps, "fine-tuning the text encoder", progress_wanted(progress), unit="batch")
        for epoch, rows in bar:
            features = []
            for column in (0, 1):
                f = st.preprocess([texts[i] for i in pairs[rows, column]])
                features.append({k: v.to(dev) if hasattr(v, "to") else v for k, v in f.items()})
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bfloat16"):
                loss = loss_fn(features, None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            sums[epoch] += loss.item() * len(rows)
            counts[epoch] += len(rows)
            bar.report({"epoch": epoch + 1, "loss": float(sums[epoch] / counts[epoch])})
        st.max_seq_length = full_length
        st.eval()
    return st, [float(v) for v in sums / np.maximum(counts, 1)]


def _save(st: Any, target: Path, manifest: dict[str, Any]) -> None:
    """Writes the model (safetensors) and its manifest into a temporary folder beside `target`, then renames it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private (0700); the model folder should be as any other
    try:
        st.save(str(tmp), create_model_card=False, safe_serialization=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.rename(tmp, target)
        except OSError:
            if not _finished(target, manifest["digest"]):  # not the same model written meanwhile by another call
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
