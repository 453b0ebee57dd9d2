"""The one training loop of the torch models: the validation metric as a parameter, the plug-in hook points in
their order, typed records, and checkpoints (a fit resumed from its checkpoint ends where the whole fit ends)."""

from __future__ import annotations

import numpy as np
import pytest

from advrec.data.splits import ratio_split
from advrec.errors import ConfigError, ModelFileError
from advrec.models import BPRMF, MultVAE, Recommender
from advrec.models.records import PrivacyRecord
from advrec.models.torch_base import TrainingPlugin
from advrec.testing import two_communities


@pytest.fixture(scope="module")
def split():  # type: ignore[no-untyped-def]
    return ratio_split(two_communities(60, 30, density=0.4, random_state=1), (0.8, 0.1, 0.1), random_state=2)


def test_the_validation_metric_is_a_parameter(split) -> None:  # type: ignore[no-untyped-def]
    model = MultVAE(hidden=16, latent=4, epochs=3, batch_size=16, valid_metric="recall@20", device="cpu")
    model.fit(split.train, valid=split)
    values = [row["valid_recall@20"] for row in model.training_log_]
    assert "valid_ndcg@10" not in model.training_log_[0] and model.best_valid_ == max(values)
    for bad in ("ndcg", "auc@10", "ndcg@0", "recall@x"):
        with pytest.raises(ConfigError, match="valid_metric"):
            MultVAE(epochs=1, valid_metric=bad, device="cpu").fit(split.train)


def test_plugins_are_called_at_their_hook_points_in_order(split) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    class Spy(TrainingPlugin):
        def setup(self, model, X):  # type: ignore[no-untyped-def]
            calls.append("setup")

        def make_optimizer(self, model, phase, default):  # type: ignore[no-untyped-def]
            calls.append(f"optimizer:{phase.name}")
            return default()

        def batches(self, model, phase, batches, rng):  # type: ignore[no-untyped-def]
            calls.append("batches")
            return batches

        def reduce(self, model, per_example):  # type: ignore[no-untyped-def]
            calls.append("reduce")
            return per_example.sum() / len(per_example)

        def loss(self, model, batch, loss):  # type: ignore[no-untyped-def]
            calls.append("loss")
            return loss

        def teardown(self, model):  # type: ignore[no-untyped-def]
            calls.append("teardown")

        def record(self, model):  # type: ignore[no-untyped-def]
            calls.append("record")

    MultVAE(hidden=16, latent=4, epochs=1, batch_size=1000, device="cpu").fit(split.train, plugins=[Spy()])
    assert calls == ["setup", "optimizer:train", "batches", "reduce", "loss", "teardown", "record"]


def test_the_privacy_record_is_saved_and_loaded(tmp_path, split) -> None:  # type: ignore[no-untyped-def]
    model = BPRMF(factors=4, epochs=1, device="cpu").fit(split.train)
    model.privacy_ = PrivacyRecord(epsilon=2.0, delta=1e-5, mechanism="test", accountant="rdp", noise_multiplier=1.1,
                                   steps=10)  # fmt: skip
    back = Recommender.load(model.save(tmp_path / "m"))
    assert back.privacy_ == model.privacy_ and isinstance(back.privacy_, PrivacyRecord)
    with pytest.raises(ModelFileError, match="not a field"):
        PrivacyRecord.from_dict({**model.privacy_.as_dict(), "epsilon_typo": 1.0})


class Interrupted(Exception):
    pass


class Stoppable(BPRMF, register=False):
    """BPRMF that stops with an error after epoch `stop_after` (as a killed process would, its checkpoint kept)."""

    stop_after: int | None = None

    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        if epoch == self.stop_after:
            raise Interrupted


Stoppable.__name__ = "BPRMF"  # the checkpoint is of a BPRMF fit


def test_a_resumed_fit_ends_where_the_whole_fit_ends(tmp_path, split) -> None:  # type: ignore[no-untyped-def]
    def make() -> Stoppable:
        return Stoppable(factors=8, epochs=4, batch_size=64, eval_every=1, patience=10, device="cpu", random_state=3)

    whole = BPRMF(**make().get_params()).fit(split.train, valid=split)
    stopped = make()
    stopped.stop_after = 3
    with pytest.raises(Interrupted):
        stopped.fit(split.train, valid=split, checkpoint=tmp_path / "ck")  # the checkpoint holds epoch 2
    resumed = make().fit(split.train, valid=split, checkpoint=tmp_path / "ck")
    assert [r["epoch"] for r in resumed.training_log_] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.training_log_] == [r["loss"] for r in whole.training_log_]
    for a, b in zip(resumed.embeddings(), whole.embeddings(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = make()
    other.factors = 4
    with pytest.raises(ConfigError, match="belongs to another fit"):
        other.fit(split.train, valid=split, checkpoint=tmp_path / "ck")
    with pytest.raises(ConfigError, match="cannot be checkpointed"):
        make().fit(split.train, checkpoint=tmp_path / "ck3", plugins=[TrainingPlugin()])


def test_a_fit_starts_from_given_weights(split) -> None:  # type: ignore[no-untyped-def]
    """`init` as a state dict (a federated round's start): a fit of zero learning rate keeps those weights; weights
    of another shape are refused, naming the model."""
    import torch

    from advrec.errors import DataError

    first = MultVAE(hidden=16, latent=4, epochs=2, batch_size=16, device="cpu").fit(split.train)
    state = {k: v.clone() for k, v in first.network_.state_dict().items()}
    again = MultVAE(hidden=16, latent=4, epochs=1, batch_size=16, lr=1e-12, device="cpu", random_state=7)
    again.fit(split.train, init=state)
    for k, v in again.network_.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="does not fit MultVAE's network"):
        MultVAE(hidden=8, latent=4, epochs=1, device="cpu").fit(split.train, init=state)


def test_held_out_interactions_validate_as_the_split_does(split) -> None:  # type: ignore[no-untyped-def]
    """`valid=` a sparse matrix of held-out interactions (ranked from the training matrix, its items excluded)
    validates as the Split's validation part does; a matrix of another shape is refused."""
    from advrec.errors import DataError

    def fit(valid):  # type: ignore[no-untyped-def]
        return MultVAE(hidden=16, latent=4, epochs=3, batch_size=16, device="cpu").fit(split.train, valid=valid)

    by_split, by_matrix = fit(split), fit(split.valid.matrix)
    assert by_matrix.best_valid_ == by_split.best_valid_ and by_matrix.best_epoch_ == by_split.best_epoch_
    assert fit(split.valid).best_valid_ == by_split.best_valid_  # Interactions too
    with pytest.raises(DataError, match="training shape"):
        fit(split.valid.matrix[:5])
