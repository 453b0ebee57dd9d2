"""Federated training on Flower: item-side state on the server, users' rows and vectors on the clients.

Importing this package turns off, unless the environment already says otherwise, what Flower and Ray would report
about a run to their developers' servers (Flower's telemetry, Ray's usage statistics): set before Flower is first
imported, and inherited by the processes a simulation or a deployment started from here runs.
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
