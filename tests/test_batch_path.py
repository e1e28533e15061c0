"""One batch path: `nextclick speed` times exactly the batches training draws (issue 41, item 6)."""

import pytest
import torch

from nextclick.data.benchmarks import resolve
from nextclick.measure.speed import measure_training_speed
from nextclick.models import build, model_class
from nextclick.training.loop import TrainOptions, train_model


def _recorded(monkeypatch, name: str) -> list:
    """Every batch the model's forward is given from now on, as CPU tensors."""
    seen: list = []
    cls = model_class(name)
    forward = cls.forward

    def recording(self, batch, labels=None):
        seen.append((batch.items.clone(), batch.lengths.clone(), batch.labels.clone()))
        return forward(self, batch, labels)

    monkeypatch.setattr(cls, "forward", recording)
    return seen


@pytest.mark.parametrize("name, overrides, batch_size", [
    # NARM capped at its last 3 clicks (19 in the paper; the synthetic prefixes are at most 11 long)
    ("narm", dict(embedding_size=8, hidden_size=8, max_length=3), None),
    # SR-IEM as its code runs: file order (shuffle=false), its own cap (10), batch 32 asked for
    ("sr-iem", dict(embedding_size=8, attention_size=8, max_length=4, shuffle=False), 32),
])
def test_speed_times_the_batches_training_draws(monkeypatch, name, overrides, batch_size):
    seen = _recorded(monkeypatch, name)
    result = measure_training_speed(name, None, overrides=overrides, batches=2, warmup=1, batch_size=batch_size,
                                    threads=1, device="cpu", command=["test"])
    timed = list(seen)
    seen.clear()
    split = resolve(None)
    torch.manual_seed(1)
    model = build(name, split.n_items, overrides)
    train_model(model, split.train_cases(), None, TrainOptions(epochs=1, batch_size=batch_size, max_batches=len(timed),
                                                               progress=False, quiet=True, device="cpu"))
    trained = seen[: len(timed)]
    assert result["batch_size"] == (batch_size or model.config.batch_size)
    assert len(timed) == 4 and len(trained) == 4  # 1 warm-up + 2 timed + 1 counting operator calls
    cap = overrides["max_length"]
    for (items, lengths, labels), (t_items, t_lengths, t_labels) in zip(timed, trained):
        assert items.shape == (result["batch_size"], cap)  # the model's length cap, in speed as in training
        assert int(lengths.max()) == cap
        assert torch.equal(items, t_items) and torch.equal(lengths, t_lengths) and torch.equal(labels, t_labels)


def test_speed_measures_full_ranking_evaluation(tmp_path):
    from nextclick.cli import main

    assert main(["speed", "sr-iem", "--set", "embedding_size=8", "--set", "attention_size=8", "--evaluation",
                 "--cases", "300", "--batch-size", "128", "--threads", "1", "--results-dir", str(tmp_path)]) == 0
    import json

    result = json.loads((tmp_path / "speed" / "synthetic" / "sr-iem"
                         / "attention_size=8,batch_size=128,embedding_size=8,evaluation=true.json").read_text())
    assert result["evaluation"]["cases"] == 300 and result["evaluation"]["cases_per_second"] > 0
    assert result["machine"]["threads"] == 1
