"""Model files and atomic writes."""

import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ModelFileError
from advrec.io import atomic_write, atomic_write_text, read_model, write_model


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
