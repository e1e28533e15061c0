"""STAMP: Short-Term Attention/Memory Priority model (Liu, Zeng, Mokhosi, Zhang; KDD 2018).

Official code: github.com/uestcnlp/STAMP (TensorFlow 1; model/STAMP_rsc.py, STAMP_cikm.py,
config/nn_param.conf). What it computes, as the official code does it (model_zoo.md 2.11), for a
prefix x_1..x_t:
    x_i = E[x_i] clipped to L2 norm <= max_norm (tf.nn.embedding_lookup(max_norm=...): the looked-up
          vectors are clipped, differentiably; the table itself is not changed)
    m_s = mean_i x_i                                  the session's general interest
    m_t = x_t                                         the last click, its current interest
    a_i = w_0 . sigmoid(W_1 x_i + W_2 m_t + W_3 m_s)  no bias, and no softmax (norm_type='none')
    m_a = sum_i a_i x_i + m_s                         the code adds the mean (the paper does not)
    h_s = tanh(W_A m_a),  h_t = tanh(W_B m_t)         no biases
    z_j = <h_s * h_t, E[j]>                           "trilinear" scores against the raw table
and trains with softmax cross-entropy over items 1..N. STMP (paper section 4.4) is `attention=False`:
m_a = m_s.

Settings (config/nn_param.conf, stamp_rsc / stamp_cikm): d = 100, Adam lr 0.003, batch 512, 10 epochs,
gradient-norm clip 150 (Yoochoose; 110 for Diginetica), weights N(0, 0.05), embeddings N(0, 0.002),
lookup max_norm 1 (STAMP_rsc.py; STAMP_cikm.py uses 1.5).

Where we differ, and why:
- The paper puts a sigmoid around z before the softmax and has no `+ m_s`; we follow the code, which
  produced the published numbers (model_zoo.md 6: both changes cost accuracy).
- Batches: the official batcher groups sessions of equal length and trains their prefixes of length
  1, 2, ... as consecutive batches; we train on the same prefix cases, shuffled like every other model.
- Selection on validation, not on the test set (the official code keeps the best test epoch).

`--preset dsan` is DSAN's re-implementation (DSAN repository, baselines/STAMP.py; dsan_reference.md
5.4), the code behind DSAN Table 2's STAMP row: torch's Embedding(max_norm=1.5), which renormalises the
looked-up rows of the table itself (so the scores see the renormalised rows too) and passes no gradient
through the scale (`renorm="table"`); m_a = sum_i a_i x_i without the mean (`add_mean=False`); a bias
inside the attention's sigmoid and on W_A and W_B (`biases=True`, zero at the start: the code leaves the
attention's bias uninitialised and zeroes the others); Adam lr 5e-3, no gradient clipping, 50 epochs.
Two things of that code are not copied: evaluation there renormalises the rows of the test prefixes'
items in place too (evaluation here never changes the model: the looked-up vectors are clipped, the
table is not), and W_B keeps torch's default init by a copy/paste slip (N(0, 0.05) here, as W_A: a
standard deviation of 0.058 against 0.05).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nextclick.data.batches import Batch
from nextclick.models.layers import renorm_rows_
from nextclick.models.neural import ClickWeights, ItemEmbeddingModel
from nextclick.models.repeat import repeat_decoder, with_repeat_options


@dataclass(frozen=True)
@with_repeat_options
class STAMPConfig:
    embedding_size: int = 100  # edim = hidden_size = 100 (nn_param.conf stamp_rsc / stamp_cikm)
    max_norm: float | None = 1.0  # embedding_lookup(max_norm=1) in STAMP_rsc.py; STAMP_cikm.py: 1.5
    # how max_norm applies: "lookup" clips the looked-up vectors (TensorFlow's embedding_lookup, the
    # official code); "table" renormalises the table's rows in place while training (torch's
    # Embedding(max_norm), DSAN's re-implementation)
    renorm: Literal["lookup", "table"] = "lookup"
    add_mean: bool = True  # m_a = sum_i a_i x_i + m_s, as the official code; False: the paper's and DSAN's m_a
    biases: bool = False  # the official code has none; DSAN's re-implementation: in the attention and on W_A, W_B
    attention: bool = True  # False: STMP (paper section 4.4), m_a = m_s
    weight_std: float = 0.05  # stddev (nn_param.conf), every weight matrix
    embedding_std: float = 0.002  # emb_stddev (nn_param.conf)
    max_grad_norm: float | None = 150.0  # global gradient-norm clip: 150 Yoochoose, 110 Diginetica
    max_length: int | None = None  # the official batches hold whole prefixes (None: the last 512 clicks)
    lr: float = 3e-3  # init_lr (nn_param.conf); the paper text says about 0.005
    weight_decay: float = 0.0
    amsgrad: bool = False
    batch_size: int = 512  # nn_param.conf
    epochs: int = 10  # nepoch (nn_param.conf); we stop early on validation
    shuffle: bool = True


PRESETS: dict[str, dict] = {
    # DSAN's re-implementation (baselines/STAMP.py, dsan_reference.md 5.4): the module docstring
    "dsan": dict(max_norm=1.5, renorm="table", add_mean=False, biases=True, lr=5e-3, max_grad_norm=None, epochs=50),
    # the official code's Diginetica (CIKM Cup 2016) script, STAMP_cikm.py: lookups clipped to 1.5, clip 110
    "diginetica": dict(max_norm=1.5, max_grad_norm=110.0),
}


def clip_by_norm(vectors: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """(..., d) vectors scaled down to L2 norm <= max_norm, out of place and differentiably, as
    TensorFlow's embedding_lookup(max_norm=...) does (torch's Embedding(max_norm) renorms the table in
    place and passes no gradient through the scale)."""
    if max_norm is None:
        return vectors
    norms = vectors.norm(dim=-1, keepdim=True)
    return vectors * torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0)


class STAMP(ItemEmbeddingModel):
    name = "stamp"
    fused_adam = True
    Config = STAMPConfig
    presets = PRESETS
    citation = "Liu et al., STAMP: Short-Term Attention/Memory Priority Model for Session-based Recommendation, KDD 2018"

    def __init__(self, n_items: int, config: STAMPConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        d = c.embedding_size
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.weight_item = nn.Linear(d, d, bias=c.biases)  # W_1 (line_layer_ctx); its bias: DSAN's b_a
        self.weight_last = nn.Linear(d, d, bias=False)  # W_2 (line_layer_asp)
        self.weight_mean = nn.Linear(d, d, bias=False)  # W_3 (line_layer_output)
        self.attention_vector = nn.Linear(d, 1, bias=False)  # w_0 (wline_ca)
        self.general = nn.Linear(d, d, bias=c.biases)  # W_A (w1)
        self.current = nn.Linear(d, d, bias=c.biases)  # W_B (w2)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, c.embedding_std)
            self.embedding.weight[0].zero_()  # pe_mask: the padding row is always zero
            for layer in (self.weight_item, self.weight_last, self.weight_mean, self.attention_vector,
                          self.general, self.current):
                layer.weight.normal_(0.0, c.weight_std)
                if layer.bias is not None:
                    layer.bias.zero_()
        self.repeat_decoder = repeat_decoder(c, d, d)  # after the model's own init: off leaves it untouched

    def _memory(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The real clicks only, packed: x (n, d) with the session (row) of each, the mean m_s (B, d) and
        the last click m_t (B, d). Packing skips the padding, which on Retailrocket (mean prefix 9, a
        random batch as wide as its longest prefix, ~150) would be 17 times the real work."""
        rows, columns = batch.mask.nonzero(as_tuple=True)  # (n,), row-major: each session's clicks in order
        if self.config.renorm == "table" and self.training and self.config.max_norm is not None:
            # torch's Embedding(max_norm): the rows themselves, before the lookup (its formula, vectorised)
            renorm_rows_(self.embedding.weight, batch.items[rows, columns], self.config.max_norm)
        clicks = clip_by_norm(self.embedding(batch.items[rows, columns]), self.config.max_norm)  # (n, d)
        mean = clicks.new_zeros(len(batch), clicks.shape[1]).index_add(0, rows, clicks)
        mean = mean / batch.lengths.unsqueeze(1).to(clicks.dtype)  # (B, d)
        last = clip_by_norm(self.embedding(batch.items[:, -1]), self.config.max_norm)  # right-aligned: the last column
        return clicks, rows, mean, last

    def _attention(self, clicks, rows, mean, last) -> torch.Tensor:
        """a (n,): one unnormalised weight per real click."""
        context = (self.weight_last(last) + self.weight_mean(mean))[rows]  # (n, d)
        return self.attention_vector(torch.sigmoid(self.weight_item(clicks) + context)).squeeze(-1)

    def session_vector(self, batch: Batch) -> torch.Tensor:
        """h_s * h_t (B, d): the vector the trilinear scores take inner products with."""
        clicks, rows, mean, last = self._memory(batch)
        memory = mean
        if self.config.attention:
            weights = self._attention(clicks, rows, mean, last)  # (n,)
            start = mean if self.config.add_mean else torch.zeros_like(mean)
            memory = start.index_add(0, rows, weights.unsqueeze(1) * clicks)  # m_a = sum_i a_i x_i (+ m_s) (B, d)
        return torch.tanh(self.general(memory)) * torch.tanh(self.current(last))

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The attention a_i of each click (unnormalised, as in the code: they need not sum to 1)."""
        if not self.config.attention:
            raise ValueError("STMP (attention=false) weighs every click alike: there is no attention to explain")
        with self.evaluating():
            batch = batch.to(self.device)
            clicks, rows, mean, last = self._memory(batch)
            weights = torch.zeros(batch.items.shape, device=batch.items.device)  # (B, L), 0 at padding
            weights[batch.mask] = self._attention(clicks, rows, mean, last)
            return ClickWeights(items=batch.items, weights=weights, name="attention a_i (unnormalised)",
                                scalars=self.repeat_scalars(batch))
