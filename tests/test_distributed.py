"""Data-parallel training under torchrun (issue 41, item 3): the ordinary `nextclick train` command in two
CPU processes (gloo) trains like one process with the same global batch, and resumes exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nextclick.cli import main
from nextclick.data.sessions import Cases
from nextclick.data.streams import PrefixStream, StreamOptions
from nextclick.data.synthetic import SyntheticConfig, generate

# NARM, small, dropout off: with it off the two runs differ only in how the gradient of a global batch
# is summed (two shares averaged by DDP's all-reduce, or one mean), i.e. in float rounding
ARGS = ["narm", "--set", "embedding_size=16", "--set", "hidden_size=16", "--set", "embedding_dropout=0",
        "--set", "context_dropout=0", "--batch-size", "256", "--max-batches", "8", "--patience", "5", "-q"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


# imported by every process a torchrun below starts when its directory is on PYTHONPATH: rank 0 dies (as by
# SIGKILL: no cleanup) right after the first commit of a training state, before anything else is written
KILL_AFTER_FIRST_COMMIT = """
import os
from nextclick import atomic
rename = atomic.rename_into_place
def rename_then_die(source, target):
    rename(source, target)
    if os.environ.get("RANK") == "0" and str(target).endswith("state.json"):
        os._exit(9)
atomic.rename_into_place = rename_then_die
"""


def torchrun(*argv: str, hook: Path | None = None, expect: int = 0) -> None:
    path = [SRC] + ([str(hook)] if hook else []) + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "nextclick.cli", "train", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == (expect == 0), done.stdout[-3000:] + done.stderr[-3000:]


def test_each_process_takes_its_share_of_every_global_batch():
    cases = Cases.every_prefix(generate(SyntheticConfig(n_items=30, n_sessions=40)).split.train, 1)
    whole = list(PrefixStream(cases, StreamOptions(batch_size=16, seed=3), lambda c, i: i).batches(0))
    shares = [list(PrefixStream(cases, StreamOptions(batch_size=16, seed=3, rank=r, world_size=3), lambda c, i: i)
                   .batches(0)) for r in range(3)]
    steps = [batch for batch in whole if len(batch) >= 3]  # a last batch smaller than the process count is left out
    assert all(len(share) == len(steps) for share in shares)
    for step, batch in enumerate(steps):
        together = sorted(int(i) for share in shares for i in share[step])
        assert together == sorted(int(i) for i in batch)  # the global batch, dealt out without loss or overlap
        assert max(len(s[step]) for s in shares) - min(len(s[step]) for s in shares) <= 1


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict:
    state = json.loads((run / "training" / "state.json").read_text())
    return {k: v for k, v in load_file(run / "training" / state["tensors"]).items() if not k.startswith("rng.")}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """Two epochs of NARM in two CPU processes under torchrun (about 10 s: two processes importing torch)."""
    run = tmp_path_factory.mktemp("distributed") / "two"
    torchrun(*ARGS, "--epochs", "2", "-o", str(run))
    return run


def test_two_processes_train_like_one(two_processes, tmp_path):
    alone = tmp_path / "one"
    assert main(["train", *ARGS, "--epochs", "2", "--threads", "1", "-o", str(alone)]) == 0
    two, one = history(two_processes), history(alone)
    assert [h["epoch"] for h in two] == [0, 1]
    for a, b in zip(two, one):
        # the same steps on the same global batches: the losses agree to float rounding (measured: 1e-8
        # relative; allowed 1e-5) ...
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        # ... and so do the validation metrics (measured: equal; allowed 0.001 of 3,506 cases, i.e. 3 cases
        # whose rank a rounding difference in the scores may move across the cut-off)
        for metric in ("HR@20", "MRR@20"):
            assert a["valid"][metric] == pytest.approx(b["valid"][metric], abs=0.001)
    state = json.loads((two_processes / "training" / "state.json").read_text())
    assert state["world_size"] == 2
    assert "rng.torch.rank1" in load_file(two_processes / "training" / state["tensors"])  # each process's own dropout


@pytest.mark.services  # two more torchruns (five processes importing torch): 30-50 s on two cores
def test_a_killed_torchrun_resumes_exactly(two_processes, tmp_path, capsys):
    # rank 0 killed right after its first commit, the run continued under torchrun: the same weights and
    # log as the uninterrupted run
    interrupted = tmp_path / "two-resumed"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_FIRST_COMMIT)
    torchrun(*ARGS, "--epochs", "2", "-o", str(interrupted), hook=hook, expect=1)
    assert json.loads((interrupted / "training" / "state.json").read_text())["epoch"] == 0
    torchrun(*ARGS, "--epochs", "2", "-o", str(interrupted), "--resume")
    assert [h["loss"] for h in history(interrupted)] == [h["loss"] for h in history(two_processes)]
    resumed, expected = weights(interrupted), weights(two_processes)
    assert resumed.keys() == expected.keys()
    assert all((resumed[k] == expected[k]).all() for k in expected)

    # the share of each batch a process takes depends on the process count: one process may not continue
    assert main(["train", *ARGS, "--epochs", "2", "--threads", "1", "-o", str(interrupted), "--resume"]) == 2
    assert "trained by 2 processes" in capsys.readouterr().err


def test_more_gpu_processes_than_gpus_is_refused_with_the_fix(monkeypatch):
    import torch

    from nextclick.training import distributed

    # as on a one-GPU machine under `torchrun --nproc_per_node 2 ... --device cuda` (seen on a lent H200)
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    first = distributed.Group(rank=0, world_size=2, local_rank=0, local_world_size=2)
    assert first.device("cuda") == torch.device("cuda", 0)
    second = distributed.Group(rank=1, world_size=2, local_rank=1, local_world_size=2)
    with pytest.raises(ValueError, match=r"2 processes .* 1 GPU.*--nproc_per_node 1.*--device cpu"):
        second.device("cuda")
