"""Which nodes take part in a round: all of them once `min-nodes` are connected, or a seeded share of the
partitions (`fraction-train` < 1), the same partitions for the same seed and round on any run.

Flower's strategies size their sample from the nodes connected *before* they wait for `min_available_nodes`
(a round may begin with one node of three), and draw it with Python's unseeded `random` over node ids that are
themselves random. Here the wait comes first, and the draw is over the nodes' partition ids (each node's public
label in the federation, asked once with a query message) from a generator seeded by the run's seed and round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

PARTITION_KEY = "partition-id"


class Among:
    """A view of `grid` whose connected nodes are `nodes`: what a Flower strategy samples from."""

    def __init__(self, grid: Grid, nodes: list[int]) -> None:
        self._grid, self._nodes = grid, nodes

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def partition_reply(msg: Message, partition: int) -> Message:
    """A node's answer to the server's query: its partition id."""
    return Message(content=RecordDict({"node": MetricRecord({PARTITION_KEY: partition})}), reply_to=msg)


class NodeSampler:
    """The nodes of each round, drawn from a generator seeded by (`seed`, round)."""

    def __init__(self, seed: int, fraction: float, min_nodes: int, timeout: float) -> None:
        self.seed, self.fraction, self.min_nodes, self.timeout = seed, fraction, min_nodes, timeout
        self.partitions: dict[int, int] = {}  # node id -> partition id

    def connected(self, grid: Grid) -> list[int]:
        """The connected nodes, once at least `min_nodes` are."""
        while len(nodes := sorted(grid.get_node_ids())) < self.min_nodes:
            log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).", len(nodes), self.min_nodes)
            time.sleep(1)
        return nodes

    def sample(self, grid: Grid, server_round: int) -> list[int]:
        """`fraction` of the connected nodes (at least one), chosen by partition id."""
        nodes = self.connected(grid)
        k = max(1, int(len(nodes) * self.fraction))
        if k >= len(nodes):
            return nodes
        self._learn_partitions(grid, [n for n in nodes if n not in self.partitions])
        known = sorted((self.partitions[n], n) for n in nodes if n in self.partitions)
        rng = np.random.default_rng([self.seed, 11, server_round])
        chosen = rng.choice(len(known), size=min(k, len(known)), replace=False)
        return sorted(known[i][1] for i in chosen)

    def _learn_partitions(self, grid: Grid, nodes: Iterable[int]) -> None:
        queries = [Message(content=RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
        if not queries:
            return
        for reply in grid.send_and_receive(queries, timeout=self.timeout):
            if reply.has_content() and "node" in reply.content.metric_records:
                value = reply.content.metric_records["node"][PARTITION_KEY]
                self.partitions[reply.metadata.src_node_id] = int(value)  # type: ignore[arg-type]
