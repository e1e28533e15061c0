"""Repeat or explore: a decoder any neural model can put on its own scores (`--set repeat=mix`).

Repeats (the next click is an item already in the session) are 38% of Retailrocket's test targets,
21% of Diginetica's and 27% of Yoochoose 1/64's, and a model that only ranks the catalogue by one
session vector spends its top 20 on them badly: S-POP, which just counts the session's clicks, beats
every trained model on repeat targets. The decoder lets a model say which kind the next click is:

    P(i) = p_repeat * P_repeat(i) + (1 - p_repeat) * P_explore(i)

- P_explore: softmax of the model's own scores over the catalogue. `repeat="mix"` keeps every item;
  `repeat="new-only"` gives the items of the session no explore mass (RepeatNet's explore decoder).
- P_repeat: attention over the session's clicks, summed per item, zero off the session:
      a_j = softmax_j( v . tanh(W_c e_j + W_s s + recency[min(t - j, 15)] + count[min(n_j, 7)]) )
  with e_j the clicked item's row of the model's item table, s the model's session vector, and
  learned vectors for how far the click is from the end and how often its item occurs in the session
  (the two things S-POP-like rules exploit: frequency and recency).
- p_repeat = sigmoid(u . tanh(W_m [s; sum_j a_j e_j])); with `repeat_mode_stats` the mode also reads
  how repetitive the session has been so far (`session_stats`: its length, the share of distinct
  items, whether the last click repeats an earlier one or the click before it, its largest count),
  which the session vector holds at best implicitly. Off by default (the first design, kept).

Trained on -log P(target) + repeat_mode_weight * BCE(p_repeat, [target in session])
+ repeat_explore_weight * -log P_explore(target) (0 by default; for `new-only`, over new targets only:
the explore side then also learns from every case what the model alone would, where the mixture
teaches it only through the cases it explains). With `repeat_explore_own` the mixture's term reaches
the explore side detached, so the model's own scores learn from their cross-entropy alone, as without
the decoder, and the mixture trains only the repeat side, the mode and, through them, the session
vector (it needs repeat_explore_weight > 0). The ranking scores are log P(i) (-inf at padding). Where it differs from RepeatNet (Ren et al., AAAI 2019), the
anchor, and why:
- RepeatNet attends over its GRU's hidden states; we attend over item rows plus recency and count
  features, so the decoder needs nothing from a model but its scores, its session vector and its
  item table (DSAN, NARM, SR-IEM and the inner-product models all have them).
- RepeatNet explores new items only; that is one option here (`new-only`), and `mix` lets the
  explore side rank a repeat too, for models whose own scores already rank repeats well.
- The mode loss is RepeatNet's joint objective; its weight is a config value (0 turns it off).
- The attention sees the clicks the model's batch holds (the whole prefix for DSAN; models that
  truncate to their last few clicks widen their batch to the whole prefix when the decoder is on and
  cut their own encoder's input back: `Batch.recent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nextclick.models.config import ConfigError
from nextclick.models.layers import inner_product_logsumexp

RepeatMode = Literal["off", "mix", "new-only"]  # a model config's `repeat`

# the decoder's config values, appended to the config of every model that offers it (with_repeat_options):
# name: (type, default, what it is)
REPEAT_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "repeat": (RepeatMode, "off", "the repeat/explore decoder; off = the model as published"),
    "repeat_mode_weight": (float, 1.0, "weight of the decoder's mode loss (RepeatNet's joint objective)"),
    "repeat_mode_stats": (bool, False, "the decoder's mode also reads the session's repeat statistics"),
    "repeat_explore_weight": (float, 0.0, "the decoder's explore side also trained on its own cross-entropy"),
    "repeat_explore_own": (bool, False, "the mixture's loss leaves the explore side to its own cross-entropy"),
}


def with_repeat_options(cls: type) -> type:
    """Append REPEAT_OPTIONS to a model's config class, after its own fields (applied below @dataclass,
    so that the dataclass sees them): the models that offer the decoder declare its values once, here."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    for name, (kind, default, _) in REPEAT_OPTIONS.items():
        annotations[name] = kind
        setattr(cls, name, default)
    cls.__annotations__ = annotations
    return cls

MAX_RECENCY = 15  # clicks further back share one recency vector
N_SESSION_STATS = 5  # the columns of `session_stats`
MAX_COUNT = 7  # items clicked more often share one count vector
# the repeat mass of a target off the session is 0; its log is clamped here so that the mixture's
# gradient stays finite (the explore term carries such a target entirely)
TINY = 1e-30


@dataclass
class RepeatOutput:
    scores: torch.Tensor | None  # (B, N + 1) log P(i), -inf at padding; None when only the loss is wanted
    loss: torch.Tensor | None
    repeat_probability: torch.Tensor  # (B,) p_repeat
    click_weights: torch.Tensor  # (B, L) a_j, 0 at padding


class RepeatExplore(nn.Module):
    """The decoder: see the module docstring. `mode` is "mix" or "new-only"."""

    def __init__(self, session_size: int, click_size: int, mode: str = "mix", mode_weight: float = 1.0,
                 mode_stats: bool = False, explore_weight: float = 0.0, explore_own: bool = False):
        super().__init__()
        if mode not in ("mix", "new-only"):
            raise ConfigError(f"repeat mode must be mix or new-only, not {mode!r}")
        if explore_own and explore_weight <= 0:
            raise ConfigError("option 'repeat_explore_own' leaves the explore side to its own cross-entropy: "
                             "give it a weight (repeat_explore_weight > 0)")
        self.mode, self.mode_weight, self.mode_stats = mode, mode_weight, mode_stats
        self.explore_weight, self.explore_own = explore_weight, explore_own
        self.click = nn.Linear(click_size, click_size, bias=False)  # W_c
        self.session = nn.Linear(session_size, click_size)  # W_s
        self.recency = nn.Embedding(MAX_RECENCY + 1, click_size)
        self.count = nn.Embedding(MAX_COUNT + 1, click_size)
        self.attend = nn.Linear(click_size, 1, bias=False)  # v
        self.mode_hidden = nn.Linear(session_size + click_size + (N_SESSION_STATS if mode_stats else 0), click_size)  # W_m
        self.mode_out = nn.Linear(click_size, 1)  # u
        with torch.no_grad():  # start from no preference: features enter through the trained layers
            self.recency.weight.zero_()
            self.count.weight.zero_()

    def attention(self, session: torch.Tensor, item_table: torch.Tensor, items: torch.Tensor, found: SessionClicks
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """a (B, L) over the real clicks of right-aligned `items` (B, L) (`found`: where they are and how
        often each one's item occurs), and the clicks' rows of `item_table` (c, d). Only real clicks are
        computed: a batch is as wide as its longest prefix (about 150 on Retailrocket, whose mean prefix is 9)."""
        clicks = item_table[found.items]  # (c, d)
        recency = (items.shape[1] - 1 - found.columns).clamp(max=MAX_RECENCY)  # right-aligned: 0 = the last click
        features = (self.click(clicks) + self.session(session)[found.rows] + self.recency(recency)
                    + self.count(found.counts.clamp(max=MAX_COUNT)))  # (c, d)
        logits = torch.full(items.shape, -torch.inf, dtype=features.dtype, device=items.device)
        logits = logits.index_put((found.rows, found.columns), self.attend(torch.tanh(features)).squeeze(1))
        return torch.softmax(logits, dim=1), clicks

    def forward(self, queries: torch.Tensor, table: torch.Tensor, session: torch.Tensor, item_table: torch.Tensor,
                items: torch.Tensor, labels: torch.Tensor | None = None, need_scores: bool | None = None) -> RepeatOutput:
        """The model's own scores are queries (B, k) @ table (N + 1, k)^T (row 0 padding, never a
        candidate); session (B, s) its session vector; item_table (N + 1, d) its item rows, which
        describe the clicks of `items` (B, L, right-aligned, 0 = padding). The (B, N + 1) scores are
        made unless only a loss is wanted (need_scores None: labels given and gradients on); the loss
        alone never builds them."""
        if need_scores is None:
            need_scores = labels is None or not torch.is_grad_enabled()
        found = session_clicks(items, item_table.shape[0])
        weights, clicks = self.attention(session, item_table, items, found)  # (B, L), (c, d)
        rows, columns = found.rows, found.columns
        context = clicks.new_zeros(len(items), clicks.shape[1]).index_add(0, rows, weights[rows, columns].unsqueeze(1) * clicks)
        mode_inputs = [session, context] + ([session_stats(items, found).to(context.dtype)] if self.mode_stats else [])
        mode_logit = self.mode_out(torch.tanh(self.mode_hidden(torch.cat(mode_inputs, dim=1)))).squeeze(1)
        log_repeat, log_explore = F.logsigmoid(mode_logit), F.logsigmoid(-mode_logit)  # (B,)
        excluded = items if self.mode == "new-only" else None  # the session's items (and padding)
        log_p_explore = None
        if need_scores:
            explore_scores = queries @ table.T
            explore_scores[:, 0] = -torch.inf
            if excluded is not None:
                explore_scores.scatter_(1, excluded, -torch.inf)
            log_p_explore = torch.log_softmax(explore_scores, dim=1)  # (B, N + 1)
        loss = None
        if labels is not None:
            at_target = items == labels.unsqueeze(1)  # (B, L)
            repeat_mass = (weights * at_target).sum(1)  # (B,) P_repeat(target)
            if log_p_explore is not None:
                explore_at_target = log_p_explore.gather(1, labels.unsqueeze(1)).squeeze(1)
            else:
                explore_at_target = (queries * table[labels]).sum(1) - inner_product_logsumexp(queries, table, excluded)
                if excluded is not None:
                    explore_at_target = explore_at_target.masked_fill(at_target.any(1), -torch.inf)
            mixed_explore = explore_at_target.detach() if self.explore_own else explore_at_target
            log_p = torch.logaddexp(log_repeat + repeat_mass.clamp_min(TINY).log(), log_explore + mixed_explore)
            loss = -log_p.mean()
            if self.mode_weight > 0:
                loss = loss + self.mode_weight * F.binary_cross_entropy_with_logits(
                    mode_logit, at_target.any(1).to(mode_logit.dtype))
            if self.explore_weight > 0:  # the explore side's own cross-entropy (new-only: at new targets)
                explorable = torch.isfinite(explore_at_target)
                loss = loss - self.explore_weight * explore_at_target[explorable].sum() / len(labels)
        scores = None
        if need_scores:
            repeat_mass = torch.zeros_like(log_p_explore).scatter_add_(1, items, weights)  # (B, N + 1), padding gets 0
            log_mass = repeat_mass.log()
            if torch.is_grad_enabled():
                # scores that are themselves trained on (DANSeR's hard negatives): off the session a huge
                # negative number, not -inf, as the log of the zero mass, which changes no finite score but
                # keeps nan out of the gradient (log's 1/0, and logaddexp of -inf and -inf at padding)
                off = repeat_mass == 0
                log_mass = torch.where(off, 1.0, repeat_mass).log().masked_fill(off, -1e30)
            scores = torch.logaddexp(log_repeat.unsqueeze(1) + log_mass, log_explore.unsqueeze(1) + log_p_explore)
            scores[:, 0] = -torch.inf
        return RepeatOutput(scores, loss, torch.exp(log_repeat), weights)


@dataclass(frozen=True)
class SessionClicks:
    """The real clicks of right-aligned prefixes (B, L), found once for the attention and the statistics."""

    rows: torch.Tensor  # (c,) each click's prefix, row-major
    columns: torch.Tensor  # (c,) its column
    items: torch.Tensor  # (c,) its item
    counts: torch.Tensor  # (c,) how often its item occurs in its prefix
    pair_rows: torch.Tensor  # (number of distinct (prefix, item) pairs,) the prefix of each pair


def session_clicks(items: torch.Tensor, n_keys: int) -> SessionClicks:
    """The real clicks of `items` (B, L, right-aligned, 0 = padding) whose ids are below `n_keys` (the item
    table's rows): a (prefix, item) pair is one key, rows * n_keys + item."""
    rows, columns = (items != 0).nonzero(as_tuple=True)
    real = items[rows, columns]
    keys, pair, counts = torch.unique(rows * n_keys + real, return_inverse=True, return_counts=True)
    return SessionClicks(rows, columns, real, counts[pair], keys // n_keys)


def session_stats(items: torch.Tensor, found: SessionClicks) -> torch.Tensor:
    """(B, N_SESSION_STATS) float32 of right-aligned prefixes `items` (B, L, 0 = padding), each with at
    least one click, from their real clicks `found`: log(1 + clicks), distinct items / clicks, whether the
    last click's item was clicked before in the session, whether the last two clicks are the same item,
    log(1 + the largest number of clicks on one item)."""
    batch, width = items.shape
    clicks = torch.bincount(found.rows, minlength=batch).clamp_min(1).float()
    distinct = torch.bincount(found.pair_rows, minlength=batch).float()
    largest = torch.zeros(batch, dtype=found.counts.dtype, device=items.device).scatter_reduce(
        0, found.rows, found.counts, "amax")
    last = found.columns == width - 1
    last_repeats = torch.zeros(batch, device=items.device).index_put((found.rows[last],), (found.counts[last] > 1).float())
    last_two_same = ((items[:, -1] == items[:, -2]) & (items[:, -2] != 0)).float() if width > 1 else clicks.new_zeros(batch)
    return torch.stack([clicks.log1p(), distinct / clicks, last_repeats, last_two_same, largest.float().log1p()], dim=1)


def repeat_decoder(config, session_size: int, click_size: int) -> RepeatExplore | None:
    """The decoder a model's config asks for (its REPEAT_OPTIONS), or None when it is off."""
    if config.repeat == "off":
        return None
    return RepeatExplore(session_size, click_size, config.repeat, config.repeat_mode_weight,
                         config.repeat_mode_stats, config.repeat_explore_weight, config.repeat_explore_own)
