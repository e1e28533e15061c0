"""SR-IEM: shapes, importance module, padding invariance, both variants, the synthetic contract,
checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.models import REGISTRY, build
from nextclick.models.sriem import SRIEM, SRIEMConfig, bce_over_softmax
from model_contract import check_forward_backward, synthetic_validation

N_ITEMS = 30
VARIANTS = {"paper": SRIEMConfig(embedding_size=16, attention_size=8),
            "code": SRIEMConfig.code(embedding_size=16)}


def small(variant: str = "paper") -> SRIEM:
    torch.manual_seed(0)
    return SRIEM(N_ITEMS, VARIANTS[variant])


def labelled(prefixes, labels) -> Batch:
    batch = batch_from_prefixes([np.array(p) for p in prefixes], 10)
    return Batch(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


def test_registered_and_defaults():
    assert REGISTRY["sr-iem"] is SRIEM
    c = SRIEMConfig()
    assert (c.variant, c.embedding_size, c.attention_size, c.max_length, c.batch_size) == ("paper", 200, 100, 10, 128)
    assert (c.lr, c.lr_decay_every, c.lr_decay, c.weight_decay, c.loss) == (1e-3, 3, 0.1, 1e-5, "bce")
    code = SRIEMConfig.code()
    assert (code.variant, code.loss, code.batch_size, code.shuffle, code.attention_size) == ("code", "ce", 256, False, 200)
    assert build("sr-iem", 10, {"variant": "code"}).query.out_features == 200


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_forward_backward_shapes(variant):
    model = small(variant)
    batch = labelled([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [2, 3, 4])
    check_forward_backward(model, batch)
    assert model.query.out_features == (16 if variant == "code" else 8)
    assert (model.fusion.bias is not None) == (variant == "code")


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_importance_weights(variant):
    model = small(variant).eval()
    batch = labelled([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [2, 3, 4])
    with torch.no_grad():
        _, beta = model.session_vector(batch)
    assert beta.shape == (3, 5)
    torch.testing.assert_close(beta.sum(1), torch.ones(3))
    assert (beta[0, :2] == 0).all() and (beta[1, :4] == 0).all()  # padding gets no weight
    assert beta[1, 4].item() == 1.0  # a one-click prefix: beta = 1, no 0/0


def test_importance_by_hand():
    """Eq. 1-4 of the paper (and the code's forms) recomputed with loops on one session."""
    for variant in ("paper", "code"):
        model = small(variant).eval()
        items = [3, 9, 3, 12]
        with torch.no_grad():
            e = model.embedding.weight[items]  # (t, d)
            q, k = model.query(e), model.key(e)
            d, t = e.shape[1], len(items)
            alpha = torch.zeros(t)
            for i in range(t):
                for j in range(t):
                    if i == j:
                        continue
                    if variant == "paper":
                        c = torch.sigmoid(torch.sigmoid(q[i]) @ torch.sigmoid(k[j])) / math.sqrt(d)
                    else:
                        c = torch.sigmoid(q[i] @ k[j] / math.sqrt(d))
                    alpha[i] += c
            alpha /= t if variant == "paper" else t - 1
            expected = torch.softmax(alpha, 0)
            _, beta = model.session_vector(labelled([items], [1]))
        torch.testing.assert_close(beta[0], expected)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_padding_never_changes_scores(variant):
    model = small(variant).eval()
    session = [3, 7, 7, 1]
    alone = model.score(labelled([session], [1]))
    padded = model.score(labelled([session, list(range(1, 11))], [1, 1]))
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # even a non-zero padding row changes nothing
        model.embedding.weight[0].fill_(3.0)
    again = model.score(labelled([session, list(range(1, 11))], [1, 1]))
    torch.testing.assert_close(padded[0], again[0], rtol=0, atol=0)


def test_keeps_last_ten():
    model = small()
    assert model.max_length == 10
    long = np.arange(1, 16)
    torch.testing.assert_close(model.score(batch_from_prefixes([long], 10)), model.score(batch_from_prefixes([long[-10:]], 10)))


def test_bce_matches_direct_formula():
    torch.manual_seed(0)
    logits = torch.randn(4, 9, dtype=torch.float64) * 3
    logits[:, 0] = -torch.inf
    labels = torch.tensor([1, 5, 8, 2])
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(labels, 9).double()
    p, y = p[:, 1:], y[:, 1:]  # the padding column has p = 0 and is no item
    direct = -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).sum(1).mean()
    torch.testing.assert_close(bce_over_softmax(logits, labels), direct)
    gradient_logits = logits.clone().requires_grad_(True)
    direct_logits = logits.clone().requires_grad_(True)
    bce_over_softmax(gradient_logits, labels).backward()
    q = torch.softmax(direct_logits, 1)[:, 1:]
    (-(y * torch.log(q) + (1 - y) * torch.log1p(-q)).sum(1).mean()).backward()
    torch.testing.assert_close(gradient_logits.grad[:, 1:], direct_logits.grad[:, 1:])
    assert (gradient_logits.grad[:, 0] == 0).all()
    assert torch.autograd.gradcheck(lambda z: bce_over_softmax(z, labels - 1), (logits[:, 1:].clone().requires_grad_(True),))
    confident = torch.zeros(1, 5)
    confident[0, 3] = 60.0  # p ~ 1 on a wrong item: large but finite, finite gradients
    confident.requires_grad_(True)
    loss = bce_over_softmax(confident, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(confident.grad).all()


def test_the_code_form_beats_pop_on_synthetic_validation():
    """(The paper form is checked with every model in test_contract.py.)"""
    from nextclick.evaluate import evaluate
    from nextclick.training.loop import TrainOptions, train_model

    torch.manual_seed(0)
    split, fit, valid, pop_hit_rate = synthetic_validation()
    config = SRIEMConfig.code(embedding_size=64, attention_size=32, batch_size=256, lr=5e-3)
    model = SRIEM(split.n_items, config)
    train_model(model, fit, valid, TrainOptions(epochs=1, progress=False, quiet=True, device="cpu"))
    assert evaluate(model.score, valid, max_length=model.max_length).metrics["HR@20"] > pop_hit_rate + 0.05
