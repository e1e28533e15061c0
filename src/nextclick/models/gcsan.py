"""GC-SAN: Graph Contextualized Self-Attention Network (Xu, Zhao, Liu, Zhou, Sheng, Cui, Fang; IJCAI 2019).

No official code was published; this follows the paper (model_zoo.md 2.14) and, where it is silent,
the re-implementation DSAN's authors ran for their Table 2 (`baselines/GCSAN.py`, dsan_reference.md 5.6),
the row we compare with. For a prefix x_1..x_t:
    H      = SR-GNN's session graph and gated graph step (layers.node_states): one state per click
    k self-attention blocks (single head, no position embedding), each
        F = softmax((H W_Q)(H W_K)^T / sqrt(d)) (H W_V)      keys at padding masked
        E = W_2 ReLU(W_1 F + b_1) + b_2 + F                  point-wise FFN with a residual (dropout on it)
        H = E                                                the next block reads this one's output
    s      = w * E_t + (1 - w) * h_t                        last click: attention output vs its GNN state
    z_j    = <s, E[j]>                                      softmax cross-entropy over items 1..N

Defaults: d = 100, one block, w = 0.7, no dropout and Adam lr 1e-3 decayed x0.1 every 3 epochs, batch
100, as DSAN's runs (their loop: w = 0.7, the comments 0.7 for Retailrocket and 0.5 for Diginetica;
the paper suggests w in [0.4, 0.8]). L2 1e-5 as SR-GNN, whose training the paper follows (DSAN's code:
1e-7). Init U(-1/sqrt(d), 1/sqrt(d)) for every parameter, as SR-GNN.
Options for DSAN's re-implementation: `query_key_activation="relu"` (its Q = ReLU(W_q h), K = ReLU(W_k h)).
Its symmetric adjacency is not offered: SR-GNN's graph, which the paper builds on, is directed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch
from nextclick.models.neural import ClickWeights, ItemEmbeddingModel
from nextclick.models.repeat import repeat_decoder, with_repeat_options
from nextclick.models.layers import GatedGraphCell, node_states


@dataclass(frozen=True)
@with_repeat_options
class GCSANConfig:
    hidden_size: int = 100  # d (DSAN's runs; SR-GNN's size)
    steps: int = 1  # gated graph steps (paper: one)
    blocks: int = 1  # k self-attention blocks (DSAN's sa_layer_num = 1)
    weight: float = 0.7  # w: last-position attention output vs its GNN state (DSAN's loop; paper [0.4, 0.8])
    dropout: float = 0.0  # on the FFN output (DSAN's runs: 0)
    query_key_activation: Literal["none", "relu"] = "none"  # "relu": DSAN's re-implementation
    max_length: int | None = None  # whole prefixes, as SR-GNN (None: the last 512 clicks)
    lr: float = 1e-3  # paper: Adam 1e-3, decayed as SR-GNN
    lr_decay_every: int = 3
    lr_decay: float = 0.1
    weight_decay: float = 1e-5  # SR-GNN's L2 (DSAN's code: 1e-7)
    amsgrad: bool = False
    batch_size: int = 100  # DSAN's runs, as SR-GNN
    epochs: int = 30  # SR-GNN's budget (DSAN's runs: 20); we stop early on validation
    shuffle: bool = True


class SelfAttentionBlock(nn.Module):
    """One GC-SAN block: single-head scaled dot-product self-attention over the clicks, then a point-wise
    feed-forward network with a residual connection."""

    def __init__(self, size: int, dropout: float, activation: str):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(size, size), nn.Linear(size, size), nn.Linear(size, size)
        self.inner, self.outer = nn.Linear(size, size), nn.Linear(size, size)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def forward(self, states: torch.Tensor, mask: torch.Tensor, keep_weights: bool = False, last_only: bool = False):
        """states (B, L, d), mask (B, L) -> (B, L, d) [and the attention (B, L, L)]. With `last_only`, only
        the last click's row is computed, (B, 1, d): all the last block has to give, at a fraction of the
        work (every key and value is still read)."""
        query, key = self.query(states[:, -1:] if last_only else states), self.key(states)
        if self.activation == "relu":
            query, key = F.relu(query), F.relu(key)
        scores = query @ key.transpose(1, 2) / math.sqrt(states.shape[-1])  # (B, L or 1, L)
        weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), -torch.inf), dim=-1)
        attended = weights @ self.value(states)  # F (B, L or 1, d)
        output = self.dropout(self.outer(F.relu(self.inner(attended)))) + attended  # E
        return (output, weights) if keep_weights else output


class GCSAN(ItemEmbeddingModel):
    name = "gc-san"
    fused_adam = True
    Config = GCSANConfig
    citation = "Xu et al., Graph Contextualized Self-Attention Network for Session-based Recommendation, IJCAI 2019"

    def __init__(self, n_items: int, config: GCSANConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        self.embedding = nn.Embedding(n_items + 1, c.hidden_size)
        self.cell = GatedGraphCell(c.hidden_size)
        self.blocks = nn.ModuleList(SelfAttentionBlock(c.hidden_size, c.dropout, c.query_key_activation)
                                    for _ in range(c.blocks))
        bound = 1.0 / math.sqrt(c.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)  # SR-GNN's reset_parameters, every parameter
        self.repeat_decoder = repeat_decoder(c, c.hidden_size, c.hidden_size)  # after the model's own init

    def _encode(self, batch: Batch, keep_weights: bool = False):
        """s (B, d) [and the last block's attention (B, L, L)]."""
        hidden, graphs = node_states(batch.items, self.embedding, self.cell, self.config.steps)  # (n, d)
        # (B, L, d); padding positions are masked as keys. index_select, not hidden[click_node]: its backward
        # (index_add_) took 0.5 against 3.6 ms for a (100, 150) gather (forward and backward, 2 threads)
        graph_states = hidden.index_select(0, graphs.click_node.reshape(-1)).view(*graphs.click_node.shape, -1)
        states, weights = graph_states, None
        for index, block in enumerate(self.blocks):
            # the session vector reads the last click's row only: the last block computes just that row
            last = index == len(self.blocks) - 1 and not keep_weights
            states, weights = block(states, batch.mask, keep_weights=True, last_only=last)
        w = self.config.weight
        session = w * states[:, -1] + (1 - w) * graph_states[:, -1]  # right-aligned: the last click is last
        return (session, weights) if keep_weights else session

    def session_vector(self, batch: Batch) -> torch.Tensor:
        return self._encode(batch)

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The last click's self-attention over the clicks (last block), and the full click-by-click matrix."""
        if not self.config.blocks:
            raise ValueError("GC-SAN with blocks=0 has no self-attention to explain")
        with self.evaluating():
            batch = batch.to(self.device)
            _, weights = self._encode(batch, keep_weights=True)
            return ClickWeights(items=batch.items, weights=weights[:, -1], name="self-attention of the last click",
                                pairs=weights, pairs_name="self-attention between clicks (last block)",
                                scalars=self.repeat_scalars(batch))
