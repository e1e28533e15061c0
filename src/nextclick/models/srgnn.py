"""SR-GNN: Session-based Recommendation with Graph Neural Networks (Wu, Tang, Zhu, Wang, Xie, Tan; AAAI 2019).

Official code: github.com/CRIPAC-DIG/SR-GNN (PyTorch: pytorch_code/model.py, utils.py, main.py).
What it computes, as the official code does it (model_zoo.md 2.13), for a prefix x_1..x_t:
    graph  on the prefix's distinct items: M[u, v] = 1 where u is directly followed by v; A_in averages
           each node's predecessors, A_out its successors (layers.session_graphs)
    h      = E[nodes], then `steps` gated graph steps (layers.GatedGraphCell)
    v_i    = h[alias_i]                         each click's node state
    s_l    = v_t                                the last click
    a_i    = q . sigmoid(W_1 v_t + W_2 v_i + c)   no softmax (the code sums unnormalised weights)
    s_g    = sum_i a_i v_i
    s_h    = W_3 [s_g; s_l] + b                 hybrid; `hybrid=False` keeps s_g (the code's --nonhybrid)
    z_j    = <s_h, E[j]>                        items 1..N, softmax cross-entropy
Settings (paper section 4.1 / code main.py): d = 100, batch 100, Adam lr 1e-3 with L2 1e-5 as weight
decay, the rate x0.1 every 3 epochs, one graph step, 30 epochs (patience 10 in the code; we stop on our
validation as every model does). Every parameter, embeddings included, starts U(-1/sqrt(d), 1/sqrt(d))
(code `reset_parameters`; the paper text says Gaussian 0.1).

Where we differ, and why:
- The code calls `scheduler.step()` at the start of each epoch; under PyTorch >= 1.1 its first decay
  then comes after 2 epochs, not 3. We decay after every 3 epochs as the paper and the code's intent
  (`lr_decay_every=2` would reproduce the shifted schedule for the first decay; model_zoo.md 2.13).
- Selection on validation, not on the test set (the code keeps each metric's best test epoch).
- The graph is built per batch in a few tensor operations instead of per session in Python; node order
  within a graph differs from np.unique's (a graph network does not depend on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nextclick.data.batches import Batch
from nextclick.models.neural import ClickWeights, ItemEmbeddingModel
from nextclick.models.repeat import repeat_decoder, with_repeat_options
from nextclick.models.layers import GatedGraphCell, node_states


@dataclass(frozen=True)
@with_repeat_options
class SRGNNConfig:
    hidden_size: int = 100  # d (code --hiddenSize 100)
    steps: int = 1  # gated graph steps (code --step 1)
    hybrid: bool = True  # s_h = W_3 [s_g; s_l]; False: s_g only (code --nonhybrid)
    max_length: int | None = None  # the code reads whole prefixes (None: the last 512 clicks)
    lr: float = 1e-3  # code --lr
    lr_decay_every: int = 3  # code --lr_dc_step 3
    lr_decay: float = 0.1  # code --lr_dc
    weight_decay: float = 1e-5  # code --l2, Adam weight_decay (embeddings included)
    amsgrad: bool = False
    batch_size: int = 100  # code --batchSize
    epochs: int = 30  # code --epoch
    shuffle: bool = True  # code Data(..., shuffle=True) for training


class SRGNN(ItemEmbeddingModel):
    name = "sr-gnn"
    fused_adam = True
    Config = SRGNNConfig
    citation = "Wu et al., Session-based Recommendation with Graph Neural Networks, AAAI 2019"

    def __init__(self, n_items: int, config: SRGNNConfig | None = None):
        super().__init__(n_items, config)
        d = self.config.hidden_size
        self.embedding = nn.Embedding(n_items + 1, d)
        self.cell = GatedGraphCell(d)
        self.attention_last = nn.Linear(d, d)  # W_1 (linear_one, with bias)
        self.attention_each = nn.Linear(d, d)  # W_2 (linear_two, with bias: its bias is c)
        self.attention_vector = nn.Linear(d, 1, bias=False)  # q (linear_three)
        self.hybrid = nn.Linear(2 * d, d)  # W_3, b (linear_transform)
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)  # official reset_parameters, every parameter
        self.repeat_decoder = repeat_decoder(self.config, d, d)  # after the model's own init: off leaves it untouched

    def _readout(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """s_h (B, d), and the attention a (c,) of the batch's real clicks in row-major order."""
        hidden, graphs = node_states(batch.items, self.embedding, self.cell, self.config.steps)  # (n, d)
        rows, columns = batch.mask.nonzero(as_tuple=True)  # the real clicks only: no padding enters
        clicks = hidden[graphs.click_node[rows, columns]]  # v_i (c, d)
        last = hidden[graphs.click_node[:, -1]]  # s_l (B, d): right-aligned, the last click is the last column
        weights = self.attention_vector(torch.sigmoid(self.attention_last(last)[rows]
                                                      + self.attention_each(clicks))).squeeze(-1)  # (c,)
        session = last.new_zeros(last.shape).index_add(0, rows, weights.unsqueeze(1) * clicks)  # s_g (B, d)
        if self.config.hybrid:
            session = self.hybrid(torch.cat([session, last], dim=1))
        return session, weights

    def session_vector(self, batch: Batch) -> torch.Tensor:
        return self._readout(batch)[0]

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The readout attention a_i per click (unnormalised, as in the code)."""
        with self.evaluating():
            batch = batch.to(self.device)
            weights = torch.zeros(batch.items.shape, device=batch.items.device)  # (B, L), 0 at padding
            weights[batch.mask] = self._readout(batch)[1]
            return ClickWeights(items=batch.items, weights=weights, name="readout attention a_i (unnormalised)",
                                scalars=self.repeat_scalars(batch))
