"""STAMP (models/stamp.py) as its official code computes it."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.models import build
from nextclick.models.stamp import clip_by_norm
from nextclick.training.loop import train_step

from model_contract import check_forward_backward


def labelled(prefixes, labels) -> Batch:
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    return Batch(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


def small(**overrides):
    torch.manual_seed(0)
    return build("stamp", 12, {"embedding_size": 6, "embedding_std": 0.5, "weight_std": 0.5, **overrides})


def test_clipping_scales_long_vectors_to_the_norm_and_keeps_short_ones_and_the_gradient():
    vectors = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], requires_grad=True)
    clipped = clip_by_norm(vectors, 1.0)
    torch.testing.assert_close(clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    clipped.sum().backward()
    assert torch.isfinite(vectors.grad).all() and vectors.grad.abs().sum() > 0


def test_scores_are_the_official_codes_trilinear_product():
    model = small().eval()
    batch = labelled([[3, 5, 5, 7], [2]], [1, 1])
    table = model.embedding.weight.detach()
    expected = []
    for prefix in ([3, 5, 5, 7], [2]):
        x = clip_by_norm(table[prefix], 1.0)  # (t, d)
        mean, last = x.mean(0), x[-1]
        a = torch.sigmoid(x @ model.weight_item.weight.T + last @ model.weight_last.weight.T
                          + mean @ model.weight_mean.weight.T) @ model.attention_vector.weight.T  # (t, 1), no softmax
        memory = (a * x).sum(0) + mean  # the code adds m_s
        query = torch.tanh(memory @ model.general.weight.T) * torch.tanh(last @ model.current.weight.T)
        expected.append(query @ table.T)
    scores = model.score(batch)
    torch.testing.assert_close(scores[:, 1:], torch.stack(expected)[:, 1:], rtol=1e-5, atol=1e-6)
    assert torch.isneginf(scores[:, 0]).all()


def test_stmp_reads_the_mean_and_the_last_click_only():
    model = small(attention=False)
    one, other = model.score(labelled([[3, 5, 7]], [1])), model.score(labelled([[5, 3, 7]], [1]))
    torch.testing.assert_close(one, other)  # the order before the last click does not matter
    with pytest.raises(ValueError, match="no attention"):
        model.click_weights(labelled([[3, 5, 7]], [1]))


def test_forward_backward_and_the_padding_row_stays_zero():
    model = small()
    assert model.embedding.weight[0].abs().sum() == 0
    check_forward_backward(model, labelled([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [2, 3, 4]))
    assert model.embedding.weight.grad[0].abs().sum() == 0


def test_a_training_step_clips_the_global_gradient_norm():
    model = small(max_grad_norm=0.01)
    optimizer = model.optimizer()
    train_step(model, optimizer, labelled([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [2, 3, 4]), torch.device("cpu"))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm <= 0.01 + 1e-6


def test_defaults_are_the_official_settings():
    c = build("stamp", 10).config
    assert (c.embedding_size, c.lr, c.batch_size, c.epochs, c.max_grad_norm, c.max_norm) == (100, 3e-3, 512, 10, 150.0, 1.0)


def dsan_small():
    from nextclick.models.stamp import PRESETS
    return small(**{**PRESETS["dsan"], "max_norm": 0.5})  # a norm the N(0, 0.5) rows exceed


def test_dsan_preset_scores_without_the_mean_and_with_biases():
    model = dsan_small().eval()
    with torch.no_grad():
        for layer in (model.weight_item, model.general, model.current):
            layer.bias.normal_()  # zero at the start: make them count
    table = model.embedding.weight.detach()
    x = clip_by_norm(table[[3, 5, 7]], 0.5)
    mean, last = x.mean(0), x[-1]
    a = torch.sigmoid(model.weight_item(x) + model.weight_last(last) + model.weight_mean(mean)) @ model.attention_vector.weight.T
    memory = (a * x).sum(0)  # no + m_s
    query = torch.tanh(model.general(memory)) * torch.tanh(model.current(last))
    scores = model.score(labelled([[3, 5, 7]], [1]))
    torch.testing.assert_close(scores[0, 1:], (query @ table.T)[1:], rtol=1e-5, atol=1e-6)


def test_dsan_preset_renormalises_the_looked_up_rows_of_the_table_while_training_only():
    model = dsan_small()
    before = model.embedding.weight.detach().clone()
    assert (before[[1, 2, 3]].norm(dim=1) > 0.5).all()
    with torch.no_grad():
        model.eval().score(labelled([[1, 2, 3]], [4]))
    torch.testing.assert_close(model.embedding.weight.detach(), before)  # evaluation changes nothing
    optimizer = model.optimizer()
    model.train()
    train_step(model, optimizer, labelled([[1, 2, 3]], [4]), torch.device("cpu"))
    after = model.embedding.weight.detach()
    # the rows looked up were cut to the norm before the step moved them (lr 5e-3: a little way)
    assert (after[[1, 2, 3]].norm(dim=1) < 0.5 + 0.05).all()
    untouched = [5, 6, 7, 8, 9, 10, 11, 12]  # neither input nor target: Adam's first step moves them by ~lr or not at all
    assert (after[untouched].norm(dim=1) > 0.5).all()
