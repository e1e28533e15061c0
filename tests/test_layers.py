"""Shared layers checked against their direct computation."""

import pytest
import torch
import torch.nn.functional as F

from nextclick.models import layers
from nextclick.models.layers import inner_product_cross_entropy, inner_product_logsumexp


def plain_loss_and_gradients(queries, table, labels):
    queries, table = queries.clone().requires_grad_(), table.clone().requires_grad_()
    scores = queries @ table.T
    scores[:, 0] = -torch.inf
    loss = F.cross_entropy(scores, labels)
    loss.backward()
    return loss, queries.grad, table.grad


@pytest.mark.parametrize("block_floats", [40, 1 << 22])  # 2 rows per block (several blocks, a short last one), one block
def test_blocked_cross_entropy_equals_cross_entropy_of_the_scores_and_its_gradients(monkeypatch, block_floats):
    monkeypatch.setattr(layers, "BLOCK_FLOATS", block_floats)
    torch.manual_seed(0)
    queries, table, labels = torch.randn(7, 5), torch.randn(20, 5), torch.randint(1, 20, (7,))
    expected = plain_loss_and_gradients(queries, table, labels)
    q, t = queries.clone().requires_grad_(), table.clone().requires_grad_()
    loss = inner_product_cross_entropy(q, t, labels)
    (2.5 * loss).backward()  # the upstream gradient scales both
    assert torch.allclose(loss, expected[0], atol=1e-6)
    assert torch.allclose(q.grad, 2.5 * expected[1], atol=1e-6)
    assert torch.allclose(t.grad, 2.5 * expected[2], atol=1e-6)
    assert (t.grad[0] == 0).all()  # the padding row is no candidate: no gradient


def test_blocked_cross_entropy_passes_gradient_only_where_asked_and_none_without_grad():
    torch.manual_seed(0)
    queries, table, labels = torch.randn(4, 3, requires_grad=True), torch.randn(9, 3), torch.randint(1, 9, (4,))
    inner_product_cross_entropy(queries, table, labels).backward()
    assert queries.grad is not None and table.grad is None
    with torch.no_grad():
        loss = inner_product_cross_entropy(queries, table, labels)
    assert not loss.requires_grad
    assert torch.allclose(loss, plain_loss_and_gradients(queries.detach(), table, labels)[0])


@pytest.mark.parametrize("keep_floats", [0, 1 << 26], ids=["recomputed", "kept"])
@pytest.mark.parametrize("block_floats", [40, 1 << 22])
def test_blocked_logsumexp_equals_logsumexp_of_the_scores_left_out_items_excluded_with_its_gradients(
        monkeypatch, block_floats, keep_floats):
    monkeypatch.setattr(layers, "BLOCK_FLOATS", block_floats)
    monkeypatch.setattr(layers, "KEEP_FLOATS", keep_floats)  # the softmax kept for backward, or recomputed
    torch.manual_seed(0)
    queries, table = torch.randn(5, 3), torch.randn(20, 3)
    excluded = torch.tensor([[0, 4], [2, 2], [0, 0], [7, 19], [1, 5]])  # 0 = padding, already no candidate
    upstream = torch.randn(5)
    q, t = queries.clone().requires_grad_(), table.clone().requires_grad_()
    scores = q @ t.T
    scores = scores.scatter(1, excluded, -torch.inf)
    scores[:, 0] = -torch.inf
    expected = torch.logsumexp(scores, dim=1)
    (expected * upstream).sum().backward()
    q2, t2 = queries.clone().requires_grad_(), table.clone().requires_grad_()
    result = inner_product_logsumexp(q2, t2, excluded)
    (result * upstream).sum().backward()
    assert torch.allclose(result, expected, atol=1e-6)
    assert torch.allclose(q2.grad, q.grad, atol=1e-6) and torch.allclose(t2.grad, t.grad, atol=1e-6)


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 20.0])
def test_bisection_entmax_gives_entmax_bisects_bits_and_gradients_in_fewer_halvings(monkeypatch, scale):
    from entmax import entmax_bisect

    halvings = []
    p = layers._ExactBisectEntmax._p.__func__
    monkeypatch.setattr(layers._ExactBisectEntmax, "_p",
                        classmethod(lambda cls, X, alpha: halvings.append(1) or p(cls, X, alpha)))
    torch.manual_seed(0)
    x = torch.randn(32, 4, 12) * scale
    masked = torch.rand(x.shape) < 0.3
    masked[..., 0] = False
    masked[0, 0, :] = True  # a row with nothing to attend: NaN in both, all 50 halvings
    alpha = 1 + torch.rand(32, 4, 1)
    outputs = []
    for normaliser in (lambda s, a: entmax_bisect(s, a, dim=-1), lambda s, a: layers.alpha_entmax(s, a)):
        xs, a = x.clone().requires_grad_(), alpha.clone().requires_grad_()
        y = normaliser(xs.masked_fill(masked, -torch.inf), a)
        (y.nan_to_num() * torch.linspace(-1, 1, 12)).sum().backward()
        outputs.append([t.nan_to_num(7.0) for t in (y, xs.grad, a.grad)])
    for reference, ours in zip(*outputs):
        assert torch.equal(reference, ours)
    assert len(halvings) == 50  # the NaN row keeps it going

    halvings.clear()
    layers.alpha_entmax(x.masked_fill(masked, -torch.inf)[1:], alpha[1:])
    assert len(halvings) < 45
