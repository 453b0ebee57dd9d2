"""Federated training on Flower: item-side state on the server, users' rows and vectors on the clients."""
