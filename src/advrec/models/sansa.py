"""`SANSA` (Spišák et al., RecSys 2023): EASE with a sparse approximate inverse, for large catalogues.

EASE needs the inverse P = (XᵀX + l2·I)⁻¹ as a dense item×item matrix. SANSA factors the Gram matrix as
L·D·Lᵀ (sparse Cholesky after a fill-reducing ordering, exact with CHOLMOD or incomplete), keeps the
largest entries of L and of an approximate L⁻¹ (at most `density`·n² each), and writes P ≈ Wᵀ·D⁻¹·W with
W = L⁻¹ permuted back. Memory is set by `density`, not by n². The factorisation is done by the `sansa`
package (which needs SuiteSparse's CHOLMOD through scikit-sparse), imported only when a model is fitted.
"""

from __future__ import annotations

import gc
import importlib
import logging
from types import ModuleType
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions
from advrec.errors import ConfigError
from advrec.models.base import Learned, Recommender
from advrec.models.params import Interval, Options, declare

FACTORIZERS = ("cholmod", "icf")


def import_sansa() -> ModuleType:
    """The `sansa` package, or a `ConfigError` that says how to install it.

    `sansa` calls `logging.basicConfig(level=INFO)` when imported; the root logger is put back as it was
    and sansa's own loggers report errors only (its warnings advise on its own configuration classes).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        module = importlib.import_module("sansa")
    except ImportError as exc:
        raise ConfigError(
            f"SANSA needs the 'sansa' package, which failed to import ({exc}); install SuiteSparse "
            "(Debian: apt-get install libsuitesparse-dev) then pip install 'scikit-sparse<0.5' sansa==1.1.0"
        ) from None
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    logging.getLogger("sansa").setLevel(logging.ERROR)
    return module


class SANSA(Recommender):
    """Scalable EASE: scores = history · B with B = I − P·diag(1/diag(P)), P ≈ Wᵀ·D⁻¹·W sparse.

    `l2`: EASE's ridge. `density`: share of the n² entries kept in each sparse factor (at least 2/n; when it
    keeps every entry of the exact factors, the scores are EASE's up to round-off). `factorizer`: "cholmod"
    (exact sparse Cholesky, then pruned) or "icf" (incomplete Cholesky of the Gram matrix of X with columns
    rescaled by the fourth root of the Gram's squared column norms: less memory, a differently regularised
    model). `scans` / `finetune_steps`: iterations of the approximate inverse of the factor.

    Gowalla (40,981 items, benchmarks/gowalla.py): "icf" at density 0.005 fits in 4 to 7 minutes on one
    core with a 4.7 GB peak and keeps 134 MB; CHOLMOD's exact factor of the same Gram matrix passed 7 GiB.
    """

    _parameter_constraints = declare(
        l2=[Interval(float, 0, None, closed="neither")],
        density=[Interval(float, 0, 1, closed="right")],
        factorizer=[Options(FACTORIZERS)],
        scans=[Interval(int, 0, None, closed="left")],
        finetune_steps=[Interval(int, 0, None, closed="left")],
    )
    _required_state: ClassVar[dict[str, Learned]] = {
        "encoder_": Learned("sparse", ("items", "items")),
        "decoder_": Learned("sparse", ("items", "items")),
    }

    def __init__(
        self,
        l2: float = 100.0,
        density: float = 0.005,
        factorizer: str = "icf",
        scans: int = 3,
        finetune_steps: int = 10,
    ) -> None:
        self.l2 = l2
        self.density = density
        self.factorizer = factorizer
        self.scans = scans
        self.finetune_steps = finetune_steps

    def fit(self, X: Interactions | sp.spmatrix, valid: object = None) -> SANSA:
        m = self._check_fit_input(X)
        lib = import_sansa()
        factorizer = (
            lib.CHOLMODGramianFactorizerConfig() if self.factorizer == "cholmod" else lib.ICFGramianFactorizerConfig()
        )
        config = lib.SANSAConfig(
            l2=float(self.l2),
            weight_matrix_density=float(self.density),
            gramian_factorizer_config=factorizer,
            lower_triangle_inverter_config=lib.UMRUnitLowerTriangleInverterConfig(
                scans=int(self.scans), finetune_steps=int(self.finetune_steps)
            ),
        )
        gc.freeze()  # sansa calls gc.collect() often; leave the objects that exist now out of those scans
        try:
            encoder, decoder = lib.SANSA(config).fit(sp.csr_matrix(m, dtype=np.float32)).weights
        finally:
            gc.unfreeze()
        self._set_shape(m)
        self.encoder_ = sp.csr_matrix(encoder, dtype=np.float32)
        self.decoder_ = sp.csr_matrix(decoder, dtype=np.float32)
        return self

    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        col = (self.encoder_[items] @ self.decoder_[:, [target]]).toarray().ravel()
        return col + (items == target)

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        x = self._binary_rows(history, users)
        latent = (x @ self.encoder_).toarray()
        scores = np.asarray(latent @ self.decoder_, dtype=np.float32)
        scores[x.nonzero()] += 1.0  # the identity in B = I − P·diag(1/diag(P)): B's diagonal is zero
        return scores
