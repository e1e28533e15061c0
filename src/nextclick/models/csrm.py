"""CSRM: Collaborative Session-based Recommendation Machine.

Wang, Ren, Mei, Chen, Ma, de Rijke. "A Collaborative Session-based Recommendation Approach with Parallel
Memory Modules". SIGIR 2019. Official code: github.com/wmeirui/CSRM_SIGIR2019 (TensorFlow 1, Python 2;
read at 7799e20: csrm.py, ome.py, main.py). The official code is our reference wherever the two differ.

What it computes for a prefix x_1..x_t (csrm.py `build_graph`, ome.py `OME.__call__`):
    e_j   = dropout_0.25(E[x_j])                             item embeddings, E in R^{(N+1) x D}
    Inner memory encoder (IME): NARM's global and local encoders (narm.py), each over its own GRU:
    c_g   = last state of GRU_g(e_1..e_t)                    global encoder
    h_j   = GRU_l(e_1..e_t)
    c_l   = sum_j softmax_j(v^T sigmoid(A1 h_t + A2 h_j)) h_j   local (attentive) encoder
    Outer memory encoder (OME): a memory M of the c_l vectors of the most recent training cases,
    `memory_slots` rows (10,000), first in first out:
    s_i   = cos(c_l, M_i)                                    every stored row
    m     = sum_{i in top-k(s)} softmax_k(s)_i M_i           k = `neighbours` (512)
    Fusion: each of c_l, c_g, m standardised over its dimensions (zero mean, unit variance: "^")
    f     = sigmoid(w_i . c_l^ + w_o . m^ + w_s . c_g^)       one gate per session (w_* in R^H)
    c     = f [c_l^; c_g^] + (1 - f) [m^; m^]
    s_i   = E[i]^T B dropout_0.5(c),  B in R^{D x 2H}        NARM's bilinear decoder, softmax cross-entropy

The memory, as the official code keeps it (csrm.py `train`, ome.py):
- Written during training: each mini-batch first reads the memory as the previous batches left it, then
  appends its own c_l vectors (computed with dropout on, no gradient through the stored rows), the oldest
  rows dropping out beyond `memory_slots`. So a case never reads itself, nor a case of a later batch.
- Emptied at the start of every epoch; the first batch of an epoch, finding the memory empty, reads
  its own c_l (the official `starting` branch: read = c_l). With fewer stored rows than `neighbours`,
  all of them are read.
- Written during evaluation too: the official code scores validation, then test, batch by batch, reading
  then writing, continuing from the memory training left. We call that `evaluation_memory="written"`.

What the memory holds when we evaluate, and why the default differs from the official code:
- `evaluation_memory="frozen"` (default): scoring reads the memory and never writes it. After training it
  holds the c_l vectors of the last `memory_slots` training cases of the selected epoch, in the stream's
  order (file order by default: the chronologically last training sessions, longest prefix first). It
  holds training cases only: validation and test sessions are never written, so no test session, and no
  label of one, can reach a score. A score is then a function of its session alone, as the contract
  requires: batch composition, evaluation order and a served copy loaded from the checkpoint give the
  same scores (the memory is three buffers of the model's state, saved in its safetensors file).
- `evaluation_memory="written"` reproduces the official evaluation: each scored batch is appended after it
  is read, so validation cases enter the memory during training (the selected epoch's checkpoint holds
  them: the trainer keeps its state after validating) and each test batch sees earlier test batches.
  This leaks. The SR-GNN/DSAN test files list each session's prefixes longest first, so where a batch
  boundary splits a session, a later batch reads the c_l of a longer prefix of its own session, which
  contains its label (and later test sessions read earlier test sessions' representations, which a
  deployed recommender could have, but which no other model here sees). Scores then depend on what was
  scored before and in which batches; use it only to compare with the published numbers.

Settings (official main.py defaults; the paper's text is not at hand, see docs/baselines.md): D = H = 150
(the code's comments: "initial: 50 / 100"), Adam lr 5e-4, batch 512, keep probabilities 0.75 / 0.5,
memory 10,000 rows read through 512 neighbours, 50 epochs with patience 10, no shuffling.

Where we differ from the official code, and why:
- GRU cells: torch's GRU applies the reset gate after the recurrent matrix product, TensorFlow's GRUCell
  before it; both are standard GRUs. Initialisation (`init="official"`) follows the code: TensorFlow's
  GRUCell defaults (Glorot-uniform kernels, gate biases 1, candidate bias 0) and N(0, 2/rows) for the
  code's own matrices (embeddings, attention, bilinear decoder, gate vectors).
- The memory is a ring buffer written in place (the code concatenates and slices); the rows read and
  their order of arrival are the same. Cosine similarity divides by max(norm, 1e-12) per vector (the
  code adds 1e-8 to the product of the norms): equal for any non-zero vector.
- Padding index 0 is never a candidate (the official softmax includes it, harmless as never a target).
- Selection on our validation split (last 10% of training sessions); the code selects on its own
  validation file and reports test at the best validation epoch, as we do. Patience is the trainer's
  option (`--patience 10` is the code's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch
from nextclick.data.sessions import Cases
from nextclick.data.streams import Stream, StreamOptions
from nextclick.models.layers import inner_product_cross_entropy
from nextclick.models.narm import local_attention, official_gaussian_, recurrent_states
from nextclick.models.neural import ClickWeights, NeuralModel, cross_entropy
from nextclick.models.repeat import RepeatOutput, repeat_decoder, with_repeat_options


@dataclass(frozen=True)
@with_repeat_options
class CSRMConfig:
    embedding_size: int = 150  # D: official main.py --dim_proj 150 (its comment: "initial: 50")
    hidden_size: int = 150  # H, each GRU and the memory rows: --hidden_units 150 ("initial: 100")
    embedding_dropout: float = 0.25  # official keep_probability [0.75, 0.5]: 0.75 kept on the embeddings
    context_dropout: float = 0.5  # ... and 0.5 on the fused session vector before the decoder
    memory_slots: int = 10_000  # the memory size: ome.py keeps the last 10000 session vectors ([-10000:])
    neighbours: int = 512  # rows read per case: main.py --memory_size 512, ome.py top_k(k=memory_size)
    evaluation_memory: Literal["frozen", "written"] = "frozen"  # "written" = the official evaluation (leaks)
    init: Literal["official", "pytorch"] = "official"  # csrm.py init_params + TensorFlow GRUCell defaults
    max_length: int | None = None  # data_process.prepare_data pads to the longest prefix (no truncation)
    lr: float = 5e-4  # main.py --lr 0.0005, Adam
    weight_decay: float = 0.0  # no L2 in the code
    amsgrad: bool = False
    lr_decay_every: int = 0  # no learning-rate decay in the code
    lr_decay: float = 1.0
    batch_size: int = 512  # main.py --batch_size 512
    epochs: int = 50  # main.py --epoch 50 (patience 10)
    shuffle: bool = False  # csrm.py get_minibatches_idx(..., shuffle=False), built once: file order


class EpochMemoryStream:
    """The model's training stream, with the memory emptied as each epoch's first batch is drawn (the
    official code restarts its memory at every epoch)."""

    def __init__(self, stream: Stream, model: CSRM):
        self.stream, self.model = stream, model

    def cases(self, epoch: int) -> int:
        return self.stream.cases(epoch)

    def batches(self, epoch: int) -> Iterator[Batch]:
        self.model.forget()
        yield from self.stream.batches(epoch)


class CSRM(NeuralModel):
    name = "csrm"
    Config = CSRMConfig
    citation = "Wang et al., A Collaborative Session-based Recommendation Approach with Parallel Memory Modules, SIGIR 2019"

    def __init__(self, n_items: int, config: CSRMConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        hidden = c.hidden_size
        self.embedding = nn.Embedding(n_items + 1, c.embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(c.embedding_dropout)
        self.global_gru = nn.GRU(c.embedding_size, hidden, batch_first=True)  # scope global_encoder
        self.gru = nn.GRU(c.embedding_size, hidden, batch_first=True)  # scope local_encoder
        self.attention_last = nn.Linear(hidden, hidden, bias=False)  # A1 = W_decoder (applied to h_t)
        self.attention_each = nn.Linear(hidden, hidden, bias=False)  # A2 = W_encoder (applied to h_j)
        self.attention_vector = nn.Linear(hidden, 1, bias=False)  # v = bl_vector
        self.gate = nn.Linear(3 * hidden, 1, bias=False)  # [w_i; w_o; w_s] = inner/outer/state_encoder
        self.context_dropout = nn.Dropout(c.context_dropout)
        self.bilinear = nn.Linear(2 * hidden, c.embedding_size, bias=False)  # B = bili (D x 2H)
        # the outer memory: a ring of `memory_slots` c_l rows, how many are filled, where the next goes
        self.register_buffer("memory", torch.zeros(c.memory_slots, hidden))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.int64))
        self.register_buffer("memory_next", torch.zeros((), dtype=torch.int64))
        if c.init == "official":
            self._official_init()
        self.repeat_decoder = repeat_decoder(c, 2 * hidden, c.embedding_size)  # after the model's own init

    @torch.no_grad()
    def _official_init(self) -> None:
        hidden, size = self.config.hidden_size, self.config.embedding_size
        official_gaussian_(self.embedding.weight, self.n_items + 1)  # Wemb (N, D)
        self.embedding.weight[0].zero_()
        official_gaussian_(self.attention_last.weight, hidden)  # W_decoder (H, H)
        official_gaussian_(self.attention_each.weight, hidden)  # W_encoder (H, H)
        official_gaussian_(self.attention_vector.weight, 1)  # bl_vector (1, H): std sqrt(2)
        official_gaussian_(self.gate.weight, hidden)  # three (H, 1) vectors, std sqrt(2/H) each
        official_gaussian_(self.bilinear.weight, size)  # bili (D, 2H)
        for gru in (self.global_gru, self.gru):  # TensorFlow GRUCell: Glorot-uniform kernels on [x; h]
            gates = math.sqrt(6.0 / (size + hidden + 2 * hidden))  # the (D + H, 2H) gates kernel
            candidate = math.sqrt(6.0 / (size + hidden + hidden))  # the (D + H, H) candidate kernel
            for weight in (gru.weight_ih_l0, gru.weight_hh_l0):  # torch rows: reset, update, candidate
                weight[: 2 * hidden].uniform_(-gates, gates)
                weight[2 * hidden :].uniform_(-candidate, candidate)
            gru.bias_ih_l0.zero_()
            gru.bias_hh_l0.zero_()
            gru.bias_ih_l0[: 2 * hidden].fill_(1.0)  # gate biases start at 1, the candidate's at 0

    def optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.Adam(self.parameters(), lr=c.lr, weight_decay=c.weight_decay, amsgrad=c.amsgrad, fused=True)

    @property
    def inner_product(self) -> bool:
        """A written memory changes with every scored batch, which query vectors (never writing) miss."""
        return super().inner_product and self.config.evaluation_memory == "frozen"

    # -- the outer memory --
    def training_stream(self, cases: Cases, options: StreamOptions) -> Stream:
        return EpochMemoryStream(super().training_stream(cases, options), self)

    @torch.no_grad()
    def forget(self) -> None:
        """Empty the memory (the start of an epoch)."""
        self.memory.zero_()
        self.memory_filled.zero_()
        self.memory_next.zero_()

    @torch.no_grad()
    def remember(self, rows: torch.Tensor) -> None:
        """Append session vectors (n, H) after the newest row, the oldest dropping out beyond
        `memory_slots`; in place, so the buffers stay the ones the checkpoint and optimizer state know."""
        slots = self.memory.shape[0]
        rows = rows[-slots:]
        start = int(self.memory_next)
        positions = (start + torch.arange(len(rows), device=self.memory.device)) % slots
        self.memory.index_copy_(0, positions, rows.to(self.memory.dtype))
        self.memory_next.fill_((start + len(rows)) % slots)
        self.memory_filled.fill_(min(int(self.memory_filled) + len(rows), slots))

    def memory_rows(self) -> torch.Tensor:
        """The stored rows, oldest first (F, H)."""
        filled, start = int(self.memory_filled), int(self.memory_next)
        if filled < self.memory.shape[0]:
            return self.memory[:filled].clone()
        return torch.cat([self.memory[start:], self.memory[:start]])

    def read_memory(self, local: torch.Tensor) -> torch.Tensor:
        """m (B, H): the stored rows most cosine-similar to each c_l (B, H), weighted by the softmax of
        their similarities; c_l itself while the memory is empty (the official `starting` branch)."""
        filled = int(self.memory_filled)
        if filled == 0:
            return local
        memory = self.memory[:filled]  # row order does not matter to the read
        if torch.is_grad_enabled():  # the training step writes the memory in place before backward
            memory = memory.clone()
        similarity = F.normalize(local, dim=1) @ F.normalize(memory, dim=1).T  # (B, F)
        if self.config.neighbours >= filled:  # every row is a neighbour
            return torch.softmax(similarity, dim=1) @ memory
        top, where = similarity.topk(self.config.neighbours, dim=1, sorted=False)  # (B, k)
        # the k weights spread over the F rows, so one matrix product reads them (no (B, k, H) gather)
        weights = torch.zeros_like(similarity).scatter(1, where, torch.softmax(top, dim=1))  # (B, F)
        return weights @ memory

    # -- the session vector --
    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) left-aligned clicks (padding on the right) and (B,) lengths."""
        batch = batch.recent(self.encoder_length)  # a no-op unless the repeat decoder widened the batch
        return batch.left_aligned(), batch.lengths

    def session_vector(self, batch: Batch, write: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """c (B, 2H) before dropout, the local attention weights (B, L) and the fusion gate f (B,); with
        `write`, the batch's c_l rows are appended to the memory after it is read."""
        items, lengths = self._inputs(batch)  # (B, L), (B,)
        embedded = self.embedding_dropout(self.embedding(items))  # (B, L, D)
        _, global_last = recurrent_states(self.global_gru, embedded, lengths, every_click=False)  # c_g (B, H)
        states, last = recurrent_states(self.gru, embedded, lengths)  # (B, L, H), h_t (B, H)
        local, weights = local_attention(states, last, lengths, self.attention_last, self.attention_each,
                                         self.attention_vector)  # c_l (B, H), (B, L)
        read = self.read_memory(local)  # m (B, H)
        if write:
            self.remember(local.detach())
        hidden = self.config.hidden_size
        local, read, global_last = F.layer_norm(torch.stack([local, read, global_last]), (hidden,), eps=1e-10)
        gate = torch.sigmoid(self.gate(torch.cat([local, read, global_last], dim=1)))  # (B, 1)
        context = gate * torch.cat([local, global_last], dim=1) + (1 - gate) * torch.cat([read, read], dim=1)
        return context, weights, gate.squeeze(1)

    def _writes(self, labels: torch.Tensor | None) -> bool:
        """Whether this call appends to the memory: a training step (train mode, labels, gradients on), or
        any scoring call with the official evaluation memory."""
        if self.training:
            return labels is not None and torch.is_grad_enabled()
        return self.config.evaluation_memory == "written"

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.repeat_decoder is not None:
            decoded = self._decoded(batch, labels, write=self._writes(labels))
            return decoded.scores, decoded.loss
        query = self.bilinear(self.context_dropout(self.session_vector(batch, self._writes(labels))[0]))  # (B, D)
        if labels is not None and torch.is_grad_enabled():  # the loss without the (B, N + 1) scores
            return None, inner_product_cross_entropy(query, self.embedding.weight, labels)
        scores = query @ self.embedding.weight.T  # (B, N + 1)
        scores[:, 0] = -torch.inf  # padding is no candidate (in place: the matmul's backward needs no output)
        return scores, cross_entropy(scores, labels)

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None, write: bool = False) -> RepeatOutput:
        """The repeat/explore decoder on the model's scores (config `repeat`), fed c after dropout."""
        context = self.context_dropout(self.session_vector(batch, write)[0])  # (B, 2H)
        return self.repeat_decoder(self.bilinear(context), self.embedding.weight, context, self.embedding.weight,
                                   batch.items, labels)

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The local encoder's attention over the GRU state at each click, and the fusion gate: the share
        of the session's own encoders against the neighbours read from the memory."""
        with self.evaluating():
            batch = batch.to(self.device)
            _, weights, gate = self.session_vector(batch)
            return ClickWeights(items=self._inputs(batch)[0], weights=weights, name="local attention",
                                scalars={"own-session gate": gate, **self.repeat_scalars(batch)})

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self.bilinear(self.session_vector(batch.to(self.device))[0])

    def item_vectors(self) -> torch.Tensor:
        return self.embedding.weight.detach().clone()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Refuse a memory whose counters point outside it (a tampered or foreign checkpoint)."""
        slots = self.config.memory_slots
        filled, start = (tensors.get(k, torch.zeros(())) for k in ("memory_filled", "memory_next"))
        if filled.numel() == 1 and start.numel() == 1:
            filled, start = int(filled), int(start)
            if not (0 <= filled <= slots and 0 <= start < slots and (filled == slots or start == filled)):
                raise ValueError(f"memory counters (filled {filled}, next {start}) do not fit a {slots}-row memory")
        super().load_state_tensors(tensors)
