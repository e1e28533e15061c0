"""The generic trainer: deterministic, early-stopping on validation, exactly resumable."""

import json

import pytest
import torch

from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.models import build
from nextclick.training.loop import TrainOptions, train_model

SMALL = dict(embedding_dim=16, max_positions=32)


def split():
    return generate(SyntheticConfig(n_items=60, n_categories=4, n_sessions=200)).split


def fresh(split):
    torch.manual_seed(0)
    return build("dsan", split.n_items, SMALL)


def test_interrupted_and_resumed_training_ends_with_the_same_weights(tmp_path):
    s = split()
    fit, valid = s.carve_validation()
    options = dict(patience=10, progress=False, quiet=True, batch_size=64, max_batches=4)  # 4 of 15 batches: seconds

    straight = fresh(s)
    train_model(straight, fit, valid, TrainOptions(epochs=3, checkpoint_dir=str(tmp_path / "a"), **options))

    interrupted = fresh(s)
    train_model(interrupted, fit, valid, TrainOptions(epochs=1, checkpoint_dir=str(tmp_path / "b"), **options))
    resumed = fresh(s)  # a new process: only the checkpoint directory carries over
    result = train_model(resumed, fit, valid, TrainOptions(epochs=3, checkpoint_dir=str(tmp_path / "b"), resume=True, **options))

    assert result.epochs_run == 3
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    a = [json.loads(l) for l in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "b" / "train.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_early_stopping_keeps_the_best_validation_epoch(tmp_path, tiny_model):
    s = split()
    fit, valid = s.carve_validation()
    torch.manual_seed(0)
    model = tiny_model(s.n_items, tiny_model.Config(lr=0.05))
    result = train_model(model, fit, valid, TrainOptions(epochs=6, patience=1, progress=False, quiet=True, batch_size=64,
                                                          checkpoint_dir=str(tmp_path)))
    values = [h["valid"]["HR@20"] for h in result.history]
    assert result.best_epoch == max(range(len(values)), key=lambda i: (values[i], -i))
    assert result.best_valid["HR@20"] == max(values)
    assert len(values) == 6 or values.index(max(values)) == len(values) - 2  # stopped after 1 bad epoch


def test_history_records_the_learning_rate_each_epoch_trained_with():
    s = split()
    fit, valid = s.carve_validation()
    torch.manual_seed(0)
    model = build("sr-iem", s.n_items, dict(embedding_size=16, attention_size=8, lr_decay_every=2, lr_decay=0.1))
    result = train_model(model, fit, valid, TrainOptions(epochs=3, patience=10, progress=False, quiet=True,
                                                          batch_size=64, max_batches=2))
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4])


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    from nextclick.checkpoint import CheckpointError

    s = split()
    fit, valid = s.carve_validation()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_model(fresh(s), fit, valid, TrainOptions(epochs=1, checkpoint_dir=str(tmp_path), resume=True, quiet=True))


def test_training_is_deterministic_for_a_seed(tiny_model):
    s = split()
    fit, valid = s.carve_validation()
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_model(s.n_items, tiny_model.Config(dropout=0.5))
        result = train_model(model, fit, None, TrainOptions(epochs=1, progress=False, quiet=True, batch_size=64))
        losses.append(result.history[0]["loss"])
    assert losses[0] == losses[1]
