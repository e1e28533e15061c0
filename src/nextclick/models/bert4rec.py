"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer
(Sun, Liu, Wu, Pei, Lin, Ou, Jiang; CIKM 2019; official TensorFlow code github.com/FeiSun/BERT4Rec).

What it computes (model_zoo.md 2.15), for a token sequence v_1..v_T (items, some replaced by [mask]):
    h^0_i = LayerNorm(E[v_i] + P[p_i]), dropout       item + learnable position embedding
    L post-LN Transformer blocks, each
        a = MultiHead(h) (bidirectional: every token attends to every real token), dropout
        h = LayerNorm(h + a);  h = LayerNorm(h + dropout(W_2 GELU(W_1 h)))
    q_i = LayerNorm(GELU(W_P h^L_i + b_P))            the output head (BERT's masked-LM transform)
    z_j = <q_i, E[j]> + b_j                           over items 1..N ([mask] and padding are no candidates)
Training is the Cloze task: in each training sequence some tokens become [mask] and the model predicts
them (softmax cross-entropy over the whole catalogue, computed blockwise by
`layers.inner_product_cross_entropy`). Inference appends [mask] after the prefix and ranks at that slot.

Training sequences (`MaskedSequenceStream`): each training case (a prefix and its next click, the
protocol's prefix cases, as RecBole 1.2.1 trains BERT4Rec on sessions) gives one sequence, the prefix
with its label appended, cut to its last `max_length + 1` tokens. Each sequence is either
- a Cloze sample: max(1, round(n * mask_probability)) of its n tokens, chosen at random, become [mask]
  (the official gen_data_fin.py's count; its mask_prob=1.0: always [mask], never BERT's 80/10/10), or
- with probability `mask_last_ratio`, a mask-last sample: only the last token (the case's label) is
  masked, which is exactly the next-click prediction of evaluation (paper section 3.6; the official
  data have one such sample per sequence beside dupe_factor=10 Cloze copies: a ratio of 1/11).
A training case is one sequence, however many of its tokens are masked: `nextclick speed` and the
progress bar count cases as for every other model (RecBole counts its interactions the same way).

Positions count back from the end of the sequence: the slot being predicted (the label in training,
the appended [mask] in evaluation) is always position 0. Right-aligned batches make this one arange,
and a prediction never depends on how much padding sits on its left.

Defaults are the official code's settings for Amazon Beauty, the paper's dataset with the shortest
sequences (mean 8.8, close to sessions' 5 to 9): run_beauty.sh (max_seq_length 50, masked_lm_prob 0.6,
batch 256, lr 1e-4) and bert_train/bert_config_beauty_64.json (hidden 64, 2 layers, 2 heads, inner 256,
hidden dropout 0.5, attention dropout 0.2, init N(0, 0.02)); optimization.py: Adam with decoupled weight
decay 0.01 (not on LayerNorm and biases), epsilon 1e-6, global gradient-norm clip 5, learning rate
decaying linearly to zero.

Preset `dsan` (`--preset dsan`) is the re-implementation DSAN's authors ran for their Table 2
(baselines/Bert4Rec.py, dsan_reference.md 5.7): no random Cloze masks (every sample is mask-last),
hidden 100, 2 layers, 4 heads, dropout 0.25, no attention dropout, Adam 1e-3 without weight decay,
batch 512, 50 epochs, the last 50 clicks, a token never attending to itself, and a head without its
LayerNorm.

Where we differ, and why:
- Sequences are the protocol's prefix cases (RecBole's augmentation) rather than whole user histories
  with sliding windows: the training data of a session split are its prefix cases, and every model
  here trains on them. An epoch sees each case once, with fresh masks (the official code's
  dupe_factor copies are the epochs here).
- The official schedule is 400,000 steps (about 236 Retailrocket epochs of prefix cases); ours is 30
  epochs, the budget of the other models here, decaying linearly per epoch to zero at `epochs`
  (`lr_schedule="constant"` keeps it flat), without the 100 warm-up steps. torch's AdamW keeps
  Adam's bias correction, which the official optimizer omits.
- Not reproduced from DSAN's re-implementation: one LayerNorm shared by both sub-layers of a block,
  dropout on Q, K and V, and the dropout around its output head.
- No repeat decoder (`repeat`): Cloze training predicts tokens at many positions, not the next click
  from one session vector, which the decoder needs; with the `dsan` preset every sample is a next-click
  prediction, but one objective per model keeps the file simple.
- Selection on validation, not on the test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch, make_batch
from nextclick.data.sessions import Cases
from nextclick.data.streams import PrefixStream, StreamOptions
from nextclick.models.config import ConfigError
from nextclick.models.layers import inner_product_cross_entropy, length_groups
from nextclick.models.neural import ClickWeights, NeuralModel, cross_entropy


@dataclass(frozen=True)
class BERT4RecConfig:
    hidden_size: int = 64  # bert_config_beauty_64.json (paper section 4.3: d = 64)
    layers: int = 2  # num_hidden_layers
    heads: int = 2  # num_attention_heads
    inner_size: int = 256  # intermediate_size (4 d)
    dropout: float = 0.5  # hidden_dropout_prob (beauty_64; the paper text says 0.1)
    attention_dropout: float = 0.2  # attention_probs_dropout_prob
    weight_std: float = 0.02  # initializer_range: every weight and embedding N(0, 0.02)
    mask_probability: float = 0.6  # masked_lm_prob (run_beauty.sh; paper Figure 4: short sequences want a large rho)
    mask_last_ratio: float = 1 / 11  # mask-last samples: 1 per dupe_factor=10 Cloze copies (gen_data_fin.py)
    max_length: int | None = 49  # max_seq_length = 50 tokens, the appended [mask] included
    mask_diagonal: bool = False  # True: a token never attends to itself (DSAN's re-implementation)
    head_norm: bool = True  # the LayerNorm of the output transform (BERT's masked-LM head); DSAN's has none
    lr: float = 1e-4  # run_beauty.sh learning_rate
    weight_decay: float = 0.01  # AdamWeightDecayOptimizer weight_decay_rate, not on LayerNorm and biases
    lr_schedule: Literal["linear", "constant"] = "linear"  # optimization.py: linear decay to zero
    max_grad_norm: float | None = 5.0  # clip_by_global_norm(clip_norm=5.0)
    batch_size: int = 256  # run_beauty.sh
    epochs: int = 30  # the budget of the other models here (the official 400,000 steps of 256 are ~236
    # Retailrocket epochs of prefix cases); the learning rate decays to zero over it; we stop early
    shuffle: bool = True


PRESETS: dict[str, dict] = {
    # DSAN's re-implementation (baselines/Bert4Rec.py, dsan_reference.md 5.7): its active grid
    "dsan": dict(hidden_size=100, layers=2, heads=4, inner_size=400, dropout=0.25, attention_dropout=0.0,
                 mask_probability=0.0, mask_last_ratio=1.0, max_length=50, mask_diagonal=True, head_norm=False,
                 lr=1e-3, weight_decay=0.0, lr_schedule="constant", max_grad_norm=None, batch_size=512, epochs=50),
}


@dataclass(frozen=True)
class MaskedBatch(Batch):
    """Training sequences with [mask] tokens: `items` (B, T) right-aligned tokens (the prefix and its label,
    some replaced by the mask token), `labels` (B,) each case's next click (unused by the loss);
    `mask_rows`, `mask_columns` (M,) where the masks are and `targets` (M,) the items they hide."""

    mask_rows: torch.Tensor
    mask_columns: torch.Tensor
    targets: torch.Tensor


def cloze_masks(real: np.ndarray, mask_probability: float, mask_last_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(B, T) bool: which tokens of right-aligned sequences (`real` (B, T) True at tokens) become [mask].
    Per row, with probability mask_last_ratio only the last token; otherwise max(1, round(n * p)) of its
    n tokens, uniformly without replacement (round half to even, as Python's round)."""
    rows, width = real.shape
    counts = real.sum(1)
    masked_count = np.maximum(1, np.rint(counts * mask_probability)).astype(np.int64)
    keys = np.where(real, rng.random((rows, width)), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = first chosen
    masks = rank < masked_count[:, None]
    last_only = rng.random(rows) < mask_last_ratio
    masks[last_only] = False
    masks[last_only, -1] = True
    return masks


class MaskedSequenceStream(PrefixStream):
    """Every training case once per epoch (PrefixStream's order), as a masked sequence: its prefix with the
    label appended, masked by `cloze_masks` with a generator drawn from (seed, epoch), so a resumed run
    sees the same masks."""

    def __init__(self, cases: Cases, options: StreamOptions, model: BERT4Rec):
        super().__init__(cases, options, make_batch)
        self.model = model

    def batches(self, epoch: int) -> Iterator[MaskedBatch]:
        """Under torchrun each process masks its own share of every global batch (PrefixStream's)."""
        rng = np.random.default_rng([self.options.seed, epoch, 3, self.options.rank])
        for chosen in self._shares(self.order(epoch)):
            yield self.model.masked_batch(self.cases_, chosen, rng)


class TransformerBlock(nn.Module):
    """A post-LN Transformer encoder block (BERT): multi-head self-attention and a GELU feed-forward
    network, each added to its input and layer-normalised."""

    def __init__(self, size: int, heads: int, inner: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.heads = heads
        self.project = nn.Linear(size, 3 * size)  # query, key, value (with biases, as BERT)
        self.output = nn.Linear(size, size)
        self.attention_norm = nn.LayerNorm(size, eps=1e-12)  # BERT's epsilon
        self.inner, self.outer = nn.Linear(size, inner), nn.Linear(inner, size)
        self.feed_forward_norm = nn.LayerNorm(size, eps=1e-12)
        self.dropout, self.attention_dropout = nn.Dropout(dropout), attention_dropout

    def forward(self, states: torch.Tensor, allowed: torch.Tensor, keep_weights: bool = False, last_only: bool = False):
        """states (B, T, d), allowed (B, 1, T or 1, T) which keys each query may read -> (B, T, d) [and the
        attention (B, heads, T, T)]. With `last_only`, only the last token's row is computed, (B, 1, d):
        all a last block has to give when only the appended [mask] is read (every key and value is read)."""
        batch, width, size = states.shape
        query, key, value = (x.view(batch, width, self.heads, -1).transpose(1, 2)
                             for x in self.project(states).chunk(3, dim=-1))  # (B, h, T, d / h) each
        if last_only:
            query, allowed, states, width = query[:, :, -1:], allowed[:, :, -1:], states[:, -1:], 1
        weights = None
        if keep_weights:
            scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
            weights = torch.softmax(scores.masked_fill(~allowed, -torch.inf), dim=-1)  # (B, h, T, T)
            attended = F.dropout(weights, self.attention_dropout, self.training) @ value
        else:  # the same computation in torch's fused kernel
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed,
                                                      dropout_p=self.attention_dropout if self.training else 0.0)
        attended = self.output(attended.transpose(1, 2).reshape(batch, width, size))
        states = self.attention_norm(states + self.dropout(attended))
        states = self.feed_forward_norm(states + self.dropout(self.outer(F.gelu(self.inner(states)))))
        return (states, weights) if keep_weights else states


class BERT4Rec(NeuralModel):
    name = "bert4rec"
    fused_adam = True
    Config = BERT4RecConfig
    presets = PRESETS
    citation = ("Sun et al., BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations "
                "from Transformer, CIKM 2019")

    def __init__(self, n_items: int, config: BERT4RecConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        if c.hidden_size % c.heads:
            raise ConfigError(f"option 'hidden_size' ({c.hidden_size}) must be a multiple of 'heads' ({c.heads})")
        self.mask_token = n_items + 1
        self.embedding = nn.Embedding(n_items + 2, c.hidden_size, padding_idx=0)  # items, then [mask]
        self.positions = nn.Embedding(self.encoder_length + 1, c.hidden_size)  # 0 = the predicted slot
        self.input_norm = nn.LayerNorm(c.hidden_size, eps=1e-12)
        self.input_dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(c.hidden_size, c.heads, c.inner_size, c.dropout,
                                                     c.attention_dropout) for _ in range(c.layers))
        self.transform = nn.Linear(c.hidden_size, c.hidden_size)  # W_P, b_P
        self.transform_norm = nn.LayerNorm(c.hidden_size, eps=1e-12) if c.head_norm else nn.Identity()
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))  # b_j (output_bias)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.normal_(0.0, c.weight_std)
                if isinstance(module, nn.Linear):
                    module.bias.zero_()
            self.embedding.weight[0].zero_()

    # -- training data --
    def training_stream(self, cases: Cases, options: StreamOptions) -> MaskedSequenceStream:
        return MaskedSequenceStream(cases, options, self)

    def masked_batch(self, cases: Cases, indices: np.ndarray, rng: np.random.Generator) -> MaskedBatch:
        """The cases at `indices` as masked training sequences (see the module docstring)."""
        plain = make_batch(cases, indices, self.encoder_length)
        tokens = torch.cat([plain.items, plain.labels.unsqueeze(1)], dim=1).numpy()  # (B, T): prefix + label
        masks = cloze_masks(tokens != 0, self.config.mask_probability, self.config.mask_last_ratio, rng)
        rows, columns = masks.nonzero()  # row-major
        targets = tokens[rows, columns]
        tokens = np.where(masks, self.mask_token, tokens)
        as_tensor = torch.from_numpy
        return MaskedBatch(items=as_tensor(tokens), lengths=plain.lengths, labels=plain.labels,
                           full_lengths=plain.full_lengths, mask_rows=as_tensor(rows.astype(np.int64)),
                           mask_columns=as_tensor(columns.astype(np.int64)), targets=as_tensor(targets))

    # -- the network --
    def _encode(self, tokens: torch.Tensor, keep_weights: bool = False, last_only: bool = False):
        """tokens (B, T) right-aligned, 0 = padding -> hidden states (B, T, d) [and the last block's
        attention (B, heads, T, T)]; with `last_only`, the last block computes the last token's row
        only: (B, 1, d)."""
        width = tokens.shape[1]
        positions = torch.arange(width - 1, -1, -1, device=tokens.device)  # the last token is position 0
        states = self.input_dropout(self.input_norm(self.embedding(tokens) + self.positions(positions)))
        real = tokens != 0
        allowed = real[:, None, None, :]  # (B, 1, 1, T): every query reads every real token
        if self.config.mask_diagonal:
            allowed = allowed & ~torch.eye(width, dtype=torch.bool, device=tokens.device)
        weights = None
        for position, block in enumerate(self.blocks):
            if keep_weights:
                states, weights = block(states, allowed, keep_weights=True)
            else:
                states = block(states, allowed, last_only=last_only and position == len(self.blocks) - 1)
        return (states[:, -1:] if last_only else states), weights

    def _encode_grouped(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """The hidden states of `_encode` (B, T, d), or with `last_only` the last token's (B, d), computed
        on the CPU per group of rows of similar length (layers.length_groups), each at its own width: a
        random batch is as wide as its longest sequence (50 tokens on Retailrocket) while the mean is about
        9, and the positions count from the end, so cutting a group's left padding changes nothing but the
        work."""
        counts = (tokens != 0).sum(1)
        groups = length_groups(counts) if tokens.device.type == "cpu" else []
        if len(groups) <= 1:
            states = self._encode(tokens, last_only=last_only)[0]
            return states[:, -1] if last_only else states
        width = tokens.shape[1]
        shape = (len(tokens), self.config.hidden_size) if last_only else (*tokens.shape, self.config.hidden_size)
        hidden = self.embedding.weight.new_zeros(shape)
        for rows in groups:
            kept = int(counts[rows].max())
            states, _ = self._encode(tokens[rows][:, width - kept:], last_only=last_only)
            if last_only:
                hidden = hidden.index_put((rows,), states[:, -1])
            else:
                columns = torch.arange(width - kept, width, device=tokens.device)
                hidden = hidden.index_put((rows[:, None], columns[None, :]), states)
        return hidden

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(M, d) hidden states -> (M, d + 1) queries: [q_i; 1], so that scores = queries @ item_vectors().T."""
        query = self.transform_norm(F.gelu(self.transform(hidden)))
        return torch.cat([query, query.new_ones(len(query), 1)], dim=1)

    def _item_table(self) -> torch.Tensor:
        """(N + 1, d + 1) [E_j; b_j] for items 0..N (row 0 padding; the [mask] row is no candidate)."""
        return torch.cat([self.embedding.weight[: self.n_items + 1], self.item_bias.unsqueeze(1)], dim=1)

    def _prefix_tokens(self, batch: Batch) -> torch.Tensor:
        """The prefix (its last `max_length` clicks) with [mask] appended: (B, L + 1)."""
        items = batch.items[:, -self.encoder_length:]
        return torch.cat([items, items.new_full((len(items), 1), self.mask_token)], dim=1)

    def forward(self, batch: Batch, labels: torch.Tensor | None = None):
        """A MaskedBatch (training): the Cloze loss over its masked tokens, scores None. A plain batch:
        the scores of the appended [mask] (B, N + 1), and with labels the next-click cross-entropy
        (computed blockwise without the scores when gradients are on)."""
        if isinstance(batch, MaskedBatch):
            width = batch.items.shape[1]
            if len(batch.mask_rows) == len(batch) and bool((batch.mask_columns == width - 1).all()):
                # mask-last samples only (the `dsan` preset): the next-click rows, as in scoring
                hidden = self._encode_grouped(batch.items, last_only=True)[batch.mask_rows]
            else:
                hidden = self._encode_grouped(batch.items)[batch.mask_rows, batch.mask_columns]
            queries = self._head(hidden)  # (M, d + 1)
            return None, inner_product_cross_entropy(queries, self._item_table(), batch.targets)
        queries = self._head(self._encode_grouped(self._prefix_tokens(batch), last_only=True))  # (B, d + 1)
        table = self._item_table()
        if labels is not None and torch.is_grad_enabled():
            return None, inner_product_cross_entropy(queries, table, labels)
        scores = queries @ table.T  # (B, N + 1)
        scores[:, 0] = -torch.inf
        return scores, cross_entropy(scores, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            batch = batch.to(self.device)
            return self._head(self._encode_grouped(self._prefix_tokens(batch), last_only=True))

    def item_vectors(self) -> torch.Tensor:
        return self._item_table().detach().clone()

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The appended [mask]'s attention over the clicks in the last block, averaged over heads."""
        if not self.config.layers:
            raise ValueError("BERT4Rec with layers=0 has no attention to explain")
        with self.evaluating():
            batch = batch.to(self.device)
            tokens = self._prefix_tokens(batch)
            _, weights = self._encode(tokens, keep_weights=True)
            pairs = weights.mean(1)  # (B, T, T) over heads, rows = queries, the [mask] last
            return ClickWeights(items=tokens[:, :-1], weights=pairs[:, -1, :-1],
                                name="attention of the appended [mask] (last block, mean over heads)",
                                pairs=pairs, pairs_name="self-attention between tokens (last block, mean over heads)",
                                extra=("[mask]",))

    # -- optimisation: the official AdamWeightDecayOptimizer and its linear decay --
    def optimizer(self) -> torch.optim.Optimizer:
        decayed, kept = [], []
        for name, parameter in self.named_parameters():
            (kept if name.endswith("bias") or "norm" in name else decayed).append(parameter)
        c = self.config
        return torch.optim.AdamW([{"params": decayed, "weight_decay": c.weight_decay},
                                  {"params": kept, "weight_decay": 0.0}], lr=c.lr, eps=1e-6, fused=True)

    def scheduler(self, optimizer: torch.optim.Optimizer):
        if self.config.lr_schedule == "constant":
            return None
        epochs = self.config.epochs
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: max(0.0, 1.0 - epoch / epochs))
