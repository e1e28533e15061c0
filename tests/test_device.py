"""Where neural models run: `--device auto|cpu|cuda`. The CUDA tests run only where torch sees a GPU
(the lent device machine); CI has none and skips them, while the CPU-side contract is checked here."""

import pytest
import torch

from nextclick.checkpoint import load_tensors
from nextclick.data.batches import make_batch
from nextclick.data.synthetic import SyntheticConfig, generate
from nextclick.evaluate import evaluate
from nextclick.models import build
from nextclick.runtime import resolve_device
from nextclick.training.loop import TrainOptions, train_model
from nextclick.training.state import committed_tensors_path

NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SMALL = {"dsan": dict(embedding_dim=16, max_positions=32), "narm": dict(hidden_size=16, embedding_size=16),
         "sr-iem": dict(embedding_size=16)}


def split():
    return generate(SyntheticConfig(n_items=60, n_categories=4, n_sessions=200)).split


def test_auto_device_is_the_gpu_when_torch_sees_one_else_the_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_an_unknown_device_name_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")


def test_checkpoints_hold_cpu_tensors_so_they_load_anywhere(tmp_path):
    s = split()
    fit, valid = s.carve_validation()
    torch.manual_seed(0)
    model = build("dsan", s.n_items, SMALL["dsan"])
    train_model(model, fit, valid, TrainOptions(epochs=1, batch_size=64, progress=False, quiet=True,
                                                checkpoint_dir=str(tmp_path), keep_epochs=True))
    state = committed_tensors_path(tmp_path).relative_to(tmp_path)
    for name in ("model.safetensors", state, "epochs/epoch_0.safetensors"):
        assert {t.device.type for t in load_tensors(tmp_path / name).values()} == {"cpu"}, name


@NEEDS_GPU
@pytest.mark.parametrize("name", ["dsan", "narm", "sr-iem"])
def test_a_model_trained_on_the_gpu_scores_as_its_cpu_copy_does(name, tmp_path):
    s = split()
    fit, valid = s.carve_validation()
    torch.manual_seed(0)
    model = build(name, s.n_items, SMALL[name])
    train_model(model, fit, valid, TrainOptions(epochs=2, batch_size=64, progress=False, quiet=True, device="cuda",
                                                checkpoint_dir=str(tmp_path)))
    assert model.device.type == "cuda"
    on_cpu = build(name, s.n_items, SMALL[name])
    on_cpu.load_state_tensors(load_tensors(tmp_path / "model.safetensors"))
    batch = make_batch(s.test)
    # cuDNN's GRU computes in TF32 by default (torch.backends.cudnn.allow_tf32): ~1e-4 relative
    assert torch.allclose(model.score(batch).cpu(), on_cpu.score(batch), rtol=2e-3, atol=2e-3, equal_nan=True)
    gpu_ranks = evaluate(model.score, s.test).ranks
    cpu_ranks = evaluate(on_cpu.score, s.test).ranks
    assert (gpu_ranks != cpu_ranks).mean() < 0.02  # float ties may break differently across devices


@NEEDS_GPU
def test_gpu_training_interrupted_and_resumed_ends_with_the_same_weights(tmp_path):
    s = split()
    fit, valid = s.carve_validation()
    options = dict(patience=10, progress=False, quiet=True, batch_size=64, device="cuda")
    torch.manual_seed(0)
    straight = build("dsan", s.n_items, SMALL["dsan"])
    train_model(straight, fit, valid, TrainOptions(epochs=3, checkpoint_dir=str(tmp_path / "a"), **options))
    torch.manual_seed(0)
    interrupted = build("dsan", s.n_items, SMALL["dsan"])
    train_model(interrupted, fit, valid, TrainOptions(epochs=1, checkpoint_dir=str(tmp_path / "b"), **options))
    torch.manual_seed(0)
    resumed = build("dsan", s.n_items, SMALL["dsan"])
    train_model(resumed, fit, valid, TrainOptions(epochs=3, checkpoint_dir=str(tmp_path / "b"), resume=True, **options))
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-4), key


@NEEDS_GPU
def test_dsan_on_the_gpu_encodes_without_length_groups_by_default_and_scores_the_same(length_group_calls):
    calls = length_group_calls
    s = split()
    torch.manual_seed(0)
    on_cpu = build("dsan", s.n_items, SMALL["dsan"])
    on_gpu = build("dsan", s.n_items, SMALL["dsan"])
    on_gpu.load_state_dict(on_cpu.state_dict())
    on_gpu.to("cuda")
    batch = make_batch(s.test)
    gpu_scores = on_gpu.score(batch).cpu()
    assert not calls  # one padded group on the GPU
    assert torch.allclose(gpu_scores, on_cpu.score(batch), atol=1e-4) and calls  # length groups on the CPU


def test_the_machine_record_names_the_vector_units_speed_depends_on(monkeypatch, tmp_path):
    import nextclick.runtime as runtime

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n")
    real_path = runtime.Path
    monkeypatch.setattr(runtime, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    assert runtime.cpu_features() == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert runtime.machine_info(threads=1)["cpu_features"] == ["avx2", "fma", "avx512f", "avx512_bf16"]
    monkeypatch.setattr(runtime, "Path", lambda name: tmp_path / "missing")
    assert runtime.cpu_features() == []
