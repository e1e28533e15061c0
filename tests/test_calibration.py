"""Repeat calibration (models/calibration.py) and `nextclick calibrate` (runs/calibrate.py)."""

import json
import math

import numpy as np
import pytest
import torch

from nextclick.data.batches import Batch
from nextclick.models.calibration import FEATURES, WINDOW, RepeatCalibration, repeat_features
from nextclick.runs.calibrate import fit_repeat_calibration


def batch(rows: list[list[int]], labels: list[int]) -> Batch:
    width = max(len(r) for r in rows)
    items = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    return Batch(items=items, lengths=lengths, labels=torch.tensor(labels), full_lengths=lengths)


def batch_from_indices(rows: list[list[int]]) -> Batch:
    from nextclick.data.batches import batch_from_prefixes

    return batch_from_prefixes([np.array(r) for r in rows])


def test_features_mark_each_distinct_item_once_at_its_most_recent_click_with_its_counts_and_recency():
    scores = torch.zeros(1, 11)
    scores[0, 7] = math.log(4)  # item 7 four times as likely as each of the other nine: p = 4 / 13
    window, distinct, features = repeat_features(batch([[5, 7, 5, 9]], [1]).items, scores)
    assert window.shape == (1, WINDOW) and features.shape == (1, WINDOW, len(FEATURES))
    places = {int(window[0, j]): j for j in range(WINDOW) if distinct[0, j]}
    assert sorted(places) == [5, 7, 9] and distinct.sum() == 3  # padding and the earlier 5 are not places
    f = {item: dict(zip(FEATURES, features[0, j].tolist())) for item, j in places.items()}
    assert f[5]["log_count"] == pytest.approx(math.log(2)) and f[5]["clicked_twice"] == 1 and f[5]["second_last"] == 1
    assert f[9]["last"] == 1 and f[9]["log_count"] == 0 and f[9]["clicked_twice"] == 0
    assert f[7]["third_last"] == 1
    for item in (5, 7, 9):
        assert f[item]["constant"] == 1
        assert f[item]["log_window_clicks"] == pytest.approx(math.log(4))
        assert f[item]["distinct_share"] == pytest.approx(3 / 4)
        assert f[item]["top_log_probability"] == pytest.approx(math.log(4 / 13), abs=1e-6)  # the session's, not the item's
        assert f[item]["top_log_probability_x_distinct_share"] == pytest.approx(3 / 4 * math.log(4 / 13), abs=1e-6)
    assert features[0][~distinct[0]].abs().sum() == 0


def test_features_read_only_the_last_window_of_clicks():
    long = list(range(1, WINDOW + 11))  # 60 distinct items: the first 10 fall outside
    window, distinct, features = repeat_features(batch([long], [1]).items, torch.zeros(1, WINDOW + 11))
    assert set(window[0][distinct[0]].tolist()) == set(long[-WINDOW:])
    earlier = FEATURES.index("earlier")
    assert features[0, 0, earlier] == 1 and features[0, -11, earlier] == 1  # the 11th last click is 'earlier'
    assert features[0, -10, earlier] == 0 and features[0, -10, FEATURES.index("fifth_to_tenth_last")] == 1


def test_the_calibration_moves_only_the_sessions_own_items_and_zero_weights_change_nothing():
    b = batch([[2, 3, 2], [4]], [1, 1])
    scores = torch.randn(2, 8)
    scores[:, 0] = -torch.inf
    assert torch.equal(RepeatCalibration((0.0,) * len(FEATURES)).apply(scores, b.items), scores)
    constant = RepeatCalibration((1.5,) + (0.0,) * (len(FEATURES) - 1))  # +1.5 to every session item
    calibrated = constant.apply(scores, b.items)
    expected = torch.zeros(2, 7)
    expected[0, [1, 2]] = 1.5  # items 2 and 3 (columns 1.. are items 1..)
    expected[1, 3] = 1.5
    assert torch.allclose(calibrated[:, 1:] - scores[:, 1:], expected)
    assert torch.equal(calibrated[:, 0], scores[:, 0])  # padding's column stays -inf


def test_weights_round_trip_through_json_and_a_wrong_feature_list_is_refused():
    calibration = RepeatCalibration(tuple(float(i) / 10 for i in range(len(FEATURES))))
    assert RepeatCalibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    with pytest.raises(ValueError, match="features"):
        RepeatCalibration.from_dict({**calibration.to_dict(), "features": ["constant"]})
    with pytest.raises(ValueError, match="finite"):
        RepeatCalibration((math.nan,) * len(FEATURES))


def test_the_fit_learns_a_bonus_for_repeats_a_model_underrates_and_lowers_the_cross_entropy():
    # a "model" that scores every item equally, on sessions whose next click is always their last item
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(1, 50, (5,), generator=generator).tolist() for _ in range(200)]
    batches = [batch(rows[i:i + 50], [r[-1] for r in rows[i:i + 50]]) for i in range(0, 200, 50)]

    def flat(b):
        scores = torch.zeros(len(b), 51)
        scores[:, 0] = -torch.inf
        return scores

    calibration, record = fit_repeat_calibration(flat, batches)
    assert record["cases"] == 200 and record["valid_cross_entropy_before"] == pytest.approx(math.log(50), abs=1e-6)
    assert record["valid_cross_entropy_after"] < 0.5 * record["valid_cross_entropy_before"]
    weights = dict(zip(FEATURES, calibration.weights))
    assert weights["constant"] + weights["last"] > 3  # the last click now outscores the catalogue by far
    assert weights["last"] > weights["second_last"]


def test_the_fit_never_ends_worse_than_no_calibration():
    # targets never in the session: the best bonus is a large negative one, never a positive
    rows = [[1, 2, 3]] * 20
    batches = [batch(rows, [10] * 20)]

    def flat(b):
        scores = torch.zeros(len(b), 11)
        scores[:, 0] = -torch.inf
        return scores

    _, record = fit_repeat_calibration(flat, batches)
    assert record["valid_cross_entropy_after"] <= record["valid_cross_entropy_before"]


def test_the_fit_finds_the_temperature_held_out_data_wants_for_an_overconfident_model():
    # item 1 scores 4 above the other ten items, but is the target only half the time: the softmax that
    # fits wants a gap of log(10) = 2.3, a temperature of about 0.58; the sessions' items are never targets
    generator = torch.Generator().manual_seed(1)
    labels = torch.where(torch.rand(400, generator=generator) < 0.5, 1, torch.randint(2, 12, (400,), generator=generator))
    batches = [batch([[20, 21]] * 100, labels[i:i + 100].tolist()) for i in range(0, 400, 100)]

    def sharp(b):
        scores = torch.zeros(len(b), 22)
        scores[:, 0] = -torch.inf
        scores[:, 1] = 4.0
        return scores

    calibration, record = fit_repeat_calibration(sharp, batches)
    assert record["temperature"] in (0.5, 0.7)
    assert record["valid_cross_entropy_after"] < record["valid_cross_entropy_before"]
    assert set(record["valid_cross_entropy_by_temperature"]) == {"0.25", "0.35", "0.5", "0.7", "1.0", "1.4", "2.0", "2.8", "4.0"}


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    from nextclick.runs.bench import run_bench
    from nextclick.training.loop import TrainOptions

    root = tmp_path_factory.mktemp("calibrate")
    options = TrainOptions(epochs=2, refit=True, progress=False, quiet=True, checkpoint_dir=str(root / "runs" / "narm"))
    result, path = run_bench("narm", None, overrides={"hidden_size": "16", "embedding_size": "8"}, options=options,
                             results_dir=root / "results", threads=1, command=["test"])
    return root, result, path.parent


def test_calibrate_tests_a_refit_run_once_against_its_committed_ranks_and_writes_a_run_of_its_own(refit_run):
    from nextclick.runs.calibrate import calibrate_run
    from nextclick.runs.identity import run_id

    root, base, folder = refit_run
    before = sorted(p.name for p in (root / "runs" / "narm").iterdir())
    result, path = calibrate_run(folder, results_dir=root / "results", threads=1, command=["test"])
    assert path.parent.name == result["run_id"] == run_id(result["settings"]) != base["run_id"]
    assert result["settings"] == {**base["settings"], "calibration": "repeats"}
    record = result["calibration"]
    assert record["fitted_with"] == "selection/" and record["base_run"] == base["run_id"]
    assert record["cases"] == base["valid_cases"]
    assert record["valid_cross_entropy_after"] <= record["valid_cross_entropy_before"]
    assert record["valid_plain"]["HR@20"] == pytest.approx(base["valid"]["HR@20"], abs=1e-6)  # the selected model
    assert set(record["valid_calibrated"]) == set(record["valid_plain"])
    assert set(record["paired_test_against_base"]) == {"HR@20", "MRR@20"}
    ranks = np.load(path.parent / "ranks.npz")["ranks"]
    assert len(ranks) == result["test"]["cases"] == base["test"]["cases"]
    assert result["test"]["HR@20"] == pytest.approx(float(np.mean(ranks <= 20)), abs=1e-6)
    assert RepeatCalibration.from_dict(record).weights == tuple(record["weights"])
    assert sorted(p.name for p in (root / "runs" / "narm").iterdir()) == before  # the checkpoint is left as it was


def test_calibrate_refuses_a_checkpoint_that_does_not_give_the_committed_ranks(refit_run, tmp_path):
    import shutil

    from nextclick.runs.calibrate import calibrate_run

    root, _, folder = refit_run
    copy = tmp_path / "result"
    shutil.copytree(folder, copy)
    ranks = np.load(copy / "ranks.npz")["ranks"]
    np.savez_compressed(copy / "ranks.npz", ranks=ranks + 1)  # as if another model's
    with pytest.raises(ValueError, match="does not reproduce"):
        calibrate_run(copy, results_dir=tmp_path / "results", threads=1)


def test_calibrate_refuses_statistical_models_calibrated_runs_and_missing_checkpoints(refit_run, tmp_path):
    from nextclick.runs.calibrate import calibrate_run

    root, base, folder = refit_run
    for change, message in (({"model": "s-pop"}, "statistical"), ({"calibration": {"base_run": "x"}}, "calibrated run"),
                            ({"train_options": {**base["train_options"], "checkpoint_dir": str(tmp_path / "none")}},
                             "not on this machine")):
        bad = tmp_path / message.replace(" ", "_")
        bad.mkdir()
        (bad / "result.json").write_text(json.dumps({**base, **change}))
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            calibrate_run(bad, results_dir=tmp_path / "results", threads=1)


def test_a_refit_that_reused_a_finished_runs_selection_is_calibrated_with_that_runs_selected_model(tmp_path):
    from nextclick.runs.bench import run_bench
    from nextclick.runs.calibrate import calibrate_run
    from nextclick.training.loop import TrainOptions

    small = {"hidden_size": "16", "embedding_size": "8"}

    def bench(name, **options):
        options = TrainOptions(epochs=2, progress=False, quiet=True, checkpoint_dir=str(tmp_path / "runs" / name), **options)
        return run_bench("narm", None, overrides=small, options=options, results_dir=tmp_path / name, threads=1,
                         command=["test"], **({"selection_from": plain.parent} if name == "reused" else {}))[1]

    plain = bench("plain")
    reused = bench("reused", refit=True)
    result, _ = calibrate_run(reused.parent, results_dir=tmp_path / "calibrated", threads=1, command=["test"])
    record = result["calibration"]
    assert record["fitted_with"] == str(tmp_path / "runs" / "plain")  # the model validation selected
    base = json.loads(plain.read_text())
    assert record["valid_plain"]["HR@20"] == pytest.approx(base["valid"]["HR@20"], abs=1e-6)
    (tmp_path / "runs" / "plain" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="reused the selection of .* not on this machine, nor is a calibration"):
        calibrate_run(reused.parent, results_dir=tmp_path / "calibrated", threads=1)


def test_a_refit_whose_selected_model_is_gone_takes_the_weights_its_committed_calibration_fitted(tmp_path):
    """A fresh machine keeps results/, not runs/: a refit that reused a selection benched in an earlier
    session is calibrated with the weights that session's `nextclick calibrate` of the selection fitted."""
    import shutil

    from nextclick.runs.bench import run_bench
    from nextclick.runs.calibrate import calibrate_run
    from nextclick.training.loop import TrainOptions

    small = {"hidden_size": "16", "embedding_size": "8"}

    def bench(name, **extra):
        options = TrainOptions(epochs=2, progress=False, quiet=True, checkpoint_dir=str(tmp_path / "runs" / name), **extra)
        return run_bench("narm", None, overrides=small, options=options, results_dir=tmp_path / "results", threads=1,
                         command=["test"], **({"selection_from": plain.parent} if name == "refit" else {}))[1]

    plain = bench("plain")
    refit = bench("refit", refit=True)
    fitted_here, _ = calibrate_run(refit.parent, results_dir=tmp_path / "here", threads=1, command=["test"])
    _, selection_calibrated = calibrate_run(plain.parent, results_dir=tmp_path / "results", threads=1, command=["test"])
    shutil.rmtree(tmp_path / "runs" / "plain")
    taken, _ = calibrate_run(refit.parent, results_dir=tmp_path / "taken", threads=1, command=["test"])
    record, here = taken["calibration"], fitted_here["calibration"]
    assert record["fit_from"] == str(selection_calibrated.parent) and "fit_from" not in here
    assert record["fitted_with"] == here["fitted_with"] == str(tmp_path / "runs" / "plain")
    for key in ("weights", "temperature", "cases", "valid_plain", "valid_calibrated", "valid_cross_entropy_after"):
        assert record[key] == pytest.approx(here[key], rel=1e-6), key
    metrics = [key for key in fitted_here["test"] if "@" in key]
    assert {k: taken["test"][k] for k in metrics} == {k: fitted_here["test"][k] for k in metrics}
    shutil.rmtree(selection_calibrated.parent)
    with pytest.raises(FileNotFoundError, match="nor is a calibration of that run"):
        calibrate_run(refit.parent, results_dir=tmp_path / "taken", threads=1)


def test_a_saved_calibration_is_what_load_recommend_and_serving_rank_with(refit_run, tmp_path):
    import shutil

    from nextclick import checkpoint
    from nextclick.data.batches import make_batch
    from nextclick.data.benchmarks import resolve
    from nextclick.runs.calibrate import calibrate_run
    from nextclick.serve.scoring import load_run

    root, base, folder = refit_run
    directory = tmp_path / "run"
    shutil.copytree(root / "runs" / "narm", directory)
    result, _ = calibrate_run(folder, checkpoint_dir=directory, results_dir=tmp_path / "results", threads=1, save=True)
    assert (directory / checkpoint.CALIBRATION_FILE).is_file()
    model, _, _ = checkpoint.load(directory)
    plain, _, _ = checkpoint.load(directory, calibrated=False)
    assert model.calibration == RepeatCalibration.from_dict(result["calibration"]) and plain.calibration is None
    assert plain.inner_product and not model.inner_product  # serving may not rank it by query vectors alone
    test = resolve(base["dataset"]).test
    cases = make_batch(test, np.arange(40), model.max_length)
    assert torch.allclose(model.score(cases), model.calibration.apply(plain.score(cases), cases.items))
    prefixes = [test.prefix(c) for c in range(40)]
    items, _ = model.recommend(prefixes, k=5)
    assert np.array_equal(items, torch.topk(model.score(cases)[:, 1:], 5).indices.numpy() + 1)
    served = load_run(directory)
    assert served.model.calibration == model.calibration and served.describe()["calibrated"]
    assert np.array_equal(served.top_k.top(prefixes, 5)[0], items)

    from nextclick.explain import explain

    vocab = checkpoint.load(directory)[1]
    session = [int(i) for i in vocab.decode(np.array([3, 5, 3]))]
    shown = explain(model, vocab, session, k=3)
    assert set(shown.calibration_bonus) == set(session)  # one bonus per distinct item, by external id
    padded = batch_from_indices([[3, 5, 3]])
    expected = model.calibration.apply(plain.score(padded), padded.items) - plain.score(padded)
    for item, bonus in shown.calibration_bonus.items():
        assert bonus == pytest.approx(float(expected[0, int(vocab.encode(np.array([item]))[0])]), abs=1e-5)
    assert "calibration_bonus" in shown.to_dict() and explain(plain, vocab, session).calibration_bonus is None


def test_a_saved_calibration_is_refused_once_the_weights_change(refit_run, tmp_path):
    import shutil

    from nextclick import checkpoint
    from nextclick.runs.calibrate import calibrate_run

    root, _, folder = refit_run
    directory = tmp_path / "run"
    shutil.copytree(root / "runs" / "narm", directory)
    calibrate_run(folder, checkpoint_dir=directory, results_dir=tmp_path / "results", threads=1, save=True)
    model, _, _ = checkpoint.load(directory, calibrated=False)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    checkpoint.save_weights(directory, model)  # trained again, say
    with pytest.raises(checkpoint.CheckpointError, match="fitted for other weights"):
        checkpoint.load(directory)
    assert checkpoint.load(directory, calibrated=False)[0].calibration is None


def test_bench_with_calibrate_writes_the_run_and_its_calibrated_run(tmp_path, capsys):
    from nextclick.cli import main

    assert main(["bench", "stamp", "--epochs", "1", "--threads", "1", "--quiet", "--results-dir", str(tmp_path / "results"),
                 "-o", str(tmp_path / "run"), "--set", "embedding_size=8", "--calibrate"]) == 0
    folders = sorted(p.name for p in (tmp_path / "results" / "synthetic" / "stamp").iterdir())
    assert folders == ["calibration=repeats,embedding_size=8,epochs=1", "embedding_size=8,epochs=1"]
    assert "validation cross-entropy" in capsys.readouterr().out


def test_bench_refuses_calibrate_for_a_statistical_model_before_fitting(tmp_path, capsys):
    from nextclick.cli import main

    assert main(["bench", "s-pop", "--results-dir", str(tmp_path), "--calibrate"]) == 2
    assert "statistical" in capsys.readouterr().err and not any(tmp_path.iterdir())
