"""CSRM: the outer memory (first in, first out, bounded, emptied each epoch, written by training steps
only), its read, the memory through a checkpoint, the official written evaluation, and a tiny run that
learns. The synthetic contract (tests/test_contract.py) covers the rest."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from nextclick import checkpoint
from nextclick.data.batches import batch_from_prefixes, make_batch
from nextclick.data.streams import StreamOptions
from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.evaluate import evaluate
from nextclick.models import REGISTRY, build
from nextclick.models.csrm import CSRM, CSRMConfig
from nextclick.training.loop import TrainOptions, train_model, train_step
from model_contract import check_forward_backward

TINY = dict(embedding_size=8, hidden_size=6, batch_size=64, lr=1e-2)


def small(n_items: int = 30, **changes) -> CSRM:
    torch.manual_seed(0)
    return CSRM(n_items, CSRMConfig(**{**TINY, **changes}))


def labelled(prefixes: list[list[int]], labels: list[int]):
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    return type(batch)(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


def test_registered_with_the_official_defaults():
    assert REGISTRY["csrm"] is CSRM and build("csrm", 10, {"memory_slots": 7}).memory.shape == (7, 150)
    c = CSRMConfig()
    assert (c.embedding_size, c.hidden_size, c.embedding_dropout, c.context_dropout) == (150, 150, 0.25, 0.5)
    assert (c.memory_slots, c.neighbours, c.lr, c.batch_size, c.epochs, c.shuffle) == (10_000, 512, 5e-4, 512, 50, False)
    assert c.evaluation_memory == "frozen" and c.max_length is None


def test_the_memory_keeps_the_latest_rows_first_in_first_out():
    model = small(memory_slots=5)
    rows = torch.arange(1, 13, dtype=torch.float32).unsqueeze(1).repeat(1, 6)  # row i holds the value i + 1
    model.remember(rows[:3])
    assert model.memory_rows()[:, 0].tolist() == [1, 2, 3] and int(model.memory_filled) == 3
    model.remember(rows[3:7])  # wraps around the ring
    assert model.memory_rows()[:, 0].tolist() == [3, 4, 5, 6, 7] and int(model.memory_filled) == 5
    model.remember(rows[7:])  # more rows than slots: the newest five stay
    assert model.memory_rows()[:, 0].tolist() == [8, 9, 10, 11, 12]
    model.forget()
    assert len(model.memory_rows()) == 0 and int(model.memory_next) == 0


def test_the_read_is_the_softmax_of_the_top_k_cosine_similarities():
    model = small(neighbours=3)
    torch.manual_seed(1)
    stored, queries = torch.randn(8, 6), torch.randn(4, 6)
    assert torch.equal(model.read_memory(queries), queries)  # empty: a session reads itself (official `starting`)
    model.remember(stored)
    similarity = torch.nn.functional.cosine_similarity(queries.unsqueeze(1), stored.unsqueeze(0), dim=2)  # (4, 8)
    top = similarity.sort(dim=1, descending=True)
    expected = torch.stack([torch.softmax(top.values[b, :3], 0) @ stored[top.indices[b, :3]] for b in range(4)])
    torch.testing.assert_close(model.read_memory(queries), expected)
    model.config = CSRMConfig(**{**TINY, "neighbours": 100})  # more neighbours than rows: every row is read
    torch.testing.assert_close(model.read_memory(queries), torch.softmax(similarity, 1) @ stored)


def test_a_training_step_reads_the_earlier_batches_then_appends_its_own():
    model = small(embedding_dropout=0.0, context_dropout=0.0, memory_slots=10)
    optimizer = model.optimizer()
    first = labelled([[1, 2, 3], [4], [5, 6]], [4, 5, 7])
    second = labelled([[7, 8], [9, 1, 2, 3]], [9, 4])
    model.train()
    with torch.no_grad():
        model(first), model(first, first.labels)  # scoring in train mode, and a loss without gradients: no write
    assert int(model.memory_filled) == 0
    with torch.no_grad():
        local_before_step = local_vectors(model, first)
    train_step(model, optimizer, first, torch.device("cpu"))
    torch.testing.assert_close(model.memory_rows(), local_before_step)
    with torch.no_grad():
        local_second = local_vectors(model, second)
    train_step(model, optimizer, second, torch.device("cpu"))
    rows = model.memory_rows()
    assert len(rows) == 5
    torch.testing.assert_close(rows[3:], local_second)


def local_vectors(model: CSRM, batch) -> torch.Tensor:
    """c_l of each case, as the model computes it."""
    from nextclick.models.narm import local_attention, recurrent_states

    items, lengths = model._inputs(batch)
    embedded = model.embedding(items)
    states, last = recurrent_states(model.gru, embedded, lengths)
    return local_attention(states, last, lengths, model.attention_last, model.attention_each, model.attention_vector)[0]


@functools.lru_cache(maxsize=1)
def tiny_split():
    config = SyntheticConfig(n_items=40, n_categories=4, n_sessions=500, min_length=3, max_length=6, spurious_rate=0.0,
                             markov_strength=0.9, successors=1)
    split = generate(config).split
    fit, valid = split.carve_validation()
    return split, fit, valid


@functools.lru_cache(maxsize=1)
def trained_on_tiny_split():
    """A CSRM trained 3 epochs on the tiny split with validation, and every call that wrote the memory:
    (epoch's stream position, the labels of the batch written)."""
    split, fit, valid = tiny_split()
    model = small(split.n_items, memory_slots=100, neighbours=20)
    written, session_vector = [], model.session_vector

    def spy(batch, write=False):
        if write:
            written.append((int(model.memory_filled), batch.labels.clone()))
        return session_vector(batch, write)

    model.session_vector = spy
    train_model(model, fit, valid, TrainOptions(epochs=3, patience=3, progress=False, quiet=True, device="cpu"))
    del model.session_vector
    return model, written


def test_training_writes_every_training_case_once_per_epoch_and_nothing_else():
    split, fit, valid = tiny_split()
    model, written = trained_on_tiny_split()
    epochs = np.split(np.arange(len(written)), [i for i, (filled, _) in enumerate(written) if filled == 0][1:])
    assert len(epochs) == 3  # emptied at each epoch's start; validation never wrote
    for epoch in epochs:
        labels = torch.cat([written[i][1] for i in epoch]).numpy()
        assert np.array_equal(np.sort(labels), np.sort(fit.labels))  # every fit case, once: no validation case
    before = model.state_tensors()
    evaluate(model.score, split.test), evaluate(model.score, valid)
    model.recommend([np.array([1, 2])])
    after = model.state_tensors()
    assert all(torch.equal(before[k], after[k]) for k in ("memory", "memory_filled", "memory_next"))


def test_a_tiny_run_learns():
    split, _, _ = tiny_split()
    model, _ = trained_on_tiny_split()
    pop = build("pop", split.n_items).fit(split.train_cases())
    ours, baseline = (evaluate(m.score, split.test).metrics["HR@5"] for m in (model, pop))
    assert ours > baseline + 0.1, (ours, baseline)  # 0.86 against 0.65


def test_the_memory_survives_a_checkpoint(tmp_path):
    split, _, _ = tiny_split()
    model, _ = trained_on_tiny_split()  # the best epoch's memory: full and wrapped around
    assert int(model.memory_filled) == 100
    path = checkpoint.save(tmp_path / "csrm", model, split.vocab, split.protocol, split.name)
    loaded, _, _ = checkpoint.load(path)
    assert torch.equal(loaded.memory_rows(), model.memory_rows())
    batch = make_batch(split.test, np.arange(40), model.max_length)
    assert torch.equal(loaded.score(batch), model.score(batch))
    tensors = model.state_tensors()
    tensors["memory_next"] = torch.tensor(100)
    with pytest.raises(ValueError, match="memory counters"):
        small(split.n_items, memory_slots=100, neighbours=20).load_state_tensors(tensors)


def test_the_official_written_evaluation_appends_each_scored_batch_after_reading_it():
    model = small(memory_slots=10).eval()
    model.remember(torch.randn(4, 6))
    written = small(memory_slots=10, evaluation_memory="written").eval()
    written.load_state_tensors(model.state_tensors())
    batch = labelled([[1, 2], [3], [4, 5, 6]], [3, 4, 7])
    torch.testing.assert_close(written.score(batch), model.score(batch))  # read before the write
    assert int(written.memory_filled) == 7 and int(model.memory_filled) == 4
    assert not torch.equal(written.score(batch), model.score(batch))  # now it reads the batch too
    assert not written.inner_product and model.inner_product


@pytest.mark.parametrize("repeat", ["off", "mix", "new-only"])
def test_forward_backward_and_explanations(repeat):
    model = small(repeat=repeat).train()
    model.remember(torch.randn(5, 6))
    batch = labelled([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [2, 3, 4])
    check_forward_backward(model, batch)
    weights = model.click_weights(batch)
    assert weights.weights.shape == (3, 5) and (weights.weights[1, 1:] == 0).all()
    torch.testing.assert_close(weights.weights.sum(1), torch.ones(3))
    gate = weights.scalars["own-session gate"]
    assert gate.shape == (3,) and ((gate > 0) & (gate < 1)).all()
    assert ("repeat probability" in weights.scalars) == (repeat != "off")


def test_each_epoch_starts_with_an_empty_memory():
    split, fit, _ = tiny_split()
    model = small(split.n_items)
    model.remember(torch.randn(3, 6))
    batches = model.training_stream(fit, StreamOptions(batch_size=64, shuffle=False)).batches(1)
    next(batches)
    assert int(model.memory_filled) == 0
