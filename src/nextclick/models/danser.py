"""DANSeR: Dual Attention with Self-Adaptive Negative Sampling for Session-Based Recommendation
(Chen, Li, Hsieh, Shei; ACM TMIS 2025, doi 10.1145/3744348).

Only the abstract is public: no code, slides or numbers (model_zoo.md 5.1). This is the design
model_zoo.md 5.2 proposes from it, every choice there marked [I]; docs/danser.md takes the abstract
sentence by sentence, with the alternatives. For a prefix x_1..x_t with distinct items V_s:
    graph  SR-GNN's session graph on V_s (layers.session_graphs: the same function as SR-GNN and GC-SAN)
    H^0    = E[V_s];  H^l = GGNN_l(A, H^(l-1)), l = 1..L, a gated graph cell with its *own* weights per
           layer, dropout on every H^l; all L + 1 states are kept ("receptive fields": l hops)
    Z^l    = H^l[alias] + P (reversed position embedding, P_1 = the last click)          (t, d) per field
    item-level attention, one per field:  e_j = v_l . sigmoid(W1_l z_j + W2_l z_t + c_l),
           alpha^l = softmax_j(e), s^l = sum_j alpha^l_j z_j
    field-level attention across fields:  u_l = tanh(W_f [s^l; z^l_t] + b_f), gamma = softmax_l(w_f . u_l)
           s = sum_l gamma_l s^l,  last = sum_l gamma_l z^l_t
    h      = W_o [s; last] + b_o                                       (hybrid, as SR-GNN / NARM)
    scores, by `normalisation` (the readings of "normalisation that incorporates user behaviour on the
    item set"):
      "session-scale"  tau_s * cos(h, E_i), tau_s = tau_0 softplus(w . phi_s + b), phi_s = the session's
                       behaviour on its item set: log t, repeat ratio 1 - n/t, evenness of its click
                       counts (entropy / log n), share of clicks on the last item          (5.2.4 a)
      "popularity"     tau_0 cos(h, E_i) - kappa log(1 + pop_i), kappa >= 0 learned        (5.2.4 b)
      "repeat"         tau_0 cos(h, E_i) + beta [i in s], and log(1 + clicks on x_j) inside e_j (5.2.4 c)
      "fixed-scale"    tau_0 cos(h, E_i)        (control: the scale without behaviour; NISER)
      "none"           <h, E_i>                 (control: SR-GNN's inner product)
    loss   = cross-entropy over all items + lambda * L_hard after `warmup_epochs`, where L_hard is
           -log(exp(z_y/T) / (exp(z_y/T) + sum_{j in N_s} exp(z_j/T))) over N_s = the K_s highest-scoring
           items that are neither the target nor in the prefix, K_s = clip(#{j : z_j >= z_y - m}, K_min,
           K_max): a session whose target is already on top gets K_min negatives, a hard one K_max
           ("self-adaptive"); chosen without gradient from the current scores (5.2.5).

Ablations (model_zoo 5.2.7 and issue 36), each a config value and a preset (`--preset NAME`):
`layers=1` (one-layer), `layer_states=last` (two-stage: intent from the final layer alone),
`field_attention=false` (mean over fields), `hard_negative_weight=0` (no hard negatives),
`adaptive_negatives=false` (always K_max), `normalisation=popularity | repeat | fixed-scale | none`.

Training (5.2.6, SR-GNN's protocol): d = 100, Adam 1e-3 x0.1 every 3 epochs, L2 1e-5 as Adam weight
decay, batch 100, whole prefixes, every parameter U(-1/sqrt(d), 1/sqrt(d)) as SR-GNN's code.

Where this differs from 5.2, and why:
- Readings (b) and (c) are written on top of the fixed-scale cosine (5.2 says only "z_i <-"), so each
  reading differs from the `fixed-scale` control by its behaviour term alone.
- The behaviour terms start neutral (tau_s = tau_0, kappa ~ 0.05, beta = 0): at step 0 every reading is
  the same model, and what each learns is its own.
- The warm-up counts epochs of the training stream (`TrainingBatch.epoch`), so a resumed run switches the
  hard negatives on at the same epoch; a batch from elsewhere (tests, a library caller) carries no
  epoch and gets the full loss.
- "Self-attention + target attention as in DSAN" (5.2.3's alternative reading of the dual attention) is
  not built yet.

The repeat/explore decoder (`repeat`, models/repeat.py; off by default) mixes the scores above (any
reading but "repeat", which is itself an answer to the same question: the two are refused together)
with a distribution over the session's own clicks; it reads h and the item table. The hard negatives
then contrast the target with the mixture's highest-scoring items off the session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.data.streams import PrefixStream, StreamOptions
from nextclick.models.config import ConfigError
from nextclick.models.layers import GatedGraphCell, SessionGraphs, session_graphs
from nextclick.models.neural import ClickWeights, NeuralModel
from nextclick.models.repeat import RepeatOutput, repeat_decoder, with_repeat_options

Normalisation = Literal["session-scale", "popularity", "repeat", "fixed-scale", "none"]


@dataclass(frozen=True)
@with_repeat_options
class DANSeRConfig:
    hidden_size: int = 100  # d (model_zoo 5.2.1: the field's fair-comparison size, SR-GNN's and DSAN's)
    layers: int = 3  # L gated graph layers, separate weights each (5.2.2: default 3, sweep 1-4; 0 = no GNN)
    layer_states: Literal["all", "last"] = "all"  # "last": intent from H^L alone, the "two-stage" methods (5.2.7)
    field_attention: bool = True  # False: fields averaged instead of attended (5.2.7)
    position_embedding: bool = True  # reversed positions, 1 = last click (5.2.1, as GCE-GNN)
    max_positions: int = 512  # position rows; clicks further back share the last row
    dropout: float = 0.1  # on every H^l (5.2.2: 0.1-0.3; model_zoo 6: per-layer weights overfit Y1/64)
    normalisation: Normalisation = "session-scale"  # 5.2.4 reading (a); "popularity" (b), "repeat" (c)
    scale: float = 16.0  # tau_0 of the cosine readings (5.2.4: 12-20; NISER+ about 16, DSAN's w_k 20)
    hard_negative_weight: float = 0.5  # lambda (5.2.5; sweep 0.1, 0.5, 1); 0 = no hard negatives
    hard_negative_margin: float = 0.0  # m: items within m of the target's score count as hard (5.2.5)
    hard_negative_temperature: float = 1.0  # T (5.2.5)
    min_negatives: int = 5  # K_min (5.2.5)
    max_negatives: int = 50  # K_max (5.2.5)
    adaptive_negatives: bool = True  # False: always K_max negatives per session (the fixed-K ablation, 5.2.7)
    warmup_epochs: int = 1  # epochs of cross-entropy alone before the hard negatives (5.2.5)
    max_length: int | None = None  # whole prefixes, as SR-GNN (None: the last 512 clicks)
    lr: float = 1e-3  # 5.2.6, SR-GNN's
    lr_decay_every: int = 3
    lr_decay: float = 0.1
    weight_decay: float = 1e-5  # SR-GNN's L2 as Adam weight decay (embeddings included)
    amsgrad: bool = False
    batch_size: int = 100
    epochs: int = 30  # we stop early on validation
    shuffle: bool = True


# the ablations of issue 36 by name: `nextclick bench danser --preset two-stage`
PRESETS: dict[str, dict] = {
    "one-layer": {"layers": 1},
    "two-stage": {"layer_states": "last"},
    "no-field-attention": {"field_attention": False},
    "no-hard-negatives": {"hard_negative_weight": 0.0},
    "fixed-negatives": {"adaptive_negatives": False},
    "popularity": {"normalisation": "popularity"},
    "repeat": {"normalisation": "repeat"},
    "fixed-scale": {"normalisation": "fixed-scale"},
    "inner-product": {"normalisation": "none"},
}


# -- the training stream: batches that know their epoch (the hard negatives' warm-up) --

@dataclass(frozen=True)
class TrainingBatch(Batch):
    """A training batch with the epoch it belongs to (0-based)."""

    epoch: int = 0


class EpochTaggedStream:
    """The default prefix stream, each batch tagged with its epoch."""

    def __init__(self, inner: PrefixStream):
        self.inner = inner

    def cases(self, epoch: int) -> int:
        return self.inner.cases(epoch)

    def batches(self, epoch: int) -> Iterator[TrainingBatch]:
        for batch in self.inner.batches(epoch):
            yield TrainingBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)}, epoch=epoch)


# -- self-adaptive hard negatives (written here first; a shared sampler would go to layers.py) --

@torch.no_grad()
def hard_negatives(scores: torch.Tensor, labels: torch.Tensor, excluded: torch.Tensor, *, margin: float,
                   min_count: int, max_count: int, adaptive: bool = True,
                   most_excluded: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard negatives of each session: its highest-scoring items that are not `excluded` (the target
    and the prefix's items, (B, N + 1) bool, column 0 too), K_s of them, K_s = clip(#{j not excluded : z_j
    >= z_y - margin}, min_count, max_count) when `adaptive`, else max_count. Returns (items (B, K), kept
    (B, K) bool), K = min(max_count, N), best first; fewer than K_s are kept only where fewer items are
    allowed. `most_excluded` bounds the excluded items of a row (default: counted).

    One top-k over the raw scores, wide enough to hold every excluded item and still max_count allowed
    ones, gives both the negatives and the count up to max_count (all the clip can use), without a masked
    copy of the (B, N + 1) scores or a pass to count them (35 -> 20 ms per Retailrocket batch of 100 on one
    core; most of it is the top-k itself)."""
    if most_excluded is None:
        most_excluded = int(excluded.sum(1).max())
    size = min(max_count, scores.shape[1] - 1)
    width = min(size + most_excluded, scores.shape[1])
    values, candidates = torch.topk(scores, width, dim=1)  # (B, W) best first
    allowed = ~excluded.gather(1, candidates) & torch.isfinite(values)  # (B, W)
    # the allowed candidates first, in score order (a stable sort on "excluded")
    order = torch.sort((~allowed).to(torch.uint8), dim=1, stable=True).indices[:, :size]  # (B, K)
    items, values, allowed = candidates.gather(1, order), values.gather(1, order), allowed.gather(1, order)
    if adaptive:
        target = scores.gather(1, labels.unsqueeze(1))  # (B, 1)
        hard = (allowed & (values >= target - margin)).sum(dim=1, keepdim=True)  # min(#hard, K)
        count = hard.clamp(min=min_count, max=max_count)
    else:
        count = torch.full_like(labels, max_count).unsqueeze(1)
    kept = (torch.arange(size, device=scores.device) < count) & allowed
    return items, kept


def hard_negative_loss(scores: torch.Tensor, labels: torch.Tensor, negatives: torch.Tensor, kept: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Mean over sessions of -log(exp(z_y/T) / (exp(z_y/T) + sum of exp(z_j/T) over the kept negatives))."""
    target = scores.gather(1, labels.unsqueeze(1))  # (B, 1)
    negative = scores.gather(1, negatives).masked_fill(~kept, -torch.inf)  # (B, K)
    logits = torch.cat([target, negative], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


# -- the model --

@dataclass
class Reading:
    """One batch through the encoder: what scoring and explanations need."""

    session: torch.Tensor  # (B, d) h
    click_weight: torch.Tensor  # (c,) sum_l gamma_l alpha^l_j of each real click, row-major
    field_weight: torch.Tensor  # (F, B) gamma
    behaviour: torch.Tensor  # (B, 4) phi_s
    rows: torch.Tensor  # (c,) batch row of each real click
    columns: torch.Tensor  # (c,) its column


class DANSeR(NeuralModel):
    name = "danser"
    fused_adam = True
    Config = DANSeRConfig
    presets = PRESETS
    citation = ("Chen, Li, Hsieh, Shei, Dual Attention with Self-Adaptive Negative Sampling for Session-Based "
                "Recommendation, ACM TMIS 2025 (designed from its abstract)")

    def __init__(self, n_items: int, config: DANSeRConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        if c.min_negatives > c.max_negatives:
            raise ConfigError(f"option 'min_negatives' must be at most max_negatives ({c.max_negatives}); "
                              f"got {c.min_negatives!r}")
        if c.repeat != "off" and c.normalisation == "repeat":
            raise ConfigError("option 'repeat' (the repeat/explore decoder) and normalisation=repeat are two "
                              "answers to the same question: give one of them")
        d = c.hidden_size
        n_fields = c.layers + 1 if c.layer_states == "all" else 1
        self.embedding = nn.Embedding(n_items + 1, d)
        self.cells = nn.ModuleList(GatedGraphCell(d) for _ in range(c.layers))  # one per receptive field
        self.dropout = nn.Dropout(c.dropout)
        self.positions = nn.Embedding(c.max_positions, d) if c.position_embedding else None
        # item-level attention, one set of weights per field: e_j = v . sigmoid(W1 z_j + W2 z_t + c)
        self.attention_each = nn.Parameter(torch.empty(n_fields, d, d))  # W1_l
        self.attention_last = nn.Parameter(torch.empty(n_fields, d, d))  # W2_l
        self.attention_bias = nn.Parameter(torch.empty(n_fields, 1, d))  # c_l
        self.attention_vector = nn.Parameter(torch.empty(n_fields, 1, d))  # v_l
        self.click_count = nn.Parameter(torch.empty(d)) if c.normalisation == "repeat" else None  # count feature
        # field-level attention: gamma = softmax_l(w_f . tanh(W_f [s^l; z^l_t] + b_f))
        self.field = nn.Linear(2 * d, d) if c.field_attention and n_fields > 1 else None
        self.field_vector = nn.Linear(d, 1, bias=False) if self.field is not None else None
        self.hybrid = nn.Linear(2 * d, d)  # W_o, b_o
        self.behaviour_scale = nn.Linear(4, 1) if c.normalisation == "session-scale" else None  # tau_s head
        self.popularity_weight = nn.Parameter(torch.empty(())) if c.normalisation == "popularity" else None
        self.repeat_bonus = nn.Parameter(torch.empty(())) if c.normalisation == "repeat" else None
        # training clicks per item (prepare); a buffer in every reading so checkpoints have one layout
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)  # SR-GNN's reset_parameters, every parameter
            # behaviour terms start neutral: every reading begins as the fixed-scale model
            if self.behaviour_scale is not None:
                self.behaviour_scale.weight.zero_()
                self.behaviour_scale.bias.fill_(math.log(math.e - 1))  # softplus = 1: tau_s = tau_0
            if self.popularity_weight is not None:
                self.popularity_weight.fill_(-3.0)  # kappa = softplus(-3) ~ 0.05
            if self.repeat_bonus is not None:
                self.repeat_bonus.zero_()
        self.repeat_decoder = repeat_decoder(c, d, d)  # after the model's own init: off leaves it untouched

    def prepare(self, train: Sessions) -> None:
        counts = np.bincount(train.items, minlength=self.n_items + 1).astype(np.float32)
        counts[0] = 0.0
        self.popularity.copy_(torch.from_numpy(counts[: self.n_items + 1]))

    def training_stream(self, cases: Cases, options: StreamOptions) -> EpochTaggedStream:
        return EpochTaggedStream(PrefixStream(cases, options, self.collate))

    # -- encoder --
    def _fields(self, graphs: SessionGraphs) -> torch.Tensor:
        """(F, n, d): the node states the readout reads, H^0..H^L or H^L alone."""
        hidden = self.dropout(self.embedding(graphs.node_items))  # H^0 (n, d)
        states = [hidden]
        for cell in self.cells:
            hidden = self.dropout(cell(graphs, hidden))  # H^l: l hops of transitions
            states.append(hidden)
        return torch.stack(states if self.config.layer_states == "all" else states[-1:])

    def _read(self, batch: Batch) -> Reading:
        items = batch.items
        graphs = session_graphs(items)  # SR-GNN's graph, the same function
        fields_ = self._fields(graphs)  # (F, n, d)
        n_fields, batch_size, width = fields_.shape[0], items.shape[0], items.shape[1]
        rows, columns = (items != 0).nonzero(as_tuple=True)  # the real clicks only (c,): no padding enters
        nodes = graphs.click_node[rows, columns]  # (c,)
        last_nodes = graphs.click_node[:, -1]  # (B,) right-aligned: the last click is the last column
        clicks = fields_[:, nodes]  # (F, c, d)
        last = fields_[:, last_nodes]  # (F, B, d)
        if self.positions is not None:  # reversed: the last click is position 0 in every row, padding or not
            back = (width - 1 - columns).clamp(max=self.config.max_positions - 1)
            clicks = clicks + self.positions(back)
            last = last + self.positions.weight[0]

        # in-session click counts: the behaviour features, and the repeat reading's attention feature
        counts = torch.bincount(nodes, minlength=len(graphs.node_items)).float()  # (n,) clicks per node
        length = torch.bincount(rows, minlength=batch_size).float().clamp(min=1)  # (B,) t
        behaviour = self._behaviour(graphs, counts, length, last_nodes, batch_size)  # (B, 4)

        # item-level attention inside each field, softmax over each row's clicks
        hidden = clicks @ self.attention_each + (last @ self.attention_last)[:, rows] + self.attention_bias
        if self.click_count is not None:
            hidden = hidden + torch.log1p(counts[nodes]).unsqueeze(1) * self.click_count  # (F, c, d)
        energy = (torch.sigmoid(hidden) * self.attention_vector).sum(-1)  # (F, c)
        weights = segment_softmax(energy, rows, batch_size)  # (F, c) alpha^l
        per_field = clicks.new_zeros(n_fields, batch_size, clicks.shape[-1]).index_add(
            1, rows, weights.unsqueeze(-1) * clicks)  # (F, B, d) s^l

        # field-level attention across fields
        if self.field is not None:
            field_energy = self.field_vector(torch.tanh(self.field(torch.cat([per_field, last], dim=-1))))
            field_weight = torch.softmax(field_energy.squeeze(-1), dim=0)  # (F, B) gamma
        else:
            field_weight = per_field.new_full((n_fields, batch_size), 1.0 / n_fields)
        session = (field_weight.unsqueeze(-1) * per_field).sum(0)  # (B, d) s
        current = (field_weight.unsqueeze(-1) * last).sum(0)  # (B, d)
        session = self.hybrid(torch.cat([session, current], dim=1))  # h
        click_weight = (field_weight[:, rows] * weights).sum(0)  # (c,)
        return Reading(session, click_weight, field_weight, behaviour, rows, columns)

    @staticmethod
    def _behaviour(graphs: SessionGraphs, counts: torch.Tensor, length: torch.Tensor, last_nodes: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
        """phi_s (B, 4): log t, repeat ratio 1 - n/t, evenness of the click counts over the session's n
        distinct items (entropy / log n; 1 when n = 1), share of the clicks on the last item."""
        distinct = torch.bincount(graphs.node_session, minlength=batch_size).float().clamp(min=1)  # (B,) n
        share = counts / length[graphs.node_session]  # (n,) p_k
        entropy = counts.new_zeros(batch_size).index_add(0, graphs.node_session, -share * torch.log(share.clamp(min=1e-12)))
        evenness = torch.where(distinct > 1, entropy / torch.log(distinct.clamp(min=2)), torch.ones_like(entropy))
        return torch.stack([torch.log(length), 1 - distinct / length, evenness, counts[last_nodes] / length], dim=1)

    # -- scores --
    def _query(self, reading: Reading) -> torch.Tensor:
        """(B, d): the session side of the inner product (h itself, or scaled to length tau)."""
        c = self.config
        if c.normalisation == "none":
            return reading.session
        scale = c.scale
        if self.behaviour_scale is not None:
            scale = c.scale * F.softplus(self.behaviour_scale(reading.behaviour))  # (B, 1) tau_s
        return scale * normalise_rows(reading.session)

    def _item_table(self) -> torch.Tensor:
        return self.embedding.weight if self.config.normalisation == "none" else normalise_rows(self.embedding.weight)

    def _log_popularity(self) -> torch.Tensor:
        return torch.log1p(self.popularity)  # (N + 1,)

    def _scores(self, batch: Batch, reading: Reading) -> torch.Tensor:
        scores = self._query(reading) @ self._item_table().T  # (B, N + 1)
        if self.popularity_weight is not None:
            scores = scores - F.softplus(self.popularity_weight) * self._log_popularity()
        if self.repeat_bonus is not None:
            scores = scores + self.repeat_bonus * in_session(batch.items, self.n_items)
        return scores

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.config
        warming_up = isinstance(batch, TrainingBatch) and batch.epoch < c.warmup_epochs
        hard = labels is not None and c.hard_negative_weight > 0 and not warming_up
        if self.repeat_decoder is not None:
            # the hard negatives need every item's score; the decoder's loss alone does not
            decoded = self._decoded(batch, labels, need_scores=True if hard else None)
            scores, loss = decoded.scores, decoded.loss
        else:
            scores = self._scores(batch, self._read(batch))
            scores[:, 0] = -torch.inf  # padding is no candidate
            loss = None if labels is None else F.cross_entropy(scores, labels)
        if hard:
            excluded = in_session(batch.items, self.n_items, torch.bool)
            excluded.scatter_(1, labels.unsqueeze(1), True)
            excluded[:, 0] = True
            negatives, kept = hard_negatives(scores.detach(), labels, excluded, margin=c.hard_negative_margin,
                                             min_count=c.min_negatives, max_count=c.max_negatives,
                                             adaptive=c.adaptive_negatives)
            loss = loss + c.hard_negative_weight * hard_negative_loss(scores, labels, negatives, kept,
                                                                      c.hard_negative_temperature)
        return scores, loss

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None, need_scores: bool | None = None
                 ) -> RepeatOutput:
        """The repeat/explore decoder (config `repeat`) on the model's scores, written as an inner product."""
        reading = self._read(batch)
        return self.repeat_decoder(self._inner_query(reading), self._inner_table(), reading.session,
                                   self.embedding.weight, batch.items, labels, need_scores=need_scores)

    # -- inner products (every reading but "repeat", whose bonus depends on the session's items) --
    # Serving and the contract tests ask `hasattr(model, "query_vectors")`. The repeat reading's scores are
    # not an inner product of a session vector with fixed item vectors, so there the properties raise
    # AttributeError and the model has neither.
    @property
    def query_vectors(self):
        if self.config.normalisation == "repeat":
            raise AttributeError("the repeat reading's scores are not inner products")
        return self._query_vectors

    @property
    def item_vectors(self):
        if self.config.normalisation == "repeat":
            raise AttributeError("the repeat reading's scores are not inner products")
        return self._item_vectors

    def _query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self._inner_query(self._read(batch.to(self.device)))

    def _item_vectors(self) -> torch.Tensor:
        with torch.no_grad():
            return self._inner_table().detach().clone()

    def _inner_query(self, reading: Reading) -> torch.Tensor:
        """The session side of the scores as an inner product: [tau h/|h|, -kappa] . [E_i/|E_i|, log(1 + pop_i)]
        in the popularity reading (the extra column), the query alone in the others but "repeat"."""
        query = self._query(reading)
        if self.popularity_weight is None:
            return query
        return torch.cat([query, (-F.softplus(self.popularity_weight)).expand(len(query), 1)], dim=1)

    def _inner_table(self) -> torch.Tensor:
        """The item side of that inner product."""
        table = self._item_table()
        if self.popularity_weight is None:
            return table
        return torch.cat([table, self._log_popularity().unsqueeze(1)], dim=1)

    def click_weights(self, batch: Batch) -> ClickWeights:
        """Each click's weight in the session vector, sum_l gamma_l alpha^l_j (sums to 1), with the field
        weights gamma_l (and tau_s in the session-scale reading) per session."""
        with self.evaluating():
            batch = batch.to(self.device)
            reading = self._read(batch)
            weights = torch.zeros(batch.items.shape, device=batch.items.device)  # (B, L), 0 at padding
            weights[reading.rows, reading.columns] = reading.click_weight
            first = 0 if self.config.layer_states == "all" else self.config.layers
            scalars = {f"field_weight_{first + l}": w for l, w in enumerate(reading.field_weight)}
            if self.behaviour_scale is not None:
                scalars["scale"] = self.config.scale * F.softplus(self.behaviour_scale(reading.behaviour)).squeeze(1)
            scalars.update(self.repeat_scalars(batch))
            return ClickWeights(items=batch.items, weights=weights, scalars=scalars,
                                name="item-level attention weighted by field-level attention")


class _NormaliseRows(torch.autograd.Function):
    """x / |x| per row, with the backward in closed form: dx = (g - y (y . g)) / |x|. Half the passes over
    the item table of F.normalize's autograd (22 vs 37 ms for Retailrocket's table on one core), which
    every training step of a cosine reading pays."""

    @staticmethod
    def forward(ctx, rows):
        inverse = rows.norm(dim=1, keepdim=True).clamp(min=1e-12).reciprocal()  # F.normalize's eps
        unit = rows * inverse
        ctx.save_for_backward(unit, inverse)
        return unit

    @staticmethod
    def backward(ctx, grad):
        unit, inverse = ctx.saved_tensors
        return (grad - unit * (unit * grad).sum(1, keepdim=True)) * inverse


def normalise_rows(rows: torch.Tensor) -> torch.Tensor:
    """(n, d) rows scaled to unit length (zero rows stay zero), as F.normalize(rows, dim=1)."""
    return _NormaliseRows.apply(rows)


def segment_softmax(energy: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Softmax of (F, c) energies over the clicks of each batch row (`rows` (c,), ascending or not)."""
    index = rows.expand_as(energy)
    peak = energy.new_full((energy.shape[0], n_rows), -torch.inf).scatter_reduce(1, index, energy.detach(), "amax")
    exponent = torch.exp(energy - peak.gather(1, index))  # the shift cancels; detached, it costs no gradient
    total = energy.new_zeros(energy.shape[0], n_rows).index_add(1, rows, exponent)
    return exponent / total.gather(1, index)


def in_session(items: torch.Tensor, n_items: int, dtype: torch.dtype = torch.float) -> torch.Tensor:
    """(B, N + 1), 1 (True) where the item occurs in the row's clicks (column 0 where a row has padding)."""
    return items.new_zeros(items.shape[0], n_items + 1, dtype=dtype).scatter_(1, items, 1)
