"""DANSeR (models/danser.py): SR-GNN's graph under separate gated layers, dual attention, the behaviour
readings of its scores, and the self-adaptive hard negatives."""

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch, batch_from_prefixes
from nextclick.data.streams import StreamOptions
from nextclick.models import build
from nextclick.models.config import ConfigError
from nextclick.models.danser import PRESETS, TrainingBatch, hard_negatives, normalise_rows
from nextclick.models.layers import node_states

from model_contract import check_forward_backward, synthetic

CONFIGS = {"default": {}, **PRESETS}


def labelled(prefixes, labels) -> Batch:
    batch = batch_from_prefixes([np.array(p) for p in prefixes])
    return Batch(batch.items, batch.lengths, torch.tensor(labels), batch.full_lengths)


BATCH = ([[1, 2, 1, 3], [4], [5, 6, 7, 8, 9, 5]], [2, 3, 4])


def test_the_first_layer_reads_sr_gnns_graph_through_sr_gnns_cell():
    """With SR-GNN's weights, DANSeR's first layer gives SR-GNN's node states: one graph construction."""
    torch.manual_seed(0)
    danser = build("danser", 12, {"hidden_size": 8, "layers": 1, "dropout": 0.0}).eval()
    srgnn = build("sr-gnn", 12, {"hidden_size": 8}).eval()
    danser.embedding.load_state_dict(srgnn.embedding.state_dict())
    danser.cells[0].load_state_dict(srgnn.cell.state_dict())
    items = labelled(*BATCH).items
    with torch.no_grad():
        expected, graphs = node_states(items, srgnn.embedding, srgnn.cell, 1)
        from nextclick.models.layers import session_graphs
        fields = danser._fields(session_graphs(items))
    assert fields.shape == (2, len(graphs.node_items), 8)  # H^0 and H^1, every layer kept
    torch.testing.assert_close(fields[1], expected)
    torch.testing.assert_close(fields[0], srgnn.embedding(graphs.node_items))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_left_padding_does_not_change_a_sessions_scores(name):
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, **CONFIGS[name]})
    model.popularity.copy_(torch.arange(13.0))  # the popularity reading has something to subtract
    alone = model.score(batch_from_prefixes([np.array([4, 2, 4])]))
    beside = model.score(batch_from_prefixes([np.array([4, 2, 4]), np.array([5, 6, 7, 8, 9, 5, 1, 2, 3])]))[:1]
    torch.testing.assert_close(beside, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_ablation_builds_and_trains_a_step(name):
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, "min_negatives": 2, "max_negatives": 4, **CONFIGS[name]})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_forward_backward(model.train(), labelled(*BATCH))  # finite gradients for every parameter
    model.optimizer().step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "embedding.weight" in changed and "hybrid.weight" in changed


def test_the_sampler_never_picks_the_target_or_an_item_of_the_prefix():
    generator = torch.Generator().manual_seed(0)
    items = torch.tensor([[0, 3, 7, 3], [5, 1, 2, 9]])
    labels = torch.tensor([7, 4])
    for _ in range(50):
        scores = torch.randn(2, 21, generator=generator)
        scores[0, [3, 7]] += 10  # the prefix's items and the target score highest: the first a sampler would take
        scores[1, [5, 1, 2, 9, 4]] += 10
        excluded = torch.zeros(2, 21, dtype=torch.bool).scatter_(1, items, True).scatter_(1, labels[:, None], True)
        excluded[:, 0] = True
        for adaptive in (True, False):
            negatives, kept = hard_negatives(scores, labels, excluded, margin=0.0, min_count=3, max_count=8,
                                             adaptive=adaptive)
            chosen = [set(row[k].tolist()) for row, k in zip(negatives, kept)]
            assert not chosen[0] & {0, 3, 7} and not chosen[1] & {0, 5, 1, 2, 9, 4}


def test_the_number_of_negatives_follows_how_hard_the_session_is():
    scores = torch.arange(21.0).repeat(3, 1)  # item j scores j
    labels = torch.tensor([20, 10, 1])  # on top, in the middle, near the bottom
    excluded = torch.zeros(3, 21, dtype=torch.bool).scatter_(1, labels[:, None], True)
    excluded[:, 0] = True
    _, kept = hard_negatives(scores, labels, excluded, margin=0.0, min_count=2, max_count=15)
    assert kept.sum(1).tolist() == [2, 10, 15]  # K_min, the 10 items above the target, K_max
    _, kept = hard_negatives(scores, labels, excluded, margin=2.5, min_count=2, max_count=15)
    assert kept.sum(1).tolist() == [2, 12, 15]  # the margin counts items just below the target too
    negatives, kept = hard_negatives(scores, labels, excluded, margin=0.0, min_count=2, max_count=15, adaptive=False)
    assert kept.sum(1).tolist() == [15, 15, 15]
    assert negatives[1, :10].tolist() == list(range(20, 10, -1))  # the highest-scoring first


def masked_reference(scores, labels, excluded, margin, min_count, max_count, adaptive):
    """The sampler's definition written plainly: mask, count, take the top K_s."""
    allowed = scores.masked_fill(excluded, -torch.inf)
    hard = (allowed >= scores.gather(1, labels[:, None]) - margin).sum(1)
    count = hard.clamp(min_count, max_count) if adaptive else torch.full_like(hard, max_count)
    values, items = torch.topk(allowed, min(max_count, scores.shape[1] - 1), dim=1)
    return [set(row[:k][torch.isfinite(v[:k])].tolist()) for row, v, k in zip(items, values, count.tolist())]


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("margin", [0.0, 0.7])
def test_the_one_top_k_sampler_picks_what_the_masked_definition_picks(adaptive, margin):
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        scores = torch.randn(6, 40, generator=generator)
        scores[:, 0] = -torch.inf
        items = torch.randint(0, 40, (6, 9), generator=generator)
        labels = torch.randint(1, 40, (6,), generator=generator)
        scores[0, items[0]] += 3  # a prefix that scores highest
        excluded = torch.zeros(6, 40, dtype=torch.bool).scatter_(1, items, True).scatter_(1, labels[:, None], True)
        excluded[:, 0] = True
        negatives, kept = hard_negatives(scores, labels, excluded, margin=margin, min_count=2, max_count=7,
                                         adaptive=adaptive, most_excluded=11)
        chosen = [set(row[k].tolist()) for row, k in zip(negatives, kept)]
        assert chosen == masked_reference(scores, labels, excluded, margin, 2, 7, adaptive)


def test_the_hard_negatives_start_after_the_warm_up_epochs():
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, "dropout": 0.0, "warmup_epochs": 2})
    plain = labelled(*BATCH)
    fields = {k: getattr(plain, k) for k in ("items", "lengths", "labels", "full_lengths")}
    losses = [model(TrainingBatch(**fields, epoch=epoch), plain.labels)[1].item() for epoch in (0, 1, 2)]
    scores, _ = model(plain)
    cross_entropy = torch.nn.functional.cross_entropy(scores, plain.labels).item()
    assert losses[0] == losses[1] == pytest.approx(cross_entropy)
    assert losses[2] > cross_entropy


def test_the_training_stream_tags_each_batch_with_its_epoch():
    model = build("danser", synthetic().n_items, {"hidden_size": 8})
    stream = model.training_stream(synthetic().train_cases(), StreamOptions(batch_size=64, max_batches=2))
    assert [b.epoch for b in stream.batches(3)] == [3, 3] and stream.cases(3) == 128


@pytest.mark.parametrize("name", ["default", "popularity", "fixed-scale", "inner-product"])
def test_inner_product_readings_score_by_their_query_and_item_vectors(name):
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, **CONFIGS[name]})
    model.popularity.copy_(torch.arange(13.0))
    batch = labelled(*BATCH)
    torch.testing.assert_close((model.query_vectors(batch) @ model.item_vectors().T)[:, 1:], model.score(batch)[:, 1:])


def test_the_repeat_reading_has_no_inner_product_form_and_rewards_the_sessions_items():
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, "normalisation": "repeat"})
    assert not hasattr(model, "query_vectors") and not hasattr(model, "item_vectors")
    batch = labelled(*BATCH)
    before = model.score(batch)
    with torch.no_grad():
        model.repeat_bonus.fill_(2.0)
    gain = model.score(batch) - before
    assert gain[0, [1, 2, 3]].tolist() == pytest.approx([2.0] * 3) and gain[0, 4:].abs().max() < 1e-5


@pytest.mark.parametrize("name", ["default", "two-stage", "no-field-attention"])
def test_click_weights_sum_to_one_over_the_clicks_and_give_padding_nothing(name):
    torch.manual_seed(0)
    model = build("danser", 12, {"hidden_size": 8, **CONFIGS[name]})
    read = model.click_weights(labelled(*BATCH))
    torch.testing.assert_close(read.weights.sum(1), torch.ones(3))
    assert (read.weights[1, :-1] == 0).all()
    fields = [v for k, v in read.scalars.items() if k.startswith("field_weight")]
    torch.testing.assert_close(sum(fields), torch.ones(3))
    if name == "no-field-attention":
        torch.testing.assert_close(fields[0], torch.full((3,), 0.25))


def test_the_behaviour_scale_starts_at_tau_zero():
    model = build("danser", 12, {"hidden_size": 8})
    torch.testing.assert_close(model.click_weights(labelled(*BATCH)).scalars["scale"], torch.full((3,), 16.0))


def test_more_negatives_at_least_than_at_most_is_refused():
    with pytest.raises(ConfigError, match="min_negatives"):
        build("danser", 12, {"min_negatives": 60, "max_negatives": 50})


def test_defaults_are_the_proposed_design():
    c = build("danser", 10).config
    assert (c.hidden_size, c.layers, c.layer_states, c.field_attention, c.normalisation) == (
        100, 3, "all", True, "session-scale")
    assert (c.hard_negative_weight, c.min_negatives, c.max_negatives, c.hard_negative_margin,
            c.hard_negative_temperature, c.warmup_epochs) == (0.5, 5, 50, 0.0, 1.0, 1)
    assert (c.batch_size, c.lr, c.weight_decay, c.lr_decay_every, c.lr_decay) == (100, 1e-3, 1e-5, 3, 0.1)


def test_row_normalisation_matches_f_normalize_and_its_gradient_is_exact():
    rows = torch.randn(7, 5, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(normalise_rows(rows), torch.nn.functional.normalize(rows, dim=1))
    assert torch.autograd.gradcheck(normalise_rows, (rows,))


@pytest.mark.parametrize("normalisation", ["session-scale", "popularity", "fixed-scale", "none"])
def test_the_repeat_decoder_explores_with_the_models_own_scores(normalisation):
    """With the decoder on and p_repeat pinned near 0, the mixture is the softmax of DANSeR's own scores
    (the popularity reading's term carried as one more inner-product column)."""
    split = synthetic()
    torch.manual_seed(0)
    model = build("danser", split.n_items, {"repeat": "mix", "normalisation": normalisation})
    model.prepare(split.train)
    with torch.no_grad():
        model.popularity.mul_(3.0)  # a popularity term that matters
        model.repeat_decoder.mode_out.bias.fill_(-50.0)
    model.eval()
    batch = labelled([[3, 4, 3], [5], [6, 7, 8, 9]], [3, 2, 1])
    with torch.no_grad():
        mixture = model(batch)[0]
        own = model._scores(batch, model._read(batch))
        own[:, 0] = -torch.inf
    assert torch.allclose(mixture[:, 1:], torch.log_softmax(own, dim=1)[:, 1:], atol=1e-4)


def test_the_repeat_decoder_trains_with_hard_negatives_on_the_mixture():
    split = synthetic()
    torch.manual_seed(0)
    model = build("danser", split.n_items, {"repeat": "mix", "hard_negative_weight": 1.0, "warmup_epochs": 0})
    batch = labelled([[3, 4, 3], [5, 6], [6, 7, 8, 9]], [3, 2, 1])
    plain = build("danser", split.n_items, {"repeat": "mix", "hard_negative_weight": 0.0})
    plain.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    with_negatives = model(batch, batch.labels)[1]
    torch.manual_seed(1)
    without = plain(batch, batch.labels)[1]
    assert with_negatives > without  # the hard negatives' term is added (positive)
    with_negatives.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_repeat_decoder_and_the_repeat_reading_are_refused_together():
    with pytest.raises(ConfigError, match="same question"):
        build("danser", 30, {"repeat": "mix", "normalisation": "repeat"})
