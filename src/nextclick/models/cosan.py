"""CoSAN: Collaborative Self-Attention Network for Session-based Recommendation (Luo, Zhao, Liu, Wang, Sheng,
Fang, Zhou, Cui; IJCAI 2020), as DSAN's authors re-implemented it for their Table 2 (`baselines/CoSAN/*`,
dsan_reference.md 5.8; model_zoo.md 2.16), the row we compare with. No official code was found.

What it computes, for a prefix x_1..x_t:
    neighbours  for each click j: the k training sessions that contain x_j and are most similar to the
                prefix up to j, by cosine between item sets, |A_j & set(c)| / sqrt(|A_j| |set(c)|),
                A_j = set(x_1..x_j) (no future clicks)
    x~_j = E[x_j] + alpha * sum_n w_jn S[n_jn]        w = the raw similarities, S a learned table with one
                                                     row per training session ("collaborative items")
    2 self-attention blocks (DSAN's `Encoder`), one LayerNorm per block serving both sub-layers, each
        H = LN(H);  Q = dropout(ReLU(W_q H)), K = W_k H, V = W_v H (no biases), single head
        H = H + dropout(dropout(softmax(Q K^T / sqrt(d), padding keys masked)) V)
        H = H + dropout(W_2 dropout(ReLU(W_1 LN(H)) + b_1) + b_2)
    s = H_t (the last click);  z_i = <s, E[i]>;  softmax cross-entropy over items 1..N.

The neighbour index (`prepare`) is built from the training sessions the model is given, never from
validation or test sessions: for each item, the training sessions containing it, and for every training
click its k neighbours (precomputed once; a training case reads those of its clicks). A training
click never retrieves its own session, which holds the case's label (DSAN's dataloader lets it: target
leakage in training). Validation and test prefixes compute their neighbours from the index when scored.
The index and the session table are tensors of the checkpoint, sized by the training data
(`rows_from_data`: checkpoint.load accepts any number of rows for them, and `load_state_tensors` resizes
the model to what it reads).

Defaults are DSAN's settings for Retailrocket (train.py and its comments): d = 100, k = 10, alpha = 0.5,
dropout 0.3, the last 50 clicks, Adam (amsgrad) lr 1e-3, weight decay 1e-4, batch 128, 30 epochs;
`--preset diginetica`: k = 5, dropout 0.25, the last 70 clicks. Initialisation: torch's defaults
(dsan_reference.md records none for this code).

Where we differ, and why:
- The session table has one row per training session; DSAN's has one per training prefix, of which
  only each session's longest is ever retrieved (the same rows in use).
- Training clicks take their neighbours from the prefix from the session start; a scored prefix longer
  than `max_length` from its last `max_length` clicks (what the batch holds). They differ only for
  prefixes longer than 50 clicks.
- Ties in similarity go to the most recent session (DSAN's order is its dataloader's).
- `sample_size` > 0 keeps only each item's most recent sessions as candidates, and counts overlaps through
  those lists (faster on Yoochoose, whose most popular item is in 3,642 sessions); 0, the default, is
  DSAN's exact search.
- The paper's concatenation of the collaborative and the current session representation is not used
  (DSAN's code defines the layer but never calls it).
- Selection on validation, not on the test set (DSAN's code keeps the best test epoch).
The repeat/explore decoder (`repeat`) reads s and the item table, as for the other inner-product models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batches import Batch, make_batch
from nextclick.data.sessions import Cases, Sessions
from nextclick.models.neural import ClickWeights, ItemEmbeddingModel
from nextclick.models.repeat import repeat_decoder, with_repeat_options


@dataclass(frozen=True)
@with_repeat_options
class CoSANConfig:
    embedding_size: int = 100  # d (train.py's comments; its committed grid tries 200 and 300)
    neighbours: int = 10  # k neighbour sessions per click (train.py: 10 Retailrocket, 5 Diginetica)
    neighbour_weight: float = 0.5  # alpha on the weighted neighbour sessions
    sample_size: int = 0  # candidate sessions per item, the most recent; 0 = all (DSAN)
    blocks: int = 2  # self-attention blocks
    dropout: float = 0.3  # 0.3 Retailrocket, 0.25 Diginetica (train.py's comments)
    max_length: int | None = 50  # session_length: 50 Retailrocket, 70 Diginetica (the last clicks)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    amsgrad: bool = True
    batch_size: int = 128
    epochs: int = 30  # we stop early on validation
    shuffle: bool = True


PRESETS: dict[str, dict] = {
    "retailrocket": dict(neighbours=10, dropout=0.3, max_length=50),  # the defaults
    "diginetica": dict(neighbours=5, dropout=0.25, max_length=70),
}

# pairs (click, candidate session) one step of the neighbour search holds: bounds its memory (~100 MB)
PAIRS_PER_STEP = 2_000_000


@dataclass(frozen=True)
class NeighbourBatch(Batch):
    """A training batch with the neighbours of every click: `neighbours` (B, L, k) session rows (1-based,
    0 = none) and `similarities` (B, L, k) their weights (0 where none)."""

    neighbours: torch.Tensor
    similarities: torch.Tensor


@dataclass(frozen=True)
class SessionIndex:
    """For each item, the training sessions containing it (ascending, i.e. oldest first), and each
    session's number of distinct items."""

    offsets: np.ndarray  # (n_items + 2,) int64: sessions of item i at sessions[offsets[i]:offsets[i + 1]]
    sessions: np.ndarray  # (entries,) int64
    sizes: np.ndarray  # (n_sessions,) int64

    @classmethod
    def build(cls, train: Sessions, n_items: int) -> SessionIndex:
        session = train.session_of_click()
        pairs = np.unique(train.items.astype(np.int64) * len(train) + session)  # by item, then session
        items, sessions = pairs // len(train), pairs % len(train)
        offsets = np.zeros(n_items + 2, dtype=np.int64)
        np.cumsum(np.bincount(items, minlength=n_items + 1), out=offsets[1:])
        return cls(offsets, sessions, np.bincount(sessions, minlength=len(train)).astype(np.int64))


def _ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, rank) of every element of consecutive runs of `counts` elements."""
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(len(owner)) - starts[owner]


def session_neighbours(items: np.ndarray, index: SessionIndex, k: int, sample_size: int = 0,
                       own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar training sessions of every click of right-aligned prefixes `items` (R, W)
    (0 = padding): (R, W, k) session rows (1-based, 0 = none) and (R, W, k) cosine similarities between
    the prefix's item set up to the click and the session's, among the sessions containing the click's
    item (its last `sample_size` when > 0). `own` (R,): a session each row may not retrieve (-1: none).
    Vectorised: every (click, candidate) pair at once, overlaps counted by binary search; rows in groups of
    about PAIRS_PER_STEP pairs, so memory stays bounded whatever the batch."""
    per_item = np.diff(index.offsets)
    if sample_size:
        per_item = np.minimum(per_item, sample_size)
    cost = per_item[items].sum(1) if items.size else np.zeros(len(items), dtype=np.int64)  # padding (item 0): none
    group = np.cumsum(cost) // PAIRS_PER_STEP
    if len(items) > 1 and group[-1] > group[0]:
        parts = [session_neighbours(items[group == g], index, k, sample_size, None if own is None else own[group == g])
                 for g in np.unique(group)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    rows, width = items.shape
    neighbours = np.zeros((rows, width, k), dtype=np.int64)
    similarities = np.zeros((rows, width, k), dtype=np.float32)
    row, column = np.nonzero(items)  # real clicks, row-major: columns ascend within a row
    if len(row) == 0:
        return neighbours, similarities
    item = items[row, column]
    n_sessions = len(index.sizes)
    # first occurrence of each item in its row: the clicks that grow the prefix's item set
    _, first = np.unique(row * (items.max() + 1) + item, return_index=True)
    is_first = np.zeros(len(row), dtype=bool)
    is_first[first] = True
    set_size = np.zeros_like(items)
    set_size[row, column] = is_first
    set_size = np.cumsum(set_size, axis=1)[row, column]  # |A_j| of every click
    start, end = index.offsets[item], index.offsets[item + 1]
    if sample_size:
        start = np.maximum(start, end - sample_size)
    count = end - start
    # entries (row, session, column) for every first occurrence: "this prefix has this session's item
    # from this column on"; the overlap of click j with session c = entries of (row, c) at columns <= j
    entry_click, entry_rank = _ragged(count * is_first)
    entry_session = index.sessions[start[entry_click] + entry_rank]
    entry_keys = np.sort((row[entry_click] * n_sessions + entry_session) * width + column[entry_click])
    # candidates: the sessions holding each click's item
    pair_click, pair_rank = _ragged(count)
    candidate = index.sessions[start[pair_click] + pair_rank]
    if own is not None:
        keep = candidate != own[row[pair_click]]
        pair_click, candidate = pair_click[keep], candidate[keep]
    base = (row[pair_click] * n_sessions + candidate) * width
    overlap = (np.searchsorted(entry_keys, base + column[pair_click], side="right")
               - np.searchsorted(entry_keys, base, side="left"))
    similarity = overlap / np.sqrt(set_size[pair_click] * index.sizes[candidate])
    # by click, most similar first, ties to the most recent session: the pairs come by click and, within
    # one, by ascending session; reversed, one stable sort on (click, 1 - similarity) gives that order
    pair_click, candidate, similarity = pair_click[::-1], candidate[::-1], similarity[::-1]
    order = np.argsort(pair_click * 2.0 + (1.0 - similarity), kind="stable")
    pair_click, candidate, similarity = pair_click[order], candidate[order], similarity[order]
    group_start = np.searchsorted(pair_click, pair_click, side="left")
    rank = np.arange(len(pair_click)) - group_start
    top = rank < k
    neighbours[row[pair_click[top]], column[pair_click[top]], rank[top]] = candidate[top] + 1
    similarities[row[pair_click[top]], column[pair_click[top]], rank[top]] = similarity[top]
    return neighbours, similarities


def training_neighbours(train: Sessions, index: SessionIndex, k: int, sample_size: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours of every training click (n_clicks, k) and their similarities, each session's own
    excluded, computed over sessions grouped by length in steps of about PAIRS_PER_STEP pairs."""
    lengths = train.lengths
    per_item = np.diff(index.offsets)
    if sample_size:
        per_item = np.minimum(per_item, sample_size)
    cost = np.add.reduceat(per_item[train.items], train.offsets[:-1]) if len(train.items) else np.zeros(0)
    cost = np.where(lengths > 0, cost, 0)
    order = np.argsort(lengths, kind="stable")
    neighbours = np.zeros((len(train.items), k), dtype=np.int32)
    similarities = np.zeros((len(train.items), k), dtype=np.float32)
    step_of = np.cumsum(cost[order]) // PAIRS_PER_STEP
    for step in np.unique(step_of):
        chosen = order[step_of == step]
        chosen = chosen[lengths[chosen] > 0]
        if len(chosen) == 0:
            continue
        part = train.select(chosen)
        rows = make_batch(Cases(part, np.arange(len(chosen)), part.lengths - 1)).items.numpy()
        rows = np.concatenate([rows, part.items[part.offsets[1:] - 1].reshape(-1, 1)], axis=1)  # whole sessions
        found, weights = session_neighbours(rows, index, k, sample_size, own=chosen)
        real = rows != 0
        clicks = (train.offsets[chosen][:, None] + np.cumsum(real, axis=1) - 1)[real]  # flat index of each click
        neighbours[clicks], similarities[clicks] = found[real], weights[real]
    return neighbours, similarities


class CollaborativeBlock(nn.Module):
    """One encoder layer of DSAN's CoSAN (`Encoder`): the input is layer-normalised first and the residuals
    add to the normalised input; one LayerNorm serves both sub-layers; single-head attention with ReLU
    queries and no biases on Q, K, V; dropout on the queries, the attention weights, the attention output,
    inside the feed-forward network and on its output."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.query = nn.Linear(size, size, bias=False)
        self.key, self.value = nn.Linear(size, size, bias=False), nn.Linear(size, size, bias=False)
        self.inner, self.outer = nn.Linear(size, size), nn.Linear(size, size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, keep_weights: bool = False, last_only: bool = False):
        """states (B, L, d), mask (B, L) real clicks -> (B, L, d) [and the attention (B, L, L)]. With
        `last_only`, only the last click's row is computed, (B, 1, d): all the last block has to give
        (every key and value is still read)."""
        states = self.norm(states)
        rows = states[:, -1:] if last_only else states
        query = self.dropout(F.relu(self.query(rows)))
        scores = query @ self.key(states).transpose(1, 2) / math.sqrt(states.shape[-1])  # (B, L or 1, L)
        weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), -torch.inf), dim=-1)
        rows = rows + self.dropout(self.dropout(weights) @ self.value(states))
        feed_forward = self.outer(self.dropout(F.relu(self.inner(self.norm(rows)))))
        rows = rows + self.dropout(feed_forward)
        return (rows, weights) if keep_weights else rows


class CoSAN(ItemEmbeddingModel):
    name = "cosan"
    fused_adam = True
    Config = CoSANConfig
    presets = PRESETS
    citation = "Luo et al., Collaborative Self-Attention Network for Session-based Recommendation, IJCAI 2020"
    # tensors sized by the training sessions, not by the catalogue (checkpoint.load checks their other dimensions)
    rows_from_data = ("session_table.weight", "index_item_sessions", "index_session_sizes")

    def __init__(self, n_items: int, config: CoSANConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        self.embedding = nn.Embedding(n_items + 1, c.embedding_size, padding_idx=0)
        self.session_table = nn.Embedding(1, c.embedding_size, padding_idx=0)  # S: row 0 = none; `prepare` sizes it
        self.blocks = nn.ModuleList(CollaborativeBlock(c.embedding_size, c.dropout) for _ in range(c.blocks))
        # the index as tensors (checkpoints): the sessions of each item, each session's number of distinct items
        self.register_buffer("index_item_offsets", torch.zeros(n_items + 2, dtype=torch.int64))
        self.register_buffer("index_item_sessions", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("index_session_sizes", torch.zeros(0, dtype=torch.int64))
        self.repeat_decoder = repeat_decoder(c, c.embedding_size, c.embedding_size)  # after the model's own init
        self._index: SessionIndex | None = None
        self._training_neighbours: tuple[Sessions, np.ndarray, np.ndarray] | None = None

    # -- the neighbour index --
    def prepare(self, train: Sessions) -> None:
        """Index the training sessions, size the session table to them, and find every training click's
        neighbours (its own session excluded)."""
        c = self.config
        index = SessionIndex.build(train, self.n_items)
        self._resize(len(train), len(index.sessions))
        device = self.embedding.weight.device
        self.index_item_offsets = torch.from_numpy(index.offsets).to(device)
        self.index_item_sessions = torch.from_numpy(index.sessions).to(device)
        self.index_session_sizes = torch.from_numpy(index.sizes).to(device)
        self._index = index
        neighbours, similarities = training_neighbours(train, index, c.neighbours, c.sample_size)
        self._training_neighbours = (train, neighbours, similarities)

    def _resize(self, sessions: int, entries: int) -> None:
        """A session table of `sessions` + 1 rows (fresh) and index buffers of that many sessions and entries."""
        device = self.embedding.weight.device
        self.session_table = nn.Embedding(sessions + 1, self.config.embedding_size, padding_idx=0).to(device)
        self.index_item_sessions = torch.zeros(entries, dtype=torch.int64, device=device)
        self.index_session_sizes = torch.zeros(sessions, dtype=torch.int64, device=device)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Sized first to the tables read (a checkpoint's training sessions), then loaded."""
        sessions = tensors["index_session_sizes"].shape[0] if "index_session_sizes" in tensors else 0
        entries = tensors["index_item_sessions"].shape[0] if "index_item_sessions" in tensors else 0
        if "session_table.weight" in tensors and tensors["session_table.weight"].shape[0] != sessions + 1:
            raise ValueError(f"the session table has {tensors['session_table.weight'].shape[0]} rows; "
                             f"the index's {sessions} sessions need {sessions + 1}")
        self._resize(sessions, entries)
        super().load_state_tensors(tensors)
        self._index, self._training_neighbours = None, None

    def _session_index(self) -> SessionIndex:
        if self._index is None:
            self._index = SessionIndex(self.index_item_offsets.cpu().numpy(), self.index_item_sessions.cpu().numpy(),
                                       self.index_session_sizes.cpu().numpy())
        return self._index

    def collate(self, cases: Cases, indices: np.ndarray) -> Batch:
        """A training batch with each click's precomputed neighbours (when `cases` are over the sessions
        `prepare` indexed; other cases get theirs from the index)."""
        batch = make_batch(cases, indices, self.max_length)
        if self._training_neighbours is None or self._training_neighbours[0] is not cases.sessions:
            return batch
        _, neighbours, similarities = self._training_neighbours
        session, length = cases.session[indices], cases.length[indices]
        width = batch.items.shape[1]
        clicks = cases.sessions.offsets[session][:, None] + length[:, None] - width + np.arange(width)  # (B, L)
        real = batch.mask.numpy()
        clicks = np.where(real, clicks, 0)
        found = np.where(real[..., None], neighbours[clicks], 0).astype(np.int64)
        weights = np.where(real[..., None], similarities[clicks], 0.0).astype(np.float32)
        return NeighbourBatch(batch.items, batch.lengths, batch.labels, batch.full_lengths,
                              torch.from_numpy(found), torch.from_numpy(weights))

    def _neighbours(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(items, neighbours, similarities) of the clicks the encoder reads (its last `encoder_length`)."""
        n = self.encoder_length
        items = batch.items[:, -n:]
        if isinstance(batch, NeighbourBatch):
            return items, batch.neighbours[:, -n:], batch.similarities[:, -n:]
        found, weights = session_neighbours(items.cpu().numpy(), self._session_index(), self.config.neighbours,
                                            self.config.sample_size)
        return items, torch.from_numpy(found).to(items.device), torch.from_numpy(weights).to(items.device)

    # -- the network --
    def _encode(self, batch: Batch, keep_weights: bool = False):
        """s (B, d) [and the last block's attention (B, L, L)]."""
        items, neighbours, similarities = self._neighbours(batch)
        batch_size, width, k = neighbours.shape
        collaborative = F.embedding_bag(neighbours.reshape(-1, k), self.session_table.weight, mode="sum",
                                        per_sample_weights=similarities.reshape(-1, k).to(self.session_table.weight.dtype),
                                        padding_idx=0).view(batch_size, width, -1)  # sum_n w_jn S[n_jn]
        states = self.embedding(items) + self.config.neighbour_weight * collaborative  # x~ (B, L, d)
        mask, weights = items != 0, None
        for position, block in enumerate(self.blocks):
            if keep_weights:
                states, weights = block(states, mask, keep_weights=True)
            else:  # the session vector reads the last click's row only: the last block computes just that row
                states = block(states, mask, last_only=position == len(self.blocks) - 1)
        session = states[:, -1]  # right-aligned: the last click
        return (session, weights) if keep_weights else session

    def session_vector(self, batch: Batch) -> torch.Tensor:
        return self._encode(batch)

    def click_weights(self, batch: Batch) -> ClickWeights:
        """The last click's attention over the clicks (last block), and the full click-by-click matrix."""
        if not self.config.blocks:
            raise ValueError("CoSAN with blocks=0 has no self-attention to explain")
        with self.evaluating():
            batch = batch.to(self.device)
            _, weights = self._encode(batch, keep_weights=True)
            items = batch.items[:, -self.encoder_length:]
            return ClickWeights(items=items, weights=weights[:, -1], name="self-attention of the last click",
                                pairs=weights, pairs_name="self-attention between clicks (last block)",
                                scalars=self.repeat_scalars(batch))
