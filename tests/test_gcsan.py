"""GC-SAN (models/gcsan.py): SR-GNN's graph states, self-attention blocks, the last-click blend."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.models import build
from nextclick.models.layers import node_states

from model_contract import check_forward_backward


def labelled(prefixes, labels) -> Batch:
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    return Batch(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


def test_the_session_vector_blends_the_last_attention_output_with_the_last_graph_state():
    torch.manual_seed(0)
    model = build("gc-san", 12, {"hidden_size": 8, "weight": 0.3}).eval()
    batch = labelled([[3, 5, 3, 7]], [1])
    with torch.no_grad():
        hidden, graphs = node_states(batch.items, model.embedding, model.cell, 1)
        graph = hidden[graphs.click_node]  # (1, 4, 8)
        block = model.blocks[0]
        q, k, v = block.query(graph), block.key(graph), block.value(graph)
        attended = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, dim=-1) @ v
        output = block.outer(torch.relu(block.inner(attended))) + attended
        expected = 0.3 * output[:, -1] + 0.7 * graph[:, -1]
    torch.testing.assert_close(model.query_vectors(batch), expected)


@pytest.mark.parametrize("overrides", [{}, {"blocks": 2, "dropout": 0.5}, {"query_key_activation": "relu"}])
def test_forward_backward_and_padding_does_not_change_scores(overrides):
    torch.manual_seed(0)
    model = build("gc-san", 12, {"hidden_size": 8, **overrides})
    batch = labelled([[1, 2, 1, 3], [4], [5, 6, 7, 8, 9, 5]], [2, 3, 4])
    check_forward_backward(model, batch)
    alone = model.score(batch_from_prefixes([np.array([4])]))
    torch.testing.assert_close(model.score(batch)[1:2], alone, rtol=1e-5, atol=1e-6)


def test_click_weights_are_the_last_clicks_attention_over_the_clicks():
    torch.manual_seed(0)
    model = build("gc-san", 12, {"hidden_size": 8})
    read = model.click_weights(batch_from_prefixes([np.array([1, 2, 3]), np.array([4])]))
    torch.testing.assert_close(read.weights.sum(1), torch.ones(2))
    assert (read.weights[1, :-1] == 0).all()  # padding gets nothing


@pytest.mark.parametrize("blocks", [1, 3])
def test_the_last_block_computing_only_the_last_row_gives_the_full_computations_vector(blocks):
    torch.manual_seed(0)
    model = build("gc-san", 12, {"hidden_size": 8, "blocks": blocks}).eval()
    batch = labelled([[1, 2, 1, 3], [4], [5, 6, 7, 8, 9, 5]], [2, 3, 4])
    with torch.no_grad():
        full, _ = model._encode(batch, keep_weights=True)  # every row of every block
        torch.testing.assert_close(model._encode(batch), full)
