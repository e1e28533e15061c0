"""The command line as a user runs it: clear one-line errors, working commands on synthetic data."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nextclick.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def result_of(results, model, dataset="synthetic"):
    """The one result.json a bench wrote under results/<dataset>/<model>/<run id>/, and its run id."""
    [path] = (results / dataset / model).glob("*/result.json")
    return json.loads(path.read_text())


def test_every_command_has_help(capsys):
    for command in ("datasets", "models", "train", "evaluate", "recommend", "explain", "bench", "speed", "demo", "report", "curve", "status"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_demo_trains_dsan_beside_s_pop_and_the_commands_it_suggests_work(tmp_path, capsys):
    """The README's first command (`make demo` runs `nextclick demo`), one epoch instead of five."""
    out_dir = tmp_path / "demo"
    code, out, _ = run(capsys, "demo", "--epochs", "1", "--out", str(out_dir), "--quiet")
    assert code == 0
    hit_rates = {line.split()[0]: float(line.split()[3]) for line in out.splitlines() if "test HR@20" in line}
    assert set(hit_rates) == {"s-pop", "dsan"} and hit_rates["dsan"] > hit_rates["s-pop"]
    assert result_of(out_dir, "dsan")["command"].startswith("nextclick demo")
    code, out, _ = run(capsys, "recommend", str(out_dir / "dsan"), "1", "2", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 20
    code, _, _ = run(capsys, "demo", "--model", "pop", "--out", str(out_dir), "--quiet")  # run again: S-POP remade
    assert code == 0


def test_bench_writes_a_complete_result_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "bench", "s-pop", "--results-dir", str(tmp_path / "results"), "-q")
    assert code == 0 and "HR@20" in out
    result = result_of(tmp_path / "results", "s-pop")
    assert result["run_id"] == "default" and (tmp_path / "results" / "synthetic" / "s-pop" / "default" / "ranks.npz").exists()
    for key in ("test", "valid", "config", "seed", "wall_seconds", "machine", "git_commit", "command", "protocol",
                "test_by_length", "fit_seconds"):
        assert key in result, key
    assert result["machine"]["threads"] >= 1 and "torch" in result["machine"]
    assert 0 < result["test"]["HR@20"] <= 1


def test_bench_records_the_commit_it_started_from(tmp_path, capsys, monkeypatch):
    from nextclick.runs import bench

    head = {"commit": "started-at"}
    monkeypatch.setattr(bench, "git_commit", lambda: head["commit"])
    fit_and_select = bench.fit_and_select

    def fit_while_someone_commits(*args, **kwargs):
        fitted = fit_and_select(*args, **kwargs)
        head["commit"] = "committed-meanwhile"
        return fitted

    monkeypatch.setattr(bench, "fit_and_select", fit_while_someone_commits)
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "bench", "pop", "--results-dir", str(tmp_path / "results"), "-q")[0] == 0
    assert result_of(tmp_path / "results", "pop")["git_commit"] == "started-at"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_bench_on_a_missing_gpu_fails_at_once_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "bench", "dsan", "--device", "cuda", "--results-dir", str(tmp_path / "results"), "-q")
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_bench_records_the_device_it_computed_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "bench", "narm", "--device", "cpu", "--epochs", "1", "--max-batches", "2",
                       "--set", "hidden_size=8", "--set", "embedding_size=8", "--results-dir", str(tmp_path / "results"), "-q")
    assert code == 0 and "device cpu" in out
    result = result_of(tmp_path / "results", "narm")
    assert result["machine"]["device"] == "cpu"
    assert result["run_id"] == "embedding_size=8,epochs=1,hidden_size=8,max_batches=2"  # --device is no setting


def test_train_evaluate_recommend_on_synthetic(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert run(capsys, "train", "s-pop", "-o", str(ckpt), "-q")[0] == 0
    code, out, _ = run(capsys, "evaluate", str(ckpt), "--json", "-q")
    assert code == 0 and json.loads(out)["cases"] > 0
    code, out, _ = run(capsys, "recommend", str(ckpt), "3", "5", "-k", "4", "--json")
    assert code == 0 and len(json.loads(out)) == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (("recommend", "{ckpt}", "999999"), "unknown item id 999999"),
        (("recommend", "{ckpt}"), "empty session"),
        (("recommend", "{ckpt}", "abc"), "must be integers"),
        (("recommend", "{tmp}/nothing", "1"), "no checkpoint directory"),
        (("train", "no-such-model", "-q"), "unknown model"),
        (("train", "s-pop", "--dataset", "nowhere", "-q"), "unknown dataset"),
        (("train", "dsan", "--set", "dropout=high", "-q"), "expects float"),
        (("train", "dsan", "--set", "colour=red", "-q"), "unknown option"),
        (("train", "dsan", "--set", "novalue", "-q"), "key=value"),
        (("train", "dsan", "--select", "NDCG@20", "-q"), "cannot select epochs on 'NDCG@20'"),
        (("bench", "dsan", "--select", "MRR@50", "-q", "--results-dir", "{tmp}/results"), "choose one of HR@5"),
    ],
)
def test_bad_input_gives_a_one_line_error(tmp_path, capsys, argv, message):
    ckpt = tmp_path / "ckpt"
    run(capsys, "train", "s-pop", "-o", str(ckpt), "-q")
    code, _, err = run(capsys, *(a.format(ckpt=ckpt, tmp=tmp_path) for a in argv))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_datasets_lists_the_synthetic_set(capsys):
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and "synthetic" in out


@pytest.mark.slow  # times both layouts (tests/test_batch_path.py checks speed's batches in make test)
def test_speed_measures_both_layouts_and_writes_a_result(tmp_path, capsys):
    code, out, _ = run(capsys, "speed", "dsan", "--set", "embedding_dim=8", "--batches", "2", "--reference-batches", "1",
                       "--threads", "1", "--device", "cpu", "--results-dir", str(tmp_path))
    assert code == 0 and "cases/s" in out
    result = json.loads((tmp_path / "speed" / "synthetic" / "dsan" / "embedding_dim=8,reference=true.json").read_text())
    assert result["fast_path"]["cases"] == 1024 and result["reference_path"]["cases"] == 512
    assert result["machine"]["threads"] == 1
    # on the CPU, length groups trade operator calls for less padding (a GPU encodes without them: test_device.py)
    assert 0 < result["reference_path"]["operator_calls_per_step"] < result["fast_path"]["operator_calls_per_step"]


def test_speed_times_batches_of_the_size_asked_for(tmp_path, capsys):
    code, _, _ = run(capsys, "speed", "sr-iem", "--set", "embedding_size=8", "--batches", "2", "--batch-size", "64",
                     "--threads", "1", "--results-dir", str(tmp_path))
    assert code == 0
    result = json.loads((tmp_path / "speed" / "synthetic" / "sr-iem" / "batch_size=64,embedding_size=8.json").read_text())
    assert result["batch_size"] == 64 and result["fast_path"]["cases"] == 128 and "batch 64" in result["what"]


@pytest.mark.slow  # trains, then scores every kept epoch
def test_curve_reports_test_metrics_of_every_kept_epoch_beside_validation(tmp_path, capsys):
    run_dir = tmp_path / "narm"
    code, _, _ = run(capsys, "train", "narm", "-o", str(run_dir), "--epochs", "2", "--keep-epochs", "-q",
                     "--set", "hidden_size=16", "--set", "embedding_size=8", "--threads", "1")
    assert code == 0
    assert sorted(p.name for p in (run_dir / "epochs").iterdir()) == ["epoch_0.safetensors", "epoch_1.safetensors"]
    code, out, _ = run(capsys, "curve", str(run_dir), "-q", "--threads", "1")
    assert code == 0 and "selected on validation" in out
    curve = json.loads((run_dir / "test_curve.json").read_text())
    assert [row["epoch"] for row in curve["epochs"]] == [0, 1]
    assert all(0 <= row["test"]["HR@20"] <= 1 and "HR@20" in row["valid"] for row in curve["epochs"])
    chosen = json.loads((run_dir / "training" / "state.json").read_text())["best_epoch"]
    assert curve["selected_on_validation"] == chosen and "for reading only" in curve["what"]


def test_curve_without_kept_epochs_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "pop"
    assert run(capsys, "train", "pop", "-o", str(run_dir), "-q")[0] == 0
    code, _, err = run(capsys, "curve", str(run_dir), "-q")
    assert code == 2 and "--keep-epochs" in err


@pytest.mark.parametrize("validation", ["random-cases", "random-sessions"])
def test_bench_can_select_on_random_training_cases_or_sessions(validation, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "bench", "s-pop", "--validation", validation, "-q")
    assert code == 0
    result = result_of(tmp_path / "results", "s-pop")
    assert result["validation"] == validation and result["run_id"] == f"validation={validation}"
    assert result["train_options"]["validation"] == validation


def test_refit_trains_the_selected_number_of_epochs_on_all_training_cases(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "bench", "tiny", "--refit", "--keep-epochs", "-q", "--threads", "1")
    assert code == 0
    result = result_of(tmp_path / "results", "tiny")
    refit = result["refit"]
    assert refit["epochs"] == result["selected_epoch"] + 1 == len(refit["history"])
    assert refit["cases"] == result["fit_cases"] + result["valid_cases"]
    assert all("valid" not in epoch for epoch in refit["history"])
    run_dir = tmp_path / "runs" / "synthetic" / "tiny" / result["run_id"]
    assert (run_dir / "selection" / "epochs" / "epoch_0.safetensors").exists()  # the selection run, for `curve`
    code, out, _ = run(capsys, "curve", str(run_dir / "selection"), "-q", "--threads", "1")
    assert code == 0 and "selected on validation" in out
    code, _, err = run(capsys, "curve", str(run_dir), "-q")  # the top directory points at its two parts
    assert code == 2 and str(run_dir / "selection") in err and str(run_dir / "refit") in err
    code, out, _ = run(capsys, "curve", str(run_dir / "refit"), "-q", "--threads", "1")  # no validation there
    assert code == 0 and json.loads((run_dir / "refit" / "test_curve.json").read_text())["selected_on_validation"] is None
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json", "-q")  # the tested checkpoint is the refit one
    assert code == 0 and json.loads(out)["HR@20"] == pytest.approx(result["test"]["HR@20"])


def test_a_refit_can_reuse_a_finished_runs_selection_and_trains_as_a_refit_that_selected_again(
        tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    tiny = ("bench", "tiny", "--epochs", "3", "-q", "--threads", "1")
    assert run(capsys, *tiny, "--results-dir", "plain")[0] == 0
    [plain] = (tmp_path / "plain" / "synthetic" / "tiny").glob("*")
    base = result_of(tmp_path / "plain", "tiny")
    assert run(capsys, *tiny, "--refit", "--results-dir", "whole", "-o", "runs/whole")[0] == 0
    code, _, _ = run(capsys, *tiny, "--refit", "--selection-from", str(plain), "--results-dir", "reused", "-o", "runs/reused")
    assert code == 0
    whole, reused = result_of(tmp_path / "whole", "tiny"), result_of(tmp_path / "reused", "tiny")
    assert whole["selected_epoch"] == base["selected_epoch"] == reused["selected_epoch"]
    assert reused["history"] == base["history"] and reused["valid"] == base["valid"]
    assert reused["selection_from"] == {"run": base["run_id"], "result": str(plain), "git_commit": base["git_commit"],
                                        "checkpoint_dir": base["train_options"]["checkpoint_dir"]}
    assert reused["run_id"] == whole["run_id"] == "epochs=3,refit=true"
    assert reused["refit"]["epochs"] == base["selected_epoch"] + 1
    timing = ("seconds", "cases_per_second")  # the same refit, from the same seed: the same ranks
    assert {k: v for k, v in reused["test"].items() if k not in timing} == {k: v for k, v in whole["test"].items() if k not in timing}
    ranks = [np.load(tmp_path / part / "synthetic" / "tiny" / "epochs=3,refit=true" / "ranks.npz")["ranks"] for part in ("whole", "reused")]
    assert np.array_equal(*ranks)
    assert not (tmp_path / "runs" / "reused" / "selection").exists()

    # a run of another seed, config or budget is not this run's selection; neither is a run without --refit
    for extra, named in ((("--seed", "2"), "train_options.seed (1, here 2)"),
                         (("--set", "embedding_size=4"), "config.embedding_size (8, here 4)"),
                         (("--epochs", "4"), "train_options.epochs (3, here 4)")):
        code, _, err = run(capsys, *tiny, "--refit", "--selection-from", str(plain), *extra, "--results-dir", "x", "--force")
        assert code == 2 and named in err, err
    assert not (tmp_path / "runs" / "synthetic" / "tiny" / "epochs=3,refit=true,seed=2").exists()  # refused before writing
    code, _, err = run(capsys, *tiny, "--selection-from", str(plain), "--results-dir", "x")
    assert code == 2 and "add --refit" in err

    # a run benched before an option existed: the option's default is what its code did
    result = json.loads((plain / "result.json").read_text())
    del result["config"]["dropout"]
    (plain / "result.json").write_text(json.dumps(result))
    assert run(capsys, *tiny, "--refit", "--selection-from", str(plain), "--results-dir", "y", "-o", "runs/y")[0] == 0
    code, _, err = run(capsys, *tiny, "--refit", "--selection-from", str(plain), "--set", "dropout=0.5",
                       "--results-dir", "z", "-o", "runs/z")
    assert code == 2 and "config.dropout (0.0, here 0.5)" in err

    # a refit whose twin without --refit is in the results folder says so (and selects again, as asked)
    code, _, err = run(capsys, *tiny, "--refit", "--results-dir", "plain", "-o", "runs/hinted")
    assert code == 0 and "`--selection-from plain/synthetic/tiny/epochs=3` would reuse its selection" in err
    assert (tmp_path / "runs" / "hinted" / "selection").is_dir()


SMALL_NARM = ("--epochs", "2", "-q", "--threads", "1", "--set", "hidden_size=16", "--set", "embedding_size=8")
TINY = ("tiny", "-q", "--threads", "1", "--max-batches", "40")


def test_grid_search_tests_only_the_candidate_with_the_best_validation_score(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "bench", *TINY, "--grid", "lr=0.001,0.03")
    assert code == 0 and "chosen on validation HR@20" in out
    result = result_of(tmp_path / "results", "tiny")
    assert result["run_id"] == "grid.lr=0.001+0.03,max_batches=40"
    candidates = result["grid"]["candidates"]
    assert [row["lr"] for row in candidates] == ["0.001", "0.03"]
    best = max(candidates, key=lambda row: row["HR@20"])
    assert result["grid"]["chosen"] == {"lr": best["lr"]}
    assert result["config"]["lr"] == float(best["lr"]) and result["valid"]["HR@20"] == best["HR@20"]
    run_dir = tmp_path / "runs" / "synthetic" / "tiny" / result["run_id"]
    assert json.loads((run_dir / "config.json").read_text())["config"]["lr"] == float(best["lr"])
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json", "-q")  # the tested checkpoint is the chosen one
    assert code == 0 and json.loads(out)["HR@20"] == pytest.approx(result["test"]["HR@20"])
    # each candidate trains as a plain bench run of its config would, from the same seed
    code, _, _ = run(capsys, "bench", *TINY, "--set", "lr=0.03", "--results-dir", "plain")
    plain = result_of(tmp_path / "plain", "tiny")
    assert candidates[1]["HR@20"] == plain["valid"]["HR@20"] and candidates[1]["selected_epoch"] == plain["selected_epoch"]


@pytest.mark.slow  # three grid calls, each training its candidates
def test_grid_parts_share_a_search_that_the_full_call_resumes_refits_and_tests(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001,0.03", "--grid", "dropout=0.25,0.5", "-o", "runs/g")
    for part in ("1/3", "2/3", "3/3"):
        code, out, _ = run(capsys, "bench", *TINY, *grid, "--grid-part", part)
        assert code == 0 and f"grid part {part} trained" in out
    assert not (tmp_path / "results").exists()  # a part tests nothing
    run_dir = tmp_path / "runs" / "g"
    assert len([path for path in (run_dir / "grid").iterdir() if path.is_dir()]) == 4
    trained = {path: path.stat().st_mtime_ns for path in (run_dir / "grid").glob("*/train.jsonl")}
    code, _, _ = run(capsys, "bench", *TINY, *grid, "--resume", "--refit")
    assert code == 0
    assert {path: path.stat().st_mtime_ns for path in trained} == trained  # nothing trained again
    result = result_of(tmp_path / "results", "tiny")
    assert result["refit"]["epochs"] == result["selected_epoch"] + 1  # the chosen candidate, retrained on all
    assert (run_dir / "refit" / "model.safetensors").exists()
    shared = result["grid"]
    code, _, _ = run(capsys, "bench", *TINY, *grid[:-2], "-o", "runs/one", "--results-dir", "one")  # one process
    alone = result_of(tmp_path / "one", "tiny")["grid"]
    strip = lambda rows: [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]  # noqa: E731
    assert strip(shared["candidates"]) == strip(alone["candidates"]) and shared["chosen"] == alone["chosen"]


@pytest.mark.slow  # two worker processes train NARM
def test_grid_workers_train_the_candidates_in_processes_and_pick_as_one_process_would(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001,0.03")
    code, out, _ = run(capsys, "bench", "narm", *SMALL_NARM, *grid, "-o", "runs/workers", "--grid-workers", "2")
    assert code == 0 and "chosen on validation HR@20" in out
    run_dir = tmp_path / "runs" / "workers"
    logs = sorted(path.name for path in (run_dir / "grid").glob("worker-*.log"))
    assert logs == ["worker-1.log", "worker-2.log"]
    assert all("grid part" in (run_dir / "grid" / name).read_text() for name in logs)  # each trained its share
    shared = result_of(tmp_path / "results", "narm")
    assert "--grid-workers 2" in shared["command"]
    code, _, _ = run(capsys, "bench", "narm", *SMALL_NARM, *grid, "-o", "runs/one", "--results-dir", "one")
    alone = result_of(tmp_path / "one", "narm")
    strip = lambda rows: [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]  # noqa: E731
    assert strip(shared["grid"]["candidates"]) == strip(alone["grid"]["candidates"])
    scores = lambda result: {k: v for k, v in result["test"].items() if k.startswith(("HR@", "MRR@"))}  # noqa: E731
    assert shared["grid"]["chosen"] == alone["grid"]["chosen"] and scores(shared) == scores(alone)


def test_a_grid_resumes_from_its_records_alone_where_the_checkpoints_are_gone(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001,0.03", "--grid-records", "kept", "-o", "runs/g")
    code, _, _ = run(capsys, "bench", *TINY, *grid, "--refit")
    assert code == 0 and sorted(path.name for path in (tmp_path / "kept").iterdir()) == ["lr=0.001.json", "lr=0.03.json"]
    first = result_of(tmp_path / "results", "tiny")
    shutil.rmtree(tmp_path / "runs")  # a new machine: only the records came along
    assert run(capsys, "bench", *TINY, *grid, "--refit", "--resume")[0] == 0
    assert not list((tmp_path / "runs" / "g" / "grid").glob("*/train.jsonl"))  # no candidate trained again
    again = result_of(tmp_path / "results", "tiny")
    assert again["grid"]["candidates"] == first["grid"]["candidates"] and again["grid"]["chosen"] == first["grid"]["chosen"]
    scores = lambda result: {k: v for k, v in result["test"].items() if k.startswith(("HR@", "MRR@"))}  # noqa: E731
    assert scores(again) == scores(first)  # the refit of the chosen config, from the same seed
    status = json.loads(run(capsys, "status", "runs/g", "--json")[1])
    progress = {part["part"]: part["progress"] for part in status["parts"]}
    assert progress["grid/lr=0.03"]["finished"] and progress["grid/lr=0.03"]["record"]
    shutil.rmtree(tmp_path / "runs" / "g" / "grid" / "lr=0.03")  # the search's records folder still tells
    status = json.loads(run(capsys, "status", "runs/g", "--json")[1])
    progress = {part["part"]: part["progress"] for part in status["parts"]}
    assert progress["grid/lr=0.03"]["record"] == "kept/lr=0.03.json"
    assert progress["grid/lr=0.03"]["best_valid"]["HR@20"] == first["grid"]["candidates"][1]["HR@20"]


def test_a_candidate_chosen_from_its_record_alone_is_trained_again_to_be_tested_without_refit(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001,0.03", "--grid-records", "kept", "-o", "runs/g")
    assert run(capsys, "bench", *TINY, *grid)[0] == 0
    first = result_of(tmp_path / "results", "tiny")
    shutil.rmtree(tmp_path / "runs")
    assert run(capsys, "bench", *TINY, *grid, "--resume")[0] == 0
    trained = [path.parent.name for path in (tmp_path / "runs" / "g" / "grid").glob("*/train.jsonl")]
    assert trained == ["lr=" + first["grid"]["chosen"]["lr"]]  # only the chosen one, for its weights
    again = result_of(tmp_path / "results", "tiny")
    assert again["grid"]["candidates"] == first["grid"]["candidates"]
    assert again["test"]["HR@20"] == first["test"]["HR@20"] and again["test"]["MRR@20"] == first["test"]["MRR@20"]


def test_a_grid_record_made_under_other_settings_is_refused_not_overwritten(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001", "--grid-records", "kept", "-o", "runs/g")
    assert run(capsys, "bench", *TINY, *grid)[0] == 0
    kept = (tmp_path / "kept" / "lr=0.001.json").read_text()
    code, _, err = run(capsys, "bench", *TINY, "--set", "embedding_size=16", *grid, "--resume")
    assert code == 2 and "trained under other settings (config differ)" in err
    code, _, err = run(capsys, "bench", *TINY, *grid)  # a fresh search would train it again
    assert code == 2 and "kept already holds 1 candidate records (lr=0.001.json, ...): add --resume" in err
    assert (tmp_path / "kept" / "lr=0.001.json").read_text() == kept


@pytest.mark.slow  # two fresh interpreters
def test_failed_grid_workers_are_a_clear_error_naming_their_logs(tmp_path):
    from nextclick.runs.search import train_grid_in_workers

    with pytest.raises(ChildProcessError, match=r"worker 1 \(exit 2, log .*worker-1\.log\), worker 2"):
        train_grid_in_workers(["bench"], 2, 2, tmp_path, progress=False)
    assert "error: the following arguments are required: model" in (tmp_path / "grid" / "worker-1.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (("bench", "s-pop", "--grid", "alpha=1,2"), "unknown option 'alpha'"),
    (("bench", "sknn", "--grid", "neighbours=5,10", "--grid-part", "1/2"), "statistical"),
    (("bench", "narm", "--grid-part", "1/2"), "give the --grid too"),
    (("bench", "narm", "--grid", "lr=0.1", "--set", "lr=0.2"), "both searched"),
    (("bench", "narm", "--grid", "lr=0.1,fast"), "lr"),
    (("bench", "narm", "--grid", "lr=0.1,0.1"), "repeats"),
    (("bench", "narm", "--grid", "lr=0.1", "--grid-part", "3/2"), "K/N"),
    (("bench", "narm", "--grid", "lr=../x"), "letters, digits"),
    (("bench", "narm", "--grid-workers", "2"), "give the --grid too"),
    (("bench", "narm", "--grid", "lr=0.1,0.2", "--grid-workers", "2", "--grid-part", "1/2"), "exclude each other"),
    (("bench", "narm", "--grid", "lr=0.1,0.2", "--grid-workers", "0"), "at least 1"),
    (("bench", "narm", "--grid-records", "kept"), "give the --grid too"),
])
def test_bad_grids_are_clear_errors_before_any_training(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "-q")
    assert code == 2 and message in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a grid search of several candidates
def test_a_grid_search_says_which_candidate_it_is_training(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    argv = ("bench", "tiny", "--threads", "1", "--grid", "lr=0.001,0.01")
    code, _, err = run(capsys, *argv)
    assert code == 0 and "grid candidate 1 of 2: lr=0.001" in err and "grid candidate 2 of 2: lr=0.01" in err
    code, _, err = run(capsys, *argv, "--resume")
    assert code == 0 and "grid candidate 2 of 2: lr=0.01 (finished earlier: its record is kept in runs/" in err


def test_status_lists_grid_candidates_finished_and_not_begun(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    grid = ("--grid", "lr=0.001,0.03", "--grid", "dropout=0.25,0.5", "-o", "runs/g")
    code, _, _ = run(capsys, "bench", *TINY, *grid, "--grid-part", "1/2")
    assert code == 0
    code, out, _ = run(capsys, "status", "runs/g", "--json")
    status = json.loads(out)
    assert status["grid_candidates"] == 4 and status["tested"] is None
    progress = {part["part"]: part["progress"] for part in status["parts"]}
    assert list(progress) == ["grid/lr=0.001,dropout=0.25", "grid/lr=0.001,dropout=0.5",
                              "grid/lr=0.03,dropout=0.25", "grid/lr=0.03,dropout=0.5"]
    begun = [name for name, value in progress.items() if value is not None]
    assert begun == ["grid/lr=0.001,dropout=0.25", "grid/lr=0.03,dropout=0.25"]  # part 1 of 2
    assert all(progress[name]["finished"] and progress[name]["epochs_done"] == 2 for name in begun)
    code, out, _ = run(capsys, "status", "runs/g")
    assert code == 0 and "4 candidates: 2 finished, 2 not begun" in out and "not tested yet" in out
    assert out.count("<- best so far") == 1


def test_status_tells_an_interrupted_run_from_a_finished_one(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    import nextclick.training.loop as loop

    evaluate, calls = loop.evaluate, []

    def interrupted_in_the_second_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", interrupted_in_the_second_validation)
    argv = ("bench", *TINY, "--epochs", "3", "--select", "MRR@20", "--refit", "-o", "runs/r")
    assert run(capsys, *argv)[0] == 130
    status = json.loads(run(capsys, "status", "runs/r", "--json")[1])
    [selection] = status["parts"]
    assert selection["part"] == "selection" and selection["progress"]["epochs_done"] == 1
    assert selection["progress"]["finished"] is False and selection["progress"]["select_metric"] == "MRR@20"
    assert "continues with --resume" in run(capsys, "status", "runs/r")[1]
    monkeypatch.setattr(loop, "evaluate", evaluate)
    assert run(capsys, *argv, "--resume")[0] == 0
    status = json.loads(run(capsys, "status", "runs/r", "--json")[1])
    selection, refit = status["parts"]
    assert selection["progress"]["finished"] and selection["progress"]["epochs_done"] == 3
    assert refit["part"] == "refit" and refit["progress"]["finished"] and refit["progress"]["select_metric"] is None
    assert status["tested"]["HR@20"] >= 0
    # states saved before they recorded their limits read the same, the selecting metric inferred
    state_path = tmp_path / "runs" / "r" / "selection" / "training" / "state.json"
    state = json.loads(state_path.read_text())
    del state["limits"]
    state_path.write_text(json.dumps(state))
    old = json.loads(run(capsys, "status", "runs/r", "--json")[1])["parts"][0]["progress"]
    assert {k: old[k] for k in ("finished", "select_metric", "patience")} == {"finished": True, "select_metric": "MRR@20", "patience": 3}


def test_status_of_a_directory_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "status", str(tmp_path))
    assert code == 2 and "not a run directory" in err


def test_status_says_a_statistical_run_is_fitted_not_begun(tmp_path, capsys):
    assert run(capsys, "train", "s-pop", "-o", str(tmp_path / "r"), "-q")[0] == 0
    code, out, _ = run(capsys, "status", str(tmp_path / "r"))
    assert code == 0 and "fitted (a statistical model" in out and "not begun" not in out


def test_models_presets_prints_the_config_values_each_preset_sets(capsys):
    code, out, _ = run(capsys, "models", "--presets", "danser")
    assert code == 0 and json.loads(out)["one-layer"] == {"layers": 1}
    code, out, _ = run(capsys, "models", "--presets", "stamp")
    assert code == 0 and json.loads(out)["dsan"]["renorm"] == "table"
    code, out, _ = run(capsys, "models", "--presets", "narm")
    assert code == 0 and json.loads(out) == {}


MALLOC_PROBE = """
import ctypes, sys
import numpy as np

class MallocInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallocInfo
if sys.argv[1:]:
    from nextclick.cli import main
    main(sys.argv[1:])
buffer = np.ones(64 << 20, np.uint8)
print(libc.mallinfo2().hblkhd >= 64 << 20)  # a mapping of its own: given back when freed, faulted in again
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_commands_keep_freed_memory_for_reuse_instead_of_mapping_each_large_buffer_afresh():
    """Without it, every training step's large buffers (gradient tables, score blocks) were fresh
    mappings, page-faulted in again: 27% of an SR-IEM step (nextclick.runtime.keep_freed_memory)."""
    def mapped_afresh(*command: str, **environment: str) -> bool:
        done = subprocess.run([sys.executable, "-c", MALLOC_PROBE, *command], capture_output=True, text=True, check=True,
                              env={**os.environ, **environment})
        return done.stdout.split()[-1] == "True"

    command = ("recommend", "/no/such/run", "1")  # any command, even one that fails at once
    assert mapped_afresh()  # glibc's default
    assert not mapped_afresh(*command)
    assert mapped_afresh(*command, NEXTCLICK_KEEP_FREED_MEMORY="0")  # the opt-out
