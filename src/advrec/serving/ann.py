"""Approximate top-k (faiss HNSW) for models whose score is the inner product of a user and an item vector.

Inner-product search is reduced to nearest-neighbour search (Bachrach et al., RecSys 2014): each item vector
v gets one more coordinate √(R² − ‖v‖²), R the largest item norm, and a query q gets 0, so that
‖q − v‖² = ‖q‖² + R² − 2⟨q, v⟩ and the nearest items are those of largest inner product. On BPR-MF factors of
ml-100k and ml-1m an L2 graph on these vectors found more of the exact top 10 than a graph built with faiss's
inner-product metric at the same M and efSearch (ml-100k, 32 factors, M=32, efSearch=16: 0.999 against 0.942;
at M=16 the inner-product graph stayed near 0.85 up to efSearch=128). Item norms that vary widely (BPR-MF with
hard negatives: 0.27-2.2 on ml-100k) crowd the low-norm items together in the extra coordinate; there M=48
finds 0.995 of each item's 10 most similar items at efSearch=64, M=32 0.908.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.models import BPRMF, IALS, IRGAN, Recommender

ANN_METHODS = ("none", "faiss")
DEFAULT_M = 48
DEFAULT_EF_SEARCH = 64
VECTOR_MODELS = "BPRMF, IALS, IRGAN"


@dataclass(frozen=True)
class AnnOptions:
    """How `ServedModel` finds the top items: `method` "none" (score every item) or "faiss" (HNSW graph).

    `m`: graph links per item (memory and build time grow with it); `ef_search`: candidates kept while
    searching (recall and latency grow with it; a search for w items keeps at least w); `ef_construction`:
    the same while building the graph.
    """

    method: str = "none"
    m: int = DEFAULT_M
    ef_search: int = DEFAULT_EF_SEARCH
    ef_construction: int = 80

    def __post_init__(self) -> None:
        if self.method not in ANN_METHODS:
            raise ConfigError(f"ann must be one of {', '.join(ANN_METHODS)}; got {self.method!r}")
        if not 2 <= self.m <= 256:
            raise ConfigError(f"ann M (graph links per item) must lie in 2..256, got {self.m}")
        for name in ("ef_search", "ef_construction"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise ConfigError(f"ann {name} must lie in 1..100000, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def describe(self) -> str:
        """`none`, or the index and its parameters, e.g. `faiss-hnsw(M=48,efSearch=64)`."""
        return f"faiss-hnsw(M={self.m},efSearch={self.ef_search})" if self.enabled else "none"


@dataclass
class Factors:
    """score(u, i) = ⟨user[u], item[i]⟩; the items like item i are those of largest ⟨query[i], item[j]⟩."""

    user: np.ndarray
    item: np.ndarray
    query: np.ndarray


def factors_of(model: Recommender, history: sp.csr_matrix, check_users: int = 8) -> Factors:
    """The user and item vectors behind `model`'s scores; `ConfigError` naming the model when it has none.

    The first `check_users` users' scores are recomputed from the vectors and must equal the model's.
    """
    name = type(model).__name__
    if isinstance(model, IRGAN):  # ⟨u, v_i⟩ + b_i = ⟨[u, 1], [v_i, b_i]⟩; similar items: ⟨[v_i, 0], [v_j, b_j]⟩
        gen = cast(Any, model.network_)["generator"]
        U = gen.user.weight.detach().cpu().numpy()
        V = gen.item.weight.detach().cpu().numpy()
        b = gen.bias.detach().cpu().numpy()
        user = np.hstack([U, np.ones((len(U), 1), U.dtype)])
        item = np.hstack([V, b[:, None]])
        query = np.hstack([V, np.zeros((len(V), 1), V.dtype)])
    elif isinstance(model, BPRMF | IALS):
        user, item = model.embeddings()
        query = item
    else:
        why = (
            "scores a user's whole history (uses_history), so it has no user vectors"
            if model.uses_history
            else "keeps no item vectors whose inner products give its scores"
        )
        raise ConfigError(
            f"{name} cannot be served with ann=faiss: approximate search needs a model whose score is the inner "
            f"product of a user vector and an item vector ({VECTOR_MODELS}), and {name} {why}; serve it with ann=none"
        )
    f = Factors(*(np.ascontiguousarray(a, dtype=np.float32) for a in (user, item, query)))
    users = np.arange(min(check_users, len(f.user), history.shape[0]))
    if users.size:
        expected = model.score(history, users)
        got = f.user[users] @ f.item.T
        tol = 1e-4 * max(1.0, float(np.abs(expected).max()))
        if not np.allclose(got, expected, rtol=1e-4, atol=tol):
            raise ConfigError(f"{name}: its scores are not the inner products of its user and item vectors")
    return f


def import_faiss() -> Any:
    """The faiss module, or `ConfigError` telling how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise ConfigError(
            f"approximate search (ann=faiss) needs the faiss package ({err}): pip install 'advrec[ann]'"
        ) from None
    return faiss


class HNSWIndex:
    """An HNSW graph over item vectors answering maximum-inner-product queries (see the module docstring)."""

    def __init__(self, items: np.ndarray, options: AnnOptions) -> None:
        faiss = import_faiss()
        items = np.asarray(items, dtype=np.float32)
        norms = np.einsum("ij,ij->i", items, items, dtype=np.float64)
        extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
        data = np.ascontiguousarray(np.hstack([items, extra[:, None].astype(np.float32)]))
        self.dim = items.shape[1]
        self.index = faiss.IndexHNSWFlat(self.dim + 1, options.m)
        self.index.hnsw.efConstruction = options.ef_construction
        self.index.hnsw.efSearch = options.ef_search
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # a parallel build links items in a racy order: one thread, one graph
        try:
            self.index.add(data)
        finally:
            faiss.omp_set_num_threads(threads)

    def search(self, queries: np.ndarray, width: int) -> np.ndarray:
        """The `width` items of largest inner product with each query, best first (-1 where none was found)."""
        q = np.zeros((len(queries), self.dim + 1), dtype=np.float32)
        q[:, : self.dim] = queries
        _, labels = self.index.search(q, width)
        return np.asarray(labels, dtype=np.int64)


def seen_mask(seen: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """Whether labels[r, j] is a stored column of row r of `seen` (rows with sorted indices)."""
    if not seen.has_sorted_indices:
        seen = seen.sorted_indices()
    n_cols = seen.shape[1]
    counts = np.diff(seen.indptr)
    keys = np.repeat(np.arange(seen.shape[0], dtype=np.int64), counts) * n_cols + seen.indices
    if keys.size == 0:
        return np.zeros(labels.shape, dtype=bool)
    q = np.arange(len(labels), dtype=np.int64)[:, None] * n_cols + np.maximum(labels, 0)
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q


def first_kept(labels: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k kept labels of each row (in search order) and whether the row had k to keep."""
    enough = keep.sum(axis=1) >= k
    pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(labels, pos, axis=1), enough


def rank(items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row reordered by descending score, ties to the lower item index (as `top_k` orders)."""
    order = np.lexsort((items, -scores), axis=1)
    return np.take_along_axis(items, order, axis=1), np.take_along_axis(scores, order, axis=1)
