"""SR-IEM: session-based recommendation with an importance extraction module.

Pan, Cai, Chen, de Rijke. "Rethinking Item Importance in Session-based Recommendation". SIGIR 2020
(short paper). Official code: github.com/nudtzpan/SRIEM (PyTorch, built on SR-GNN's code).

What it computes (paper section 2, for the last t <= 10 clicks with embeddings E = [e_1..e_t]):
    Q = sigmoid(E W_q),  K = sigmoid(E W_k)                  W_q, W_k in R^{d x l}       eq. 1
    C = sigmoid(Q K^T) / sqrt(d),  C_ii masked              affinity matrix             eq. 2
    alpha_i = (1/t) sum_{j != i} C_ij                       average similarity          eq. 3
    beta = softmax(alpha) over the real clicks              importance                  eq. 4
    z_l = sum_i beta_i e_i,  z_s = e_t                      long-term / current         eq. 5-6
    z_h = W_0 [z_l; z_s],  W_0 in R^{d x 2d}                fusion                      eq. 7
    score_i = z_h^T e_i,  y_hat = softmax(score)                                        eq. 8-9
trained with eq. 10, the binary cross-entropy of every item's softmax probability (`loss="bce"`).
A one-click prefix has no other clicks: alpha = 0 and beta = 1 (no 0/0).
Taken literally these equations make beta uniform: Q, K in (0, 1)^l give Q K^T ~ l/4 = 25, where float32
sigmoid is exactly 1, so C = 1/sqrt(d) off the diagonal and W_q, W_k get no gradient (docs/sriem.md,
"Explanations"; tests/test_explain.py). We keep the form as the paper writes it.

`variant="code"` switches the model to what the official code computes:
    Q = E W_q, K = E W_k (linear, no sigmoid) with l = d; C = sigmoid(Q K^T / sqrt(d)) (scaling
    inside the sigmoid); alpha_i divided by (t - 1) (1 when t = 1); W_0 has a bias.
The official code's other differences are separate fields, given explicitly with the variant (or
take `SRIEMConfig.code()`): plain softmax cross-entropy (`loss="ce"`), batch 256, no shuffling of
the training cases (batches follow the file order: date-sorted sessions, longest prefix first):
    nextclick bench sr-iem -d diginetica --set variant=code --set loss=ce \
        --set attention_size=200 --set batch_size=256 --set shuffle=false

Where we differ from both, and why:
- Initialisation: the paper does not give one; both forms use the official U(-1/sqrt(d), 1/sqrt(d))
  for every parameter.
- Selection: the official code reports the best test epoch per metric; we select the epoch on the
  validation split (last 10% of training sessions) and test once.
- Padding index 0 is never a candidate (as the official code, which scores items 1..N only).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nextclick.data.batches import Batch
from nextclick.models.layers import full_precision, inner_product_cross_entropy
from nextclick.models.neural import ClickWeights, NeuralModel
from nextclick.models.repeat import RepeatOutput, repeat_decoder, with_repeat_options


@dataclass(frozen=True)
@with_repeat_options
class SRIEMConfig:
    variant: Literal["paper", "code"] = "paper"  # paper equations, or the official code's forms
    embedding_size: int = 200  # d, SR-IEM section 3.3 ("d = 200"); code --hiddenSize 200
    attention_size: int = 100  # l, section 3.3 ("l = 100"); the code variant uses l = d
    loss: Literal["bce", "ce"] = "bce"  # eq. 10 (BCE over softmax outputs); the code uses CE
    max_length: int | None = 10  # section 3.3: the last 10 clicks; code --cutnum 10
    lr: float = 1e-3  # section 3.3, Adam
    lr_decay_every: int = 3  # section 3.3: decayed by 0.1 every 3 epochs; code --lr_dc_step 3
    lr_decay: float = 0.1  # section 3.3; code --lr_dc 0.1
    weight_decay: float = 1e-5  # section 3.3: L2 1e-5, as Adam weight_decay in the code (--l2)
    amsgrad: bool = False
    batch_size: int = 128  # section 3.3; the code's default is 256
    epochs: int = 30  # code --epoch 30
    shuffle: bool = True  # the paper does not say; the code does not shuffle (Data(..., shuffle=False))

    @classmethod
    def code(cls, **changes) -> "SRIEMConfig":
        """The official code's settings (main.py defaults, model.py forms)."""
        preset = dict(variant="code", loss="ce", attention_size=200, batch_size=256, shuffle=False)
        return dataclasses.replace(cls(), **{**preset, **changes})


class SRIEM(NeuralModel):
    name = "sr-iem"
    Config = SRIEMConfig
    citation = "Pan et al., Rethinking Item Importance in Session-based Recommendation, SIGIR 2020"

    def __init__(self, n_items: int, config: SRIEMConfig | None = None):
        super().__init__(n_items, config)
        c = self.config
        d = c.embedding_size
        code = c.variant == "code"
        width = d if code else c.attention_size  # l
        self.embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.query = nn.Linear(d, width, bias=False)  # W_q
        self.key = nn.Linear(d, width, bias=False)  # W_k
        self.fusion = nn.Linear(2 * d, d, bias=code)  # W_0 (the code's nn.Linear has a bias)
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)  # official reset_parameters
            self.embedding.weight[0].zero_()
        self.repeat_decoder = repeat_decoder(c, d, d)  # after the model's own init: off leaves it untouched

    def affinity(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """C (B, L, L) from clicks (B, L, d) and mask (B, L) bool; 0 on the diagonal and in padding columns."""
        d = self.config.embedding_size
        if self.config.variant == "code":
            query, key = self.query(embedded), self.key(embedded)  # (B, L, d)
            affinity = torch.sigmoid(query @ key.transpose(1, 2) / math.sqrt(d))  # (B, L, L)
        else:
            query, key = torch.sigmoid(self.query(embedded)), torch.sigmoid(self.key(embedded))  # (B, L, l)
            affinity = torch.sigmoid(query @ key.transpose(1, 2)) / math.sqrt(d)  # (B, L, L)
        width = mask.shape[1]
        others = mask.unsqueeze(1) & ~torch.eye(width, dtype=torch.bool, device=mask.device).unsqueeze(0)  # (B, L, L): real j != i
        return affinity * others

    def importance(self, affinity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """beta (B, L) from the affinity C (B, L, L) and mask (B, L) bool; zero at padding, sums to 1."""
        total = full_precision(affinity).sum(dim=2)  # (B, L); the sum and softmax in float32 under autocast
        length = mask.sum(dim=1, keepdim=True)  # (B, 1) t
        if self.config.variant == "code":
            length = (length - 1).clamp(min=1)  # the code's 1/(len - 1), 1 for a one-click prefix
        alpha = total / length  # (B, L)
        return torch.softmax(alpha.masked_fill(~mask, -torch.inf), dim=1)  # (B, L)

    def session_vector(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """z_h (B, d) and the importance weights beta (B, L) over the last `encoder_length` clicks."""
        batch = batch.recent(self.encoder_length)
        mask = batch.mask  # (B, L)
        embedded = self.embedding(batch.items)  # (B, L, d); padding rows are zero
        beta = self.importance(self.affinity(embedded, mask), mask)  # (B, L)
        long_term = torch.bmm(beta.unsqueeze(1), embedded).squeeze(1)  # (B, d)
        current = embedded[:, -1]  # (B, d): right-aligned, the last click is the last column
        return self.fusion(torch.cat([long_term, current], dim=1)), beta

    def click_weights(self, batch: Batch) -> ClickWeights:
        """Importance beta per click, and the affinity matrix C it averages (the paper's section 3.2)."""
        with self.evaluating():
            batch = batch.to(self.device)
            scalars = self.repeat_scalars(batch)
            batch = batch.recent(self.encoder_length)
            affinity = self.affinity(self.embedding(batch.items), batch.mask)  # (B, L, L)
            return ClickWeights(
                items=batch.items, weights=self.importance(affinity, batch.mask), name="importance (beta)",
                pairs=affinity, pairs_name="affinity C between clicks (diagonal masked)", scalars=scalars,
            )

    def _decoded(self, batch: Batch, labels: torch.Tensor | None = None) -> RepeatOutput:
        """The repeat/explore decoder on the model's scores (config `repeat`)."""
        session = self.session_vector(batch)[0]
        return self.repeat_decoder(session, self.embedding.weight, session, self.embedding.weight, batch.items, labels)

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.repeat_decoder is not None:
            decoded = self._decoded(batch, labels)
            return decoded.scores, decoded.loss
        session = self.session_vector(batch)[0]  # (B, d)
        if self.config.loss == "ce" and labels is not None and torch.is_grad_enabled():
            return None, inner_product_cross_entropy(session, self.embedding.weight, labels)
        logits = session @ self.embedding.weight.T  # (B, N+1)
        logits[:, 0] = -torch.inf  # padding is no candidate (in place: the matmul's backward needs no output)
        if labels is None:
            return logits, None
        if self.config.loss == "ce":
            return logits, nn.functional.cross_entropy(logits, labels)
        return logits, bce_over_softmax(logits, labels)

    def query_vectors(self, batch: Batch) -> torch.Tensor:
        with self.evaluating():
            return self.session_vector(batch.to(self.device))[0]

    def item_vectors(self) -> torch.Tensor:
        with torch.no_grad():
            return self.embedding.weight.detach().clone()

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam with L2 as weight_decay (as the official code); the fused CPU kernel computes the same
        update as the default loop in one pass, about 10x faster on the 8.6M-parameter item table."""
        c = self.config
        return torch.optim.Adam(self.parameters(), lr=c.lr, weight_decay=c.weight_decay, amsgrad=c.amsgrad, fused=True)


class _SoftmaxBinaryCrossEntropy(torch.autograd.Function):
    """Eq. 10 with its gradient written out, so a step makes a few passes over the (B, N+1) scores
    instead of the dozen an autograd chain makes (the loss is most of SR-IEM's cost besides the matmul).
    With p = softmax(z), r_i = p_i / (1 - p_i), S = sum_{i != t} r_i, the batch-summed loss
    L = -log p_t - sum_{i != t} log(1 - p_i) has dL/dz_k = p_k (1 - S) + r_k - [k = t] (1 + r_t)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, ceiling: float) -> torch.Tensor:
        labels = labels.unsqueeze(1)  # (B, 1)
        normaliser = torch.logsumexp(logits, dim=1, keepdim=True)  # (B, 1)
        log_target = logits.gather(1, labels) - normaliser  # (B, 1), exact even where p_t underflows
        p = (logits - normaliser).exp_()  # (B, N+1); 0 at padding
        log_not = p.clamp(max=ceiling).neg_().log1p_()  # (B, N+1) log(1 - p)
        negative = log_not.sum(dim=1, keepdim=True) - log_not.gather(1, labels)  # (B, 1)
        ctx.save_for_backward(p, labels)
        ctx.ceiling = ceiling
        return -(log_target + negative).mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        p, labels = ctx.saved_tensors
        capped = p.clamp(max=ctx.ceiling)  # (B, N+1)
        odds = capped.div_(capped.neg().add_(1.0))  # r = p / (1 - p)
        odds_target = odds.gather(1, labels)  # (B, 1)
        others = odds.sum(dim=1, keepdim=True) - odds_target  # (B, 1) S
        grad = odds.addcmul_(p, 1.0 - others)  # p (1 - S) + r
        grad.scatter_add_(1, labels, -(1.0 + odds_target))
        return grad.mul_(grad_output / p.shape[0]), None, None


def bce_over_softmax(logits: torch.Tensor, labels: torch.Tensor, ceiling: float = 1.0 - 1e-6) -> torch.Tensor:
    """SR-IEM eq. 10: -sum_i [y_i log p_i + (1 - y_i) log(1 - p_i)] with p = softmax(logits),
    summed over items, averaged over the batch. log p_target comes from logsumexp (exact); the
    negative terms use log1p(-p), exact for the small p of almost every item, with p capped at
    `ceiling` so an item the model is certain of gives a large but finite loss. Scores a bf16 autocast
    matmul made are taken to float32 first (log-sum-exp and log1p need its digits)."""
    return _SoftmaxBinaryCrossEntropy.apply(full_precision(logits), labels, ceiling)
