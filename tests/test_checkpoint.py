import json

import numpy as np
import pytest
import torch

from nextclick import checkpoint
from nextclick.data.batches import batch_from_prefixes
from nextclick.data.sessions import Vocab
from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.models import build


def test_checkpoint_round_trip_restores_identical_scores(tmp_path):
    split = generate(SyntheticConfig(n_items=50, n_sessions=100)).split
    for name, overrides in (("s-pop", {}), ("dsan", {"embedding_dim": 8})):
        torch.manual_seed(0)
        model = build(name, split.n_items, overrides)
        if not model.neural:
            model.fit(split.train_cases())
        checkpoint.save(tmp_path / name, model, split.vocab, split.protocol, split.name)
        loaded, vocab, meta = checkpoint.load(tmp_path / name)
        batch = batch_from_prefixes([np.array([1, 2, 3]), np.array([7])])
        assert torch.equal(model.score(batch), loaded.score(batch))
        assert meta["model"] == name and vocab.n_items == split.n_items


def test_checkpoints_contain_no_pickle(tmp_path):
    split = generate(SyntheticConfig(n_items=50, n_sessions=100)).split
    model = build("pop", split.n_items).fit(split.train_cases())
    checkpoint.save(tmp_path, model, split.vocab, split.protocol, split.name)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "model.safetensors", "vocab.safetensors"]
    for path in tmp_path.iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol header


def test_damaged_checkpoints_fail_with_a_clear_message(tmp_path):
    split = generate(SyntheticConfig(n_items=50, n_sessions=100)).split
    model = build("pop", split.n_items).fit(split.train_cases())
    checkpoint.save(tmp_path, model, split.vocab, split.protocol, split.name)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": "pop"}))
    with pytest.raises(checkpoint.CheckpointError, match="lacks"):
        checkpoint.load(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing")


def test_vocab_with_external_ids_survives_a_checkpoint(tmp_path):
    split = generate(SyntheticConfig(n_items=5, n_categories=2, n_sessions=50)).split
    model = build("pop", 5).fit(split.train_cases())
    vocab = Vocab(np.array([0, 1001, 1002, 1003, 1004, 1005]))
    checkpoint.save(tmp_path, model, vocab, split.protocol, split.name)
    assert checkpoint.load(tmp_path)[1].decode(np.array([3])).tolist() == [1003]
