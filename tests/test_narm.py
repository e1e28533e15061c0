"""NARM: shapes, padding invariance, variants, the synthetic contract, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.data.batches import batch_from_prefixes
from nextclick.models import REGISTRY, build
from nextclick.models.config import MAX_SESSION_LENGTH
from nextclick.models.narm import NARM, NARMConfig
from model_contract import check_forward_backward

N_ITEMS = 30


def small(**changes) -> NARM:
    torch.manual_seed(0)
    return NARM(N_ITEMS, NARMConfig(embedding_size=8, hidden_size=12, **changes))


def test_registered():
    assert REGISTRY["narm"] is NARM
    assert build("narm", 10, {"decoder": "fc"}).config.decoder == "fc"


def test_paper_defaults():
    c = NARMConfig()
    assert (c.embedding_size, c.hidden_size, c.embedding_dropout, c.context_dropout) == (50, 100, 0.25, 0.5)
    assert (c.lr, c.batch_size, c.encoder, c.decoder) == (1e-3, 512, "hybrid", "bilinear")


@pytest.mark.parametrize("encoder", ["hybrid", "global", "local"])
@pytest.mark.parametrize("decoder", ["bilinear", "fc"])
def test_forward_backward_shapes(encoder, decoder):
    model = small(encoder=encoder, decoder=decoder)
    batch = batch_from_prefixes([np.array([1, 2, 3]), np.array([4]), np.array([5, 6, 7, 8, 9])])
    batch = type(batch)(batch.items, batch.lengths, torch.tensor([2, 3, 4]), batch.full_lengths)
    check_forward_backward(model, batch)
    context, weights = model.session_vector(batch)
    assert context.shape == (3, 24 if encoder == "hybrid" else 12)
    if encoder == "global":
        assert weights is None
    else:
        assert weights.shape == (3, 5)
        torch.testing.assert_close(weights.sum(1), torch.ones(3))
        assert (weights[1, 1:] == 0).all()  # a 1-click session attends only to its click


@pytest.mark.parametrize("encoder", ["hybrid", "local", "global"])
def test_padding_never_changes_scores(encoder):
    model = small(encoder=encoder).eval()
    session = np.array([3, 7, 7, 1])
    alone = model.score(batch_from_prefixes([session]))
    padded = model.score(batch_from_prefixes([session, np.arange(1, 15)]))  # 10 extra padding columns
    assert padded.shape == (2, N_ITEMS + 1)
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-6)
    wider = model.score(batch_from_prefixes([np.arange(2, 20), session, np.array([5])]))
    torch.testing.assert_close(alone[0], wider[1], rtol=1e-5, atol=1e-6)


def test_padding_embedding_cannot_leak():
    """Even a non-zero padding row must not reach the GRU: packing keeps it out."""
    model = small().eval()
    session = np.array([3, 7, 1])
    before = model.score(batch_from_prefixes([session, np.arange(1, 9)]))[0]
    with torch.no_grad():
        model.embedding.weight[0].fill_(5.0)
    after = model.score(batch_from_prefixes([session, np.arange(1, 9)]))[0]
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_truncation_sides():
    long = np.arange(1, 26)  # 25 clicks
    recent = small(max_length=19)
    first = small(max_length=19, truncate="first")
    first.load_state_dict(recent.state_dict())
    recent.eval(), first.eval()
    assert recent.max_length == 19 and first.max_length == MAX_SESSION_LENGTH  # forward() cuts the first 19
    torch.testing.assert_close(recent.score(batch_from_prefixes([long], 19))[0],
                               recent.score(batch_from_prefixes([long[-19:]], 19))[0])
    torch.testing.assert_close(first.score(batch_from_prefixes([long], None))[0],
                               recent.score(batch_from_prefixes([long[:19]], 19))[0])


def test_official_init_scales():
    model = NARM(5000, NARMConfig())
    assert abs(model.embedding.weight[1:].std().item() - (2 / 5001) ** 0.5) < 5e-4
    recurrent = model.gru.weight_hh_l0[:100]
    torch.testing.assert_close(recurrent @ recurrent.T, torch.eye(100), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_gru_is_torchs_gru(dtype):
    """recurrent_states' CPU GRU (packed_gru: input gates in one matmul, then torch's GRU cell step by step)
    against nn.GRU on the same PackedSequence: the same states and gradients (input, every weight and
    bias) within float rounding. They can differ in the last bits: the input gates come from one matmul
    over all clicks instead of one per step, and the input weights' gradient is summed the same way."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from nextclick.models.narm import recurrent_states

    torch.manual_seed(3)
    gru = torch.nn.GRU(6, 7, batch_first=True).to(dtype)
    lengths = torch.tensor([3, 9, 1, 9, 4, 2, 6])  # unsorted, ties, a one-click session
    embedded = torch.randn(7, 9, 6, dtype=dtype) * (torch.arange(9) < lengths.unsqueeze(1)).unsqueeze(2)
    ours_input, their_input = embedded.clone().requires_grad_(), embedded.clone().requires_grad_()
    states, last = recurrent_states(gru, ours_input, lengths)
    _, last_only = recurrent_states(gru, ours_input, lengths, every_click=False)
    their_states, their_last = gru(pack_padded_sequence(their_input, lengths, batch_first=True, enforce_sorted=False))
    their_states = pad_packed_sequence(their_states, batch_first=True, total_length=9)[0]
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(states, their_states, **tolerance)
    torch.testing.assert_close(last, their_last[-1], **tolerance)
    assert torch.equal(last_only, last)
    assert (states[2, 1:] == 0).all()  # zero past a session's end
    upstream_states, upstream_last = torch.randn_like(states), torch.randn_like(last)
    ours = torch.autograd.grad((states * upstream_states).sum() + (last * upstream_last).sum(),
                               [ours_input, *gru.parameters()])
    theirs = torch.autograd.grad((their_states * upstream_states).sum() + (their_last[-1] * upstream_last).sum(),
                                 [their_input, *gru.parameters()])
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, **tolerance)
