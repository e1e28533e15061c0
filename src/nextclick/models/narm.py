"""NARM: Neural Attentive Recommendation Machine.

Li, Ren, Chen, Ren, Lian, Ma. "Neural Attentive Session-based Recommendation". CIKM 2017.
Official code: github.com/lijingsdu/sessionRec_NARM (Theano).

What it computes (paper section 3, for a prefix x_1..x_t):
    e_j  = dropout_0.25(E[x_j])                               item embeddings, E in R^{(N+1) x D}
    h_j  = GRU(e_j, h_{j-1})                                  one GRU layer, H units
    c_g  = h_t                                                global encoder (section 3.3)
    q_tj = v^T sigmoid(A1 h_t + A2 h_j)                       eq. 8
    a_tj = softmax_j(q_tj) over the real clicks j = 1..t     normalised as in the official code
    c_l  = sum_j a_tj h_j                                     local encoder (section 3.4)
    c_t  = dropout_0.5([c_l; c_g])                            hybrid session vector (section 3.5)
    s_i  = E[i]^T B c_t,  B in R^{D x 2H}                     bi-linear decoder (eq. 9)
and is trained with full-catalogue cross-entropy. Variants from the paper, as config values:
`encoder` = global / local / hybrid (Table 4) and `decoder` = bilinear / fc (Table 2; the fully
connected decoder is s = W c_t + b with its own output matrix).

Where we differ from the paper and the official code, and why:
- Truncation: the official `load_data(maxlen=19)` keeps the *first* 19 clicks of longer prefixes,
  so the most recent clicks of long sessions are never seen. We keep the most recent 19
  (`truncate="recent"`, the framework's convention); `truncate="first"` reproduces the official
  behaviour. Only prefixes longer than 19 (about 1% of diginetica test cases) are affected.
- Gates: the official GRU and attention use Theano's hard sigmoid; the paper writes the logistic
  sigmoid, which we use (torch's GRU cell over the real clicks only, so padding never enters it: on the
  CPU `packed_gru`, nn.GRU's cell with its input gates in one matmul; on a GPU nn.GRU on packed sequences).
- Initialisation (`init="official"`): as the Theano code, N(0, 2/rows) for every weight matrix whose
  first dimension is `rows` (so the embedding table gets std sqrt(2/N), tiny), orthogonal recurrent
  matrices, zero biases. `init="pytorch"` keeps torch's defaults.
- Padding index 0 is never a candidate (the official softmax includes it; harmless, since it is never
  a target, but it is no item). Dropout is inverted (scaled at training time) instead of Theano's
  scaling at test time; the two are equal in expectation.
- Validation: the official code picks the epoch on a random 10% of training cases; the framework uses
  the chronologically last 10% of training sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nextclick.data.batches import Batch
from nextclick.models.config import MAX_SESSION_LENGTH
from nextclick.models.layers import full_precision, inner_product_cross_entropy
from nextclick.models.neural import ClickWeights, NeuralModel, cross_entropy
from nextclick.models.repeat import RepeatOutput, repeat_decoder, with_repeat_options


def official_gaussian_(weight: torch.Tensor, rows: int) -> None:
    """In place, N(0, 2 / rows): the official Theano init_weights for a matrix whose first dimension is
    `rows` (CSRM's TensorFlow code keeps the same rule)."""
    weight.normal_(0.0, math.sqrt(2.0 / rows))


def recurrent_states(gru: nn.GRU, embedded: torch.Tensor, lengths: torch.Tensor, every_click: bool = True
                     ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A one-layer GRU over left-aligned clicks (B, L, D) of `lengths` (B,), on the real clicks only (padding
    never enters it): the state at every click (B, L, H), zero past each session's end (None unless
    `every_click`), and h_t at each session's own last click (B, H). On the CPU, `packed_gru` (nn.GRU's
    values, a cheaper backward pass); elsewhere nn.GRU on a PackedSequence (cuDNN's kernels on a GPU)."""
    if embedded.device.type != "cpu" or gru.num_layers != 1 or gru.bidirectional:
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, last = gru(packed)
        if not every_click:
            return None, last[-1]
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=embedded.shape[1])  # (B, L, H)
        return states, last[-1]
    sessions, width = embedded.shape[:2]
    rows, sizes, last_rows = packed_rows(lengths, width)
    states = packed_gru(gru, embedded.reshape(sessions * width, -1)[rows], sizes)  # (T, H)
    last = states[last_rows]  # (B, H)
    if not every_click:
        return None, last
    padded = states.new_zeros(sessions * width, states.shape[1]).index_copy(0, rows, states)
    return padded.view(sessions, width, -1), last  # (B, L, H)


def packed_rows(lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """The packed order of the clicks of left-aligned sessions (B, width) of `lengths` (B,), as
    pack_padded_sequence makes it: step by step, and within a step the sessions still running, longest
    first. Returns each packed click's row in the flattened (B * width) batch (T,), the number of sessions
    running at each step, and the packed row of each session's last click (B,)."""
    order = torch.sort(lengths, descending=True).indices  # (B,) longest first: pack_padded_sequence's sort
    running = lengths[order].unsqueeze(0) > torch.arange(int(lengths.max()), device=lengths.device).unsqueeze(1)
    step, rank = running.nonzero(as_tuple=True)  # (T,), (T,): step-major, as PackedSequence.data
    sizes = running.sum(1)  # (L,) sessions running at each step
    starts = sizes.cumsum(0) - sizes  # (L,) first packed row of each step
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order), device=order.device)  # (B,) each session's place in the order
    return order[rank] * width + step, sizes.tolist(), starts[lengths - 1] + ranks


def packed_gru(gru: nn.GRU, clicks: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """A one-layer nn.GRU over packed clicks (T, D) (`sizes`: the sessions running at each step, as a
    PackedSequence's batch_sizes), from a zero state: the states (T, H) in the same packed order.

    torch's CPU GRU cell step by step, as nn.GRU runs a PackedSequence, so the same values up to float
    rounding (the input gates come from one matmul instead of one per step). What changes is the backward
    pass, where profiles of NARM at RecBole's sizes on Retailrocket (batch 512, the last 50 clicks) showed
    tensor copies that grow with the steps times the batch: nn.GRU's backward of each step's slice of the
    packed input writes a zero tensor as large as the whole input, and pad_packed_sequence's backward copies
    the whole padded gradient once per step. Here the input gates are one matmul over the packed clicks
    before the loop, the steps read them through `split` (backward: one concatenation), and the caller
    packs and unpacks by one gather and one index_copy. Autocast is off inside, as CPU autocast leaves
    nn.GRU in float32."""
    with torch.autocast("cpu", enabled=False):
        inputs = F.linear(full_precision(clicks), gru.weight_ih_l0, gru.bias_ih_l0)  # (T, 3H)
        hidden = inputs.new_zeros(sizes[0], gru.hidden_size)  # (B, H)
        outputs = []
        for step_inputs in inputs.split(sizes):  # (b_t, 3H), b_t non-increasing
            if len(step_inputs) < len(hidden):
                hidden = hidden[: len(step_inputs)]  # the sessions that ended drop out (they sort last)
            hidden = gru_cell(step_inputs, hidden, gru.weight_hh_l0, gru.bias_hh_l0)
            outputs.append(hidden)
        return torch.cat(outputs)  # (T, H)


def gru_cell(inputs: torch.Tensor, hidden: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor
             ) -> torch.Tensor:
    """One GRU step from precomputed input gates `inputs` (b, 3H) = x W_ih^T + b_ih and state `hidden` (b, H),
    the operations of torch's CPU GRUCell in its order (from the same gates, the same floats):
    r = sigmoid(i_r + h_r), z = sigmoid(i_z + h_z), n = tanh(i_n + r * h_n), h' = (h - n) * z + n."""
    gates = F.linear(hidden, weight_hh, bias_hh)  # (b, 3H)
    hidden_reset, hidden_update, hidden_new = gates.chunk(3, 1)
    input_reset, input_update, input_new = inputs.chunk(3, 1)
    reset = torch.sigmoid(hidden_reset + input_reset)
    update = torch.sigmoid(hidden_update + input_update)
    new = torch.tanh(input_new + hidden_new * reset)
    return (hidden - new) * update + new


def local_attention(states: torch.Tensor, last: torch.Tensor, lengths: torch.Tensor, attention_last: nn.Linear,
                    attention_each: nn.Linear, attention_vector: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """NARM's local encoder (eq. 8, softmax-normalised over the real clicks as the official code does):
    c_l (B, H) and the weights alpha_tj (B, L), 0 at padding. `states` (B, L, H) left-aligned, `last` h_t.
    The attention is computed at the real clicks only: a batch as wide as its longest prefix (50 clicks on
    Retailrocket) holds five times as many padding positions as clicks."""
    valid = torch.arange(states.shape[1], device=states.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
    session, position = valid.nonzero(as_tuple=True)  # (T,), (T,): the real clicks
    gate = torch.sigmoid(attention_last(last)[session] + attention_each(states[session, position]))  # (T, H)
    # the softmax in float32 under autocast
    clicks = full_precision(attention_vector(gate).squeeze(1))  # (T,)
    scores = clicks.new_full(valid.shape, -torch.inf).index_put((session, position), clicks)  # (B, L)
    weights = torch.softmax(scores, dim=1)  # (B, L)
    return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights  # (B, H), (B, L)


@dataclass(frozen=True)
@with_repeat_options
class NARMConfig:
    embedding_size: int = 50  # D, NARM section 4.3.2 ("50-dimensional embeddings")
    hidden_size: int = 100  # H, section 4.3.2 ("100 hidden units")
    embedding_dropout: float = 0.25  # section 4.3.2: between the item embedding and the GRU
    context_dropout: float = 0.5  # section 4.3.2: between the session vector c_t and the decoder
    encoder: Literal["hybrid", "global", "local"] = "hybrid"  # Table 4 (NARM_global / NARM_local / NARM)
    decoder: Literal["bilinear", "fc"] = "bilinear"  # Table 2 (bi-linear vs fully connected decoder)
    init: Literal["official", "pytorch"] = "official"  # official Theano init_weights / ortho_weight
    max_length: int | None = 19  # official data_process.load_data(maxlen=19); None = whole prefix
    truncate: Literal["recent", "first"] = "recent"  # which 19 clicks to keep ("first" = official code)
    lr: float = 1e-3  # section 4.3.2, Adam
    weight_decay: float = 0.0  # no L2 in paper or code
    amsgrad: bool = False
    lr_decay_every: int = 0  # no learning-rate decay in paper or code
    lr_decay: float = 1.0
    batch_size: int = 512  # section 4.3.2
    epochs: int = 30  # official train_gru(max_epochs=30)
    shuffle: bool = True  # official get_minibatches_idx(..., shuffle=True) every epoch


class NARM(NeuralModel):
    name = "narm"
    Config = NARMConfig
    citation = "Li et al., Neural Attentive Session-based Recommendation, CIKM 2017"

    def __init__(self, n_items: int, config: NARMConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        self.embedding = nn.Embedding(n_items + 1, c.embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(c.embedding_dropout)
        self.gru = nn.GRU(c.embedding_size, c.hidden_size, batch_first=True)
        if c.encoder != "global":
            self.attention_last = nn.Linear(c.hidden_size, c.hidden_size, bias=False)  # A1 (applied to h_t)
            self.attention_each = nn.Linear(c.hidden_size, c.hidden_size, bias=False)  # A2 (applied to h_j)
            self.attention_vector = nn.Linear(c.hidden_size, 1, bias=False)  # v
        context_size = c.hidden_size * (2 if c.encoder == "hybrid" else 1)
        self.context_dropout = nn.Dropout(c.context_dropout)
        if c.decoder == "bilinear":
            self.bilinear = nn.Linear(context_size, c.embedding_size, bias=False)  # B (D x |c_t|)
        else:
            self.output = nn.Linear(context_size, n_items + 1)  # fully connected decoder
        if c.init == "official":
            self._official_init()
        self.repeat_decoder = repeat_decoder(c, context_size, c.embedding_size)  # after the model's own init

    @property
    def max_length(self) -> int:
        # "first" truncation needs the whole prefix in the batch (forward() cuts it): the batch keeps
        # the most recent MAX_SESSION_LENGTH clicks, which on every published split is the whole prefix
        if self.config.truncate == "first":
            return MAX_SESSION_LENGTH
        return super().max_length

    @torch.no_grad()
    def _official_init(self) -> None:
        gaussian = official_gaussian_
        gaussian(self.embedding.weight, self.n_items + 1)  # Wemb: (N, D), std sqrt(2/N)
        self.embedding.weight[0].zero_()
        hidden = self.config.hidden_size
        for gate in range(3):  # Wxrz: three (D, H) blocks; torch stores (3H, D)
            gaussian(self.gru.weight_ih_l0[gate * hidden : (gate + 1) * hidden], self.config.embedding_size)
            nn.init.orthogonal_(self.gru.weight_hh_l0[gate * hidden : (gate + 1) * hidden])
        self.gru.bias_ih_l0.zero_()
        self.gru.bias_hh_l0.zero_()
        if self.config.encoder != "global":
            gaussian(self.attention_last.weight, hidden)  # W_decoder (H, H)
            gaussian(self.attention_each.weight, hidden)  # W_encoder (H, H)
            gaussian(self.attention_vector.weight, 1)  # bl_vector (1, H): std sqrt(2)
        if self.config.decoder == "bilinear":
            gaussian(self.bilinear.weight, self.config.embedding_size)  # bili (D, 2H)
        else:
            gaussian(self.output.weight, self.output.in_features)  # the commented-out U (2H, N)
            self.output.bias.zero_()

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam (section 4.3.2); the fused CPU kernel computes the same update as the default loop in
        one pass over the parameters."""
        c = self.config
        return torch.optim.Adam(self.parameters(), lr=c.lr, weight_decay=c.weight_decay, amsgrad=c.amsgrad, fused=True)

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) left-aligned clicks (padding on the right) and (B,) lengths, truncated as configured."""
        limit = self.config.max_length
        if self.config.truncate == "recent":  # a no-op unless the repeat decoder widened the batch
            batch = batch.recent(self.encoder_length)
        items = batch.left_aligned()  # (B, L)
        lengths = batch.lengths
        if self.config.truncate == "first" and limit is not None and items.shape[1] > limit:
            items, lengths = items[:, :limit], lengths.clamp(max=limit)
        return items, lengths

    def session_vector(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """c_t (B, |c_t|) before dropout, and the attention weights (B, L) (None for NARM_global)."""
        items, lengths = self._inputs(batch)  # (B, L), (B,)
        embedded = self.embedding_dropout(self.embedding(items))  # (B, L, D)
        states, last = recurrent_states(self.gru, embedded, lengths, every_click=self.config.encoder != "global")
        if self.config.encoder == "global":
            return last, None
        local, weights = local_attention(states, last, lengths, self.attention_last, self.attention_each,
                                         self.attention_vector)
        if self.config.encoder == "local":
            return local, weights
        return torch.cat([local, last], dim=1), weights  # (B, 2H), official order [c_l; c_g]

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The local encoder's attention alpha_tj (eq. 8, normalised) over the GRU state at each click."""
        if self.config.encoder == "global":
            raise ValueError("NARM with encoder=global has no attention to explain (the local and hybrid encoders have)")
        with self.evaluating():
            batch = batch.to(self.device)
            items = self._inputs(batch)[0]  # (B, L) the clicks the encoder reads, left-aligned
            return ClickWeights(items=items, weights=self.session_vector(batch)[1], name="local attention",
                                scalars=self.repeat_scalars(batch))

    def _decoder_query(self, context: torch.Tensor) -> torch.Tensor:
        """(B, |c_t|) -> the vector whose inner products with `item_vectors()` are the scores."""
        if self.config.decoder == "bilinear":
            return self.bilinear(context)  # (B, D)
        return torch.cat([context, context.new_ones(len(context), 1)], dim=1)  # (B, |c_t| + 1): W c + b

    def _decoder_table(self) -> torch.Tensor:
        """The rows the decoder query scores against: item embeddings (bilinear), or the fully connected
        decoder's rows with their bias [W | b] (N + 1, |c_t| + 1)."""
        if self.config.decoder == "bilinear":
            return self.embedding.weight
        return torch.cat([self.output.weight, self.output.bias.unsqueeze(1)], dim=1)

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.repeat_decoder is not None:
            decoded = self._decoded(batch, labels)
            return decoded.scores, decoded.loss
        context = self.context_dropout(self.session_vector(batch)[0])  # (B, |c_t|)
        if labels is not None and torch.is_grad_enabled():  # the loss without the (B, N + 1) scores
            return None, inner_product_cross_entropy(self._decoder_query(context), self._decoder_table(), labels)
        if self.config.decoder == "bilinear":
            logits = self.bilinear(context) @ self.embedding.weight.T  # (B, D) x (D, N+1)
        else:
            logits = self.output(context)  # (B, N+1)
        logits[:, 0] = -torch.inf  # padding is no candidate (in place: the matmul's backward needs no output)
        return logits, cross_entropy(logits, labels)

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None) -> RepeatOutput:
        """The repeat/explore decoder on the model's scores (config `repeat`), fed c_t after dropout."""
        context = self.context_dropout(self.session_vector(batch)[0])  # (B, |c_t|)
        return self.repeat_decoder(self._decoder_query(context), self._decoder_table(), context, self.embedding.weight,
                                   batch.items, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self._decoder_query(self.session_vector(batch.to(self.device))[0])

    def item_vectors(self) -> torch.Tensor:
        """(N+1, D) item embeddings (bilinear decoder), or (N+1, |c_t| + 1) output rows with their bias."""
        with torch.no_grad():
            return self._decoder_table().detach().clone()
