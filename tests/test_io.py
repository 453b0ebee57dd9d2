"""Model files and atomic writes."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ModelFileError
from advrec.io import atomic_write, atomic_write_text, join_state, read_model, split_state, write_model


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_state_round_trip_with_sparse_and_scalars(tmp_path):
    W = sp.random(5, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    state = {"weights_": np.arange(6, dtype=np.float32).reshape(2, 3), "sim_": W, "n_items_": 4, "log_": [{"a": 1.5}]}
    write_model(tmp_path / "m", {"class": "X", "params": {"k": 3}}, state)
    header, back = read_model(tmp_path / "m")
    assert header["class"] == "X" and header["params"] == {"k": 3}
    np.testing.assert_array_equal(back["weights_"], state["weights_"])
    assert (back["sim_"] != W).nnz == 0 and back["sim_"].shape == (5, 4)
    assert back["n_items_"] == 4 and back["log_"] == [{"a": 1.5}]


def test_read_model_errors(tmp_path):
    with pytest.raises(ModelFileError, match=r"params\.json"):
        read_model(tmp_path)
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_model(tmp_path)


def _sparse_state() -> tuple[dict[str, np.ndarray], dict]:
    W = sp.random(5, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    arrays, scalars = split_state({"sim_": W, "n_items_": 4})
    return arrays, scalars


def test_join_state_checks_sparse_parts_and_names_the_file():
    arrays, scalars = _sparse_state()
    arrays["sim_.indices"][0] = 4
    with pytest.raises(ModelFileError, match=r"^f\.st: array 'sim_\.indices' has index 4 outside 0\.\.3"):
        join_state(arrays, scalars, "f.st")
    arrays, scalars = _sparse_state()
    del arrays["sim_.indptr"]
    with pytest.raises(ModelFileError, match=r"array 'sim_\.indptr' is missing \(part of the sparse array 'sim_'\)"):
        join_state(arrays, scalars, "f.st")
    arrays, scalars = _sparse_state()
    scalars["sim_"]["shape"] = [5, -4]
    with pytest.raises(ModelFileError, match="shape \\[5, -4\\], expected two non-negative ints"):
        join_state(arrays, scalars, "f.st")


def test_join_state_refuses_non_finite_dense_arrays():
    with pytest.raises(ModelFileError, match=r"array 'w_' has inf at \[1\]"):
        join_state({"w_": np.array([0.0, np.inf], np.float32)}, {}, "f.st")
    assert join_state({"i_": np.array([-1, 7])}, {}, "f.st")["i_"].tolist() == [-1, 7]  # ints are not checked


def test_read_model_refuses_a_corrupt_arrays_file(tmp_path):
    write_model(tmp_path / "m", {"class": "X"}, {"w_": np.ones(3, np.float32)})
    (tmp_path / "m" / "arrays.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ModelFileError, match=r"arrays\.safetensors cannot be read as safetensors"):
        read_model(tmp_path / "m")
