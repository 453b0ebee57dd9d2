"""MultVAE reads sparse rows: its first layer and loss on CSR rows equal the dense ones, nothing densified."""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from advrec.models import MultVAE
from advrec.models.mult_vae import sparse_nll
from advrec.models.torch_base import csr_to_sparse_torch, csr_to_torch
from advrec.testing import two_communities

ROWS = sp.csr_matrix(
    np.array([[1, 0, 2, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 3, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=np.float32)
)


def _model() -> MultVAE:
    return MultVAE(hidden=8, latent=3, epochs=2, batch_size=4, device="cpu", random_state=0).fit(two_communities())


def test_sparse_rows_encode_as_the_dense_rows() -> None:
    X = two_communities()
    net = _model().network_.eval()
    rows = sp.csr_matrix(X.matrix[[0, 5, 25, 39]])
    rows[1, 3] = 0.0  # an explicit zero stays a zero
    with torch.no_grad():
        dense = net.encode(csr_to_torch(rows, torch.device("cpu")))
        sparse = net.encode(csr_to_sparse_torch(rows, torch.device("cpu")))
    for d, s in zip(dense, sparse, strict=True):
        torch.testing.assert_close(s, d, rtol=1e-5, atol=1e-6)


def test_an_empty_row_encodes_like_a_zero_row() -> None:
    net = _model().network_.eval()
    empty = sp.csr_matrix((2, 20), dtype=np.float32)
    with torch.no_grad():
        mu_s, _ = net.encode(csr_to_sparse_torch(empty, torch.device("cpu")))
        mu_d, _ = net.encode(torch.zeros(2, 20))
    torch.testing.assert_close(mu_s, mu_d)


def test_sparse_nll_is_the_dense_multinomial_loss() -> None:
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x = csr_to_torch(ROWS, torch.device("cpu"))
    dense = -(F.log_softmax(logits, dim=1) * x).sum(1)
    sparse = sparse_nll(logits, csr_to_sparse_torch(ROWS, torch.device("cpu")))
    torch.testing.assert_close(sparse, dense)
    (g_dense,) = torch.autograd.grad(dense.sum(), logits)
    (g_sparse,) = torch.autograd.grad(sparse.sum(), logits)
    torch.testing.assert_close(g_sparse, g_dense)


def test_unsorted_csr_indices_are_sorted_before_torch_sees_them() -> None:
    m = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([4, 1]), np.array([0, 2])), shape=(1, 6))
    assert not m.has_sorted_indices
    t = csr_to_sparse_torch(m, torch.device("cpu"))
    assert t.col_indices().tolist() == [1, 4] and t.values().tolist() == [2.0, 1.0]
    assert t.to_dense().tolist() == [[0, 2, 0, 0, 1, 0]]
