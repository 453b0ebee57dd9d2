"""A node's partition file: what it holds, and how a crafted or foreign file is refused."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from advrec.data import Interactions
from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, DataError
from advrec.federated.app import dealt, node_data, settings_of, write_partitions
from advrec.federated.partitions import NodeData, read_partition, write_partition


def _split():
    m = sp.random(40, 30, density=0.3, random_state=1, format="coo", dtype=np.float32)
    rating = np.random.default_rng(0).integers(1, 6, m.nnz)
    df = pd.DataFrame({"user": m.row, "item": m.col, "rating": rating})
    return ratio_split(Interactions.from_frame(df, rating="rating"), random_state=0)


class _Context:
    def __init__(self, node_config: dict) -> None:
        self.node_config = node_config


def test_a_node_evaluates_its_rows_as_the_split_does():
    split = _split()
    users = np.array([1, 5, 7, 20])
    data = NodeData.of_split(split, users)
    for part in ("valid", "test"):
        mine, whole = data.eval_set(part), split.eval_set(part)
        keep = np.isin(whole.users, users)
        np.testing.assert_array_equal(users[mine.users], whole.users[keep])
        for name in ("history", "target", "exclude"):
            assert (getattr(mine, name) != getattr(whole, name)[users]).nnz == 0, (part, name)


def test_partition_files_round_trip_and_refuse_crafted_ones(tmp_path):
    split = _split()
    data = NodeData.of_split(split, np.array([0, 3, 9]))
    header = {"partition-id": 1, "num-partitions": 4, "n-items": 30, "n-users": 40}
    path = write_partition(tmp_path / "p.safetensors", data, header)
    got, got_header = read_partition(path)
    assert got_header == header
    for part in ("train", "valid", "test"):
        assert (getattr(got, part) != getattr(data, part)).nnz == 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]  # nothing half-written beside it

    arrays = load_file(str(path))
    bad = dict(arrays, **{"valid.indices": np.full_like(arrays["valid.indices"], 30)})
    meta = {"header": '{"partition-id": 1, "num-partitions": 4, "n-items": 30, "n-users": 40}'}
    save_file(bad, str(tmp_path / "items.safetensors"), metadata=meta)
    with pytest.raises(DataError, match="outside the catalogue of 30"):
        read_partition(tmp_path / "items.safetensors")
    save_file(arrays, str(tmp_path / "head.safetensors"), metadata={"header": '{"partition-id": "1"}'})
    with pytest.raises(DataError, match="must give integers"):
        read_partition(tmp_path / "head.safetensors")
    del arrays["test.data"]
    save_file(arrays, str(tmp_path / "miss.safetensors"), metadata=meta)
    with pytest.raises(DataError, match=r"'test\.data' is missing"):
        read_partition(tmp_path / "miss.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="not a partition file"):
        read_partition(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="does not exist"):
        read_partition(tmp_path / "none.safetensors")


@pytest.mark.integration
def test_a_deployed_node_reads_only_its_file(data_dir, tmp_path):
    config = {"data-dir": str(data_dir)}
    files = write_partitions(config, 3, tmp_path)
    s = settings_of({"dataset": "none", "data-dir": str(tmp_path / "nowhere")})  # nothing to load
    data = node_data(s, _Context({"partition-id": 2, "num-partitions": 3, "data-file": str(files[2])}))
    from advrec.federated.app import federation_data

    split, order = federation_data(settings_of(config))
    users = dealt(order, 2, 3)
    assert (data.train != split.train.matrix[users]).nnz == 0 and data.test.shape == (len(users), split.n_items)
    with pytest.raises(ConfigError, match="holds partition-id 2, but this node was started with 1"):
        node_data(s, _Context({"partition-id": 1, "num-partitions": 3, "data-file": str(files[2])}))
    with pytest.raises(ConfigError, match="items; the run's catalogue has 5"):
        node_data(settings_of({"n-items": 5, "n-users": 9}), _Context({"partition-id": 2, "data-file": str(files[2])}))
