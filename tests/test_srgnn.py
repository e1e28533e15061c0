"""SR-GNN (models/srgnn.py) and its session graph and gated graph cell (models/layers.py)."""

import numpy as np
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.models import build
from nextclick.models.layers import GatedGraphCell, session_graphs

from model_contract import check_forward_backward


def dense(graphs, session: int):
    """(nodes, A_in, A_out) of one session, as SR-GNN's official code lays them out (rows = nodes)."""
    nodes = torch.nonzero(graphs.node_session == session).squeeze(1)
    local = {int(node): i for i, node in enumerate(nodes)}
    incoming, outgoing = torch.zeros(len(nodes), len(nodes)), torch.zeros(len(nodes), len(nodes))
    for u, v, w_in, w_out in zip(graphs.source.tolist(), graphs.target.tolist(), graphs.incoming, graphs.outgoing):
        if u in local:
            incoming[local[v], local[u]] = w_in  # v averages its predecessors
            outgoing[local[u], local[v]] = w_out  # u averages its successors
    return graphs.node_items[nodes].tolist(), incoming.tolist(), outgoing.tolist()


def test_the_graph_has_one_node_per_distinct_item_and_averages_neighbours():
    graphs = session_graphs(torch.tensor([[0, 0, 5, 3, 5, 9], [0, 0, 0, 0, 2, 2]]))
    items, incoming, outgoing = dense(graphs, 0)
    assert items == [3, 5, 9]
    # 5 -> 3, 3 -> 5, 5 -> 9: node 5 has two successors, each weighted 1/2; 3 and 9 have 5 as predecessor
    assert outgoing == [[0, 1, 0], [0.5, 0, 0.5], [0, 0, 0]]
    assert incoming == [[0, 1, 0], [1, 0, 0], [0, 1, 0]]
    assert dense(graphs, 1) == ([2], [[1.0]], [[1.0]])  # 2 -> 2 is a self-loop
    node_of = graphs.click_node[0, 2:].tolist()
    assert node_of[0] == node_of[2] != node_of[1]  # both clicks on 5 share one node
    assert len(graphs.node_items) == 4  # no padding node anywhere


def test_a_repeated_transition_counts_once():
    graphs = session_graphs(torch.tensor([[1, 2, 1, 2, 3, 3]]))
    _, _, outgoing = dense(graphs, 0)
    assert outgoing[0] == [0, 1, 0]  # 1 -> 2 twice: still weight 1
    assert len(graphs.source) == 4  # 1->2, 2->1, 2->3, 3->3


def test_the_cell_computes_the_official_gated_update():
    torch.manual_seed(0)
    cell = GatedGraphCell(4)
    graphs = session_graphs(torch.tensor([[0, 7, 8, 7, 9]]))
    _, a_in_matrix, a_out_matrix = dense(graphs, 0)
    a_in_matrix, a_out_matrix = torch.tensor(a_in_matrix), torch.tensor(a_out_matrix)
    h = torch.randn(len(graphs.node_items), 4)
    a_in = a_in_matrix @ (h @ cell.edge_in.weight.T + cell.edge_in.bias) + cell.bias_in
    a_out = a_out_matrix @ (h @ cell.edge_out.weight.T + cell.edge_out.bias) + cell.bias_out
    gi = torch.cat([a_in, a_out], 1) @ cell.input_gates.weight.T + cell.input_gates.bias
    gh = h @ cell.hidden_gates.weight.T + cell.hidden_gates.bias
    r = torch.sigmoid(gi[..., :4] + gh[..., :4])
    u = torch.sigmoid(gi[..., 4:8] + gh[..., 4:8])
    n = torch.tanh(gi[..., 8:] + r * gh[..., 8:])
    torch.testing.assert_close(cell(graphs, h), (1 - u) * n + u * h)


def test_forward_backward_and_padding_does_not_change_scores():
    torch.manual_seed(0)
    model = build("sr-gnn", 12, {"hidden_size": 8})
    batch = batch_from_prefixes([np.array([1, 2, 1, 3]), np.array([4]), np.array([5, 6, 7, 8, 9, 5])])
    batch = Batch(batch.items, batch.lengths, torch.tensor([2, 3, 4]), batch.full_lengths)
    check_forward_backward(model, batch)
    alone = model.score(batch_from_prefixes([np.array([4])]))
    torch.testing.assert_close(model.score(batch)[1:2], alone, rtol=1e-5, atol=1e-6)


def test_defaults_are_the_official_settings():
    c = build("sr-gnn", 10).config
    assert (c.hidden_size, c.steps, c.batch_size, c.lr, c.weight_decay, c.lr_decay_every, c.lr_decay) == (
        100, 1, 100, 1e-3, 1e-5, 3, 0.1)
