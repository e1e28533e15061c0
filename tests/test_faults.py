"""Nothing a user has is ever damaged, and a run killed at any instant resumes exactly.

The kill is simulated at every write a short training makes: each write ends in one rename
(nextclick.atomic.rename_into_place), and the n-th is interrupted just before or just after it, as a
SIGKILL there would leave the disk. The resumed run must then end with the weights, history and files of
a run that was never interrupted.
"""

import csv
import errno
import json
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nextclick import atomic
from nextclick.cli import main
from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.training.loop import TrainOptions, train_model
from nextclick.training.state import committed_tensors_path, training_progress, training_state_path


class Killed(BaseException):
    """A kill: no handler in the code under test catches it (it is no Exception, nor KeyboardInterrupt)."""


def kill_at_rename(monkeypatch, number: int, after: bool) -> None:
    """Interrupt the `number`-th rename of the process (1-based), just before it or just after it."""
    rename, calls = atomic.rename_into_place, []

    def interrupted(source, target):
        calls.append(target)
        if len(calls) == number and not after:
            raise Killed(target)
        rename(source, target)
        if len(calls) == number:
            raise Killed(target)

    monkeypatch.setattr(atomic, "rename_into_place", interrupted)


def count_renames(monkeypatch) -> list:
    rename, calls = atomic.rename_into_place, []
    monkeypatch.setattr(atomic, "rename_into_place", lambda source, target: calls.append(target) or rename(source, target))
    return calls


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "cases_per_second", "valid_seconds")} for r in records]


def log_of(directory: Path) -> list[dict]:
    return without_timings([json.loads(line) for line in (directory / "train.jsonl").read_text().splitlines()])


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` but the logs and states that hold timings, by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in ("train.jsonl", "state.json")}


# --- the trainer ------------------------------------------------------------------------------------

SPLIT = generate(SyntheticConfig(n_items=60, n_categories=4, n_sessions=200)).split
FIT, VALID = SPLIT.carve_validation()


def tiny_options(directory: Path, **changes) -> TrainOptions:
    # lr 1.0 overshoots: validation falls after epoch 1, so the best weights are not the last ones
    return TrainOptions(**{"epochs": 4, "patience": 10, "batch_size": 32, "max_batches": 3, "progress": False,
                           "quiet": True, "keep_epochs": True, "checkpoint_dir": str(directory), **changes})


def train_tiny(tiny_model, directory: Path, resume: bool = False):
    torch.manual_seed(0)
    model = tiny_model(SPLIT.n_items, tiny_model.Config(dropout=0.5, lr=1.0))  # dropout: the RNG must resume too
    result = train_model(model, FIT, VALID, tiny_options(directory, resume=resume))
    return model, result


def test_a_training_killed_at_any_write_resumes_to_the_weights_and_files_of_an_uninterrupted_one(
        tmp_path, monkeypatch, tiny_model):
    with monkeypatch.context() as patch:
        renames = count_renames(patch)
        straight, expected = train_tiny(tiny_model, tmp_path / "straight")
    assert expected.best_epoch < expected.epochs_run - 1, "the best weights should differ from the last ones"
    assert len(renames) >= 4 * 4  # per epoch: kept epoch, state tensors, state.json, log (+ best weights)
    for number in range(1, len(renames) + 1):
        for after in (False, True):
            directory = tmp_path / f"killed-{number}-{'after' if after else 'before'}"
            with monkeypatch.context() as patch:
                kill_at_rename(patch, number, after)
                with pytest.raises(Killed):
                    train_tiny(tiny_model, directory)
            resumed, result = train_tiny(tiny_model, directory, resume=training_state_path(directory).exists())
            where = f"killed {'after' if after else 'before'} rename {number} ({renames[number - 1]})"
            for key, value in straight.state_dict().items():
                assert torch.equal(value, resumed.state_dict()[key]), (where, key)
            assert without_timings(result.history) == without_timings(expected.history), where
            assert result.best_epoch == expected.best_epoch and result.best_valid == expected.best_valid, where
            assert log_of(directory) == log_of(tmp_path / "straight"), where  # no epoch twice, none missing
            assert files_of(directory) == files_of(tmp_path / "straight"), where


def test_a_state_saved_by_the_previous_format_still_resumes_exactly(tmp_path, tiny_model):
    straight, expected = train_tiny(tiny_model, tmp_path / "straight")
    old = tmp_path / "old"
    torch.manual_seed(0)
    model = tiny_model(SPLIT.n_items, tiny_model.Config(dropout=0.5, lr=1.0))
    train_model(model, FIT, VALID, tiny_options(old, epochs=2))
    # what the code before the one-step commit wrote: state.json without a tensors name, state.safetensors
    state = json.loads(training_state_path(old).read_text())
    tensors = load_file(committed_tensors_path(old))
    save_file({k: v for k, v in tensors.items() if not k.startswith("best.")}, old / "training" / "state.safetensors")
    committed_tensors_path(old).unlink()
    del state["format"], state["tensors"]
    training_state_path(old).write_text(json.dumps(state))
    assert training_progress(old)["epochs_done"] == 2  # `nextclick status` reads it
    resumed, result = train_tiny(tiny_model, old, resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert without_timings(result.history) == without_timings(expected.history)
    assert not (old / "training" / "state.safetensors").exists()  # the first new commit replaced it


# --- the command line -------------------------------------------------------------------------------

TRAIN = ("train", "tiny", "-q", "--threads", "1", "--max-batches", "3", "--epochs", "3", "--set", "dropout=0.5")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # a train command killed at each of its writes (the training-level twin below stays in make test)
def test_train_killed_at_any_write_and_resumed_ends_as_an_uninterrupted_train(tmp_path, capsys, monkeypatch, tiny_model):
    with monkeypatch.context() as patch:
        renames = count_renames(patch)
        assert run(capsys, *TRAIN, "-o", tmp_path / "straight")[0] == 0
    expected = files_of(tmp_path / "straight")
    for number in range(1, len(renames) + 1):
        for after in (False, True):
            directory = tmp_path / f"killed-{number}-{after}"
            with monkeypatch.context() as patch:
                kill_at_rename(patch, number, after)
                with pytest.raises(Killed):
                    main([*TRAIN, "-o", str(directory)])
            for folder in (directory, directory / "training"):  # what a SIGKILL leaves of a write: its temporary file
                folder.mkdir(parents=True, exist_ok=True)
                (folder / ".state.json.k1ll3d00").write_text("half")
            code, _, err = run(capsys, *TRAIN, "-o", directory, "--resume")
            where = f"killed {'after' if after else 'before'} rename {number} ({renames[number - 1]})"
            assert code == 0, (where, err)
            assert files_of(directory) == expected, where
            assert log_of(directory) == log_of(tmp_path / "straight"), where


@pytest.mark.slow  # about a hundred short bench runs
def test_bench_with_refit_killed_at_any_write_and_resumed_tests_as_an_uninterrupted_bench(
        tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    bench = ("bench", "tiny", "-q", "--threads", "1", "--max-batches", "3", "--epochs", "3", "--refit",
             "--set", "dropout=0.5")

    def outcome(name: str) -> tuple:
        [path] = (tmp_path / name).glob("synthetic/tiny/*/result.json")
        result = json.loads(path.read_text())
        files = {k: v for k, v in files_of(tmp_path / "runs" / name).items() if k != "metrics.json"}  # timings
        return (without_timings([result["test"]]), result["valid"], result["selected_epoch"],
                without_timings(result["refit"]["history"]), (path.parent / "ranks.npz").read_bytes(), files)

    with monkeypatch.context() as patch:
        renames = count_renames(patch)
        assert run(capsys, *bench, "-o", "runs/straight", "--results-dir", "straight")[0] == 0
    expected = outcome("straight")
    for number in range(1, len(renames) + 1):
        for after in (False, True):
            name = f"killed-{number}-{after}"
            with monkeypatch.context() as patch:
                kill_at_rename(patch, number, after)
                with pytest.raises(Killed):
                    main([*bench, "-o", f"runs/{name}", "--results-dir", name])
            code, _, err = run(capsys, *bench, "-o", f"runs/{name}", "--results-dir", name, "--resume")
            assert code == 0, (name, renames[number - 1], err)
            assert outcome(name) == expected, (name, renames[number - 1])


def test_train_refuses_to_replace_a_finished_run_without_force(tmp_path, capsys, tiny_model):
    run_dir = tmp_path / "run"
    assert run(capsys, *TRAIN, "-o", run_dir)[0] == 0
    before = files_of(run_dir)
    code, _, err = run(capsys, *TRAIN, "-o", run_dir, "--set", "lr=0.03")
    assert code == 2 and err.count("\n") == 1
    assert f"{run_dir} already holds a finished run" in err and "--resume" in err and "--force" in err
    assert files_of(run_dir) == before
    code, _, err = run(capsys, *TRAIN, "-o", run_dir, "--set", "lr=0.03", "--force")
    assert code == 0, err
    assert json.loads((run_dir / "config.json").read_text())["config"]["lr"] == 0.03


def test_bench_refuses_to_replace_a_tested_run_without_force(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    bench = ("bench", "tiny", "-q", "--threads", "1", "--max-batches", "3", "--epochs", "2", "-o", "runs/b")
    assert run(capsys, *bench)[0] == 0
    before = files_of(tmp_path / "runs" / "b")
    code, _, err = run(capsys, *bench)
    assert code == 2 and "runs/b already holds a finished run: continue it with --resume, or replace it with --force" in err
    assert files_of(tmp_path / "runs" / "b") == before
    assert run(capsys, *bench, "--force")[0] == 0


def test_a_grid_search_begun_earlier_is_continued_or_replaced_not_trained_over(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    bench = ("bench", "tiny", "-q", "--threads", "1", "--max-batches", "3", "--epochs", "2", "-o", "runs/g",
             "--grid", "lr=0.01,0.03")
    assert run(capsys, *bench, "--grid-part", "1/2")[0] == 0  # the parts of a search share its directory
    assert run(capsys, *bench, "--grid-part", "2/2")[0] == 0
    trained = files_of(tmp_path / "runs" / "g" / "grid")
    code, _, err = run(capsys, *bench)
    assert code == 2 and "runs/g already holds a grid search begun earlier" in err and "--resume" in err
    assert files_of(tmp_path / "runs" / "g" / "grid") == trained
    assert run(capsys, *bench, "--resume")[0] == 0


def test_resume_under_other_settings_is_refused_naming_them(tmp_path, capsys, tiny_model):
    run_dir = tmp_path / "run"
    assert run(capsys, *TRAIN, "-o", run_dir)[0] == 0
    before = files_of(run_dir)
    code, _, err = run(capsys, *TRAIN, "-o", run_dir, "--resume", "--set", "lr=0.03", "--epochs", "5", "--seed", "2")
    assert code == 2 and err.count("\n") == 1
    assert f"{run_dir} was trained with other settings:" in err
    assert "lr 0.01 (now 0.03)" in err and "epochs 3 (now 5)" in err and "seed 1 (now 2)" in err
    assert files_of(run_dir) == before  # config.json included: nothing is written before the checks pass
    code, out, _ = run(capsys, *TRAIN, "-o", run_dir, "--resume")  # the same settings: nothing left to train
    assert code == 0 and files_of(run_dir) == before


@pytest.mark.parametrize("blocked", ["file in the way", "read-only folder", "no permission (simulated)"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(blocked, tmp_path, capsys, monkeypatch, tiny_model):
    if blocked == "file in the way":
        (tmp_path / "taken").write_text("a file")
        target = tmp_path / "taken" / "run"
    elif blocked == "no permission (simulated)":  # what a read-only folder gives a user who is not root
        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", refused)
        target = tmp_path / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked").chmod(0o555)
        target = tmp_path / "locked" / "run"
    import nextclick.runs.select as select

    monkeypatch.setattr(select, "train_model", lambda *a, **k: pytest.fail("trained before finding the output unwritable"))
    code, _, err = run(capsys, *TRAIN, "-o", target)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write to {target}" in err
    assert not target.exists()


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_the_saved_state_to_resume(tmp_path, capsys, monkeypatch, tiny_model):
    assert run(capsys, *TRAIN, "-o", tmp_path / "straight")[0] == 0
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_at_rename(patch, 5, after=True)  # config, vocab, and the first epoch's commit are written
        with pytest.raises(Killed):
            main([*TRAIN, "-o", str(run_dir)])
    saved = {path: path.read_bytes() for path in (run_dir / "training").iterdir()}
    fsync = os.fsync

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        code, _, err = run(capsys, *TRAIN, "-o", run_dir, "--resume")
    assert os.fsync is fsync
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "No space left on device" in err and str(run_dir) in err
    assert {path: path.read_bytes() for path in (run_dir / "training").iterdir()} == saved  # no temporary files either
    assert run(capsys, *TRAIN, "-o", run_dir, "--resume")[0] == 0  # space again: the run goes on, exactly
    assert files_of(run_dir) == files_of(tmp_path / "straight")


def test_status_reads_a_train_run(tmp_path, capsys, tiny_model):
    assert run(capsys, *TRAIN, "-o", tmp_path / "run")[0] == 0
    code, out, err = run(capsys, "status", tmp_path / "run")
    assert code == 0, err
    assert "finished" in out and "not tested yet" in out
    status = json.loads(run(capsys, "status", tmp_path / "run", "--json")[1])
    [part] = status["parts"]
    assert part["part"] == "." and part["progress"]["epochs_done"] == 3 and status["tested"] is None


def test_evaluate_finds_the_prepared_split_a_run_was_trained_on(tmp_path, capsys, monkeypatch, tiny_model):
    from nextclick.data.benchmarks import save_split

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    save_split(SPLIT, "mine")
    assert run(capsys, *TRAIN, "--dataset", "mine", "-o", "run")[0] == 0
    assert json.loads(Path("run/config.json").read_text())["dataset"] == str(tmp_path / "a" / "mine")
    monkeypatch.chdir(tmp_path / "b")  # elsewhere, where "mine" means nothing
    code, out, err = run(capsys, "evaluate", tmp_path / "a" / "run", "-q")
    assert code == 0, err
    assert "on mine test" in out


# --- data prepare -----------------------------------------------------------------------------------


def write_events(path: Path) -> None:
    """A small click log in Retailrocket's format (events.csv)."""
    rng = random.Random(3)
    rows, t = [], 1_433_221_332_000
    for visitor in range(200):
        for _ in range(rng.randint(2, 6)):
            t += rng.choice([5_000, 60_000])
            rows.append((t, visitor, "view", rng.randrange(1, 30), ""))
        t += 5 * 3_600_000
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "visitorid", "event", "itemid", "transactionid"])
        writer.writerows(rows)


def test_an_interrupted_prepare_leaves_nothing_or_the_previous_split(tmp_path, monkeypatch):
    from nextclick.data.benchmarks import DataError, load_split
    from nextclick.data.prepare import run_prepare

    events = tmp_path / "events.csv"
    write_events(events)
    out = tmp_path / "split"
    with monkeypatch.context() as patch:
        kill_at_rename(patch, 1, after=False)  # the one rename: the finished split into place
        with pytest.raises(Killed):
            run_prepare(events, "dsan", out, progress=False)
    assert not out.exists() and os.listdir(tmp_path) == ["events.csv"]  # nothing, not a part
    run_prepare(events, "dsan", out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"train.txt", "test.txt", "split.json", "stats.json"} <= set(before)
    import nextclick.data.prepare as prepare

    def write_then_die(split, path, extra=None):
        (path / "train.txt").write_text("1 2\n")
        raise Killed(path)

    with monkeypatch.context() as patch:
        patch.setattr(prepare, "write_split_files", write_then_die)
        with pytest.raises(Killed):
            run_prepare(events, "dsan", out, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous split, whole
    assert sorted(os.listdir(tmp_path)) == ["events.csv", "split"]
    assert load_split(out).protocol.name == "dsan"
    with monkeypatch.context() as patch:  # killed between its two renames: the old split aside, none in place
        kill_at_rename(patch, 1, after=True)
        with pytest.raises(Killed):
            run_prepare(events, "dsan", out, force=True, progress=False)
    assert not out.exists()
    with pytest.raises(DataError, match="already holds a split"):  # the next prepare puts the old one back first
        run_prepare(events, "dsan", out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["events.csv", "split"]
    with monkeypatch.context() as patch:  # killed after the new split is in place, before the old one is deleted
        kill_at_rename(patch, 2, after=True)
        with pytest.raises(Killed):
            run_prepare(events, "dsan", out, force=True, progress=False)
    assert len(os.listdir(tmp_path)) == 3  # events.csv, split and the old one aside
    with pytest.raises(DataError, match="already holds a split"):
        run_prepare(events, "dsan", out, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["events.csv", "split"]  # the old one removed
    assert load_split(out).protocol.name == "dsan"


def test_a_split_is_never_written_over_a_folder_of_other_files(tmp_path):
    from nextclick.data.benchmarks import DataError, save_split

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds files but no split"):
        save_split(SPLIT, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
