"""The command line as a user runs it: clear one-line errors, working commands on synthetic data."""

import json

import pytest

from nextclick.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_has_help(capsys):
    for command in ("datasets", "models", "train", "evaluate", "recommend", "explain", "bench", "speed", "demo"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_bench_writes_a_complete_result_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "bench", "s-pop", "--results-dir", str(tmp_path / "results"), "-q")
    assert code == 0 and "HR@20" in out
    result = json.loads((tmp_path / "results" / "synthetic" / "s-pop.json").read_text())
    for key in ("test", "valid", "config", "seed", "wall_seconds", "machine", "git_commit", "command", "protocol",
                "test_by_length", "fit_seconds"):
        assert key in result, key
    assert result["machine"]["threads"] >= 1 and "torch" in result["machine"]
    assert 0 < result["test"]["HR@20"] <= 1


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


def test_speed_measures_both_layouts_and_writes_a_result(tmp_path, capsys):
    code, out, _ = run(capsys, "speed", "dsan", "--set", "embedding_dim=8", "--batches", "2", "--reference-batches", "1",
                       "--threads", "1", "--results-dir", str(tmp_path))
    assert code == 0 and "cases/s" in out
    result = json.loads((tmp_path / "synthetic" / "dsan.speed.json").read_text())
    assert result["fast_path"]["cases"] == 1024 and result["reference_path"]["cases"] == 512
    assert result["machine"]["threads"] == 1
