"""torch.profiler over DSAN's training steps on retailrocket, as docs/scale.md "What bounds DSAN's step" reads them.

    .venv/bin/python scripts/profile_dsan_step.py fp32
    .venv/bin/python scripts/profile_dsan_step.py bf16-scores fast_entmax=true

Argument 1 is the precision (fp32, bf16, bf16-scores), the rest KEY=VALUE config overrides. 2 threads,
glibc's malloc keeping freed memory as the CLI has it, batch 512, 3 warm-up steps, then 8 profiled steps
of the batches training draws. Prints the total self CPU time, the parts the docs name, and the matrix
products' share with the step's speed-up were they alone 3x faster (bf16's gain on this CPU). Run it with
nothing else on the cores (the benchmark queue paused).
"""

import sys

import torch

from nextclick.data.benchmarks import resolve
from nextclick.models import build
from nextclick.runtime import keep_freed_memory, set_threads
from nextclick.training.loop import TrainOptions, epoch_stream, train_step


def training_setup(precision: str, overrides: dict):
    """DSAN on retailrocket as training starts it (2 threads, glibc's malloc keeping freed memory, seed 1):
    the model in training mode, its optimizer, and the batches of batch 512 of the first epoch."""
    set_threads(2)
    keep_freed_memory()
    split = resolve("retailrocket", None)
    cases = split.train_cases()
    torch.manual_seed(1)
    model = build("dsan", split.n_items, overrides)
    model.prepare(cases.sessions)
    optimizer = model.optimizer()
    model.train()
    batches = epoch_stream(model, cases, TrainOptions(batch_size=512, seed=1, progress=False, quiet=True,
                                                      precision=precision)).batches(0)
    return model, optimizer, batches


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "fp32"
    overrides = dict(pair.split("=", 1) for pair in sys.argv[2:])
    model, optimizer, batches = training_setup(precision, overrides)
    device = torch.device("cpu")
    for _ in range(3):
        train_step(model, optimizer, next(batches), device, precision)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        for _ in range(8):
            train_step(model, optimizer, next(batches), device, precision)
    events = profile.key_averages()

    def own(name: str) -> float:
        return sum(e.self_cpu_time_total for e in events if e.key == name) / 1e6

    def whole(*names: str) -> float:
        return sum(e.cpu_time_total for e in events if e.key in names) / 1e6

    casts = sum(e.self_cpu_time_total for e in profile.key_averages(group_by_input_shape=True)
                if e.key == "aten::copy_" and e.input_shapes and e.input_shapes[0]
                and len(e.input_shapes[0]) == 2 and e.input_shapes[0][1] > 30_000) / 1e6
    print(f"8 steps, {precision}, {overrides or 'defaults'}: self CPU {sum(e.self_cpu_time_total for e in events) / 1e6:.2f} s")
    print(f"  loss {whole('_InnerProductCrossEntropy'):.2f} s, entmax by bisection "
          f"{whole('_ExactBisectEntmax', '_ExactBisectEntmaxBackward', 'EntmaxBisectFunction', 'EntmaxBisectFunctionBackward'):.2f} s, Newton entmax "
          f"{whole('_FastEntmax', '_FastEntmaxBackward'):.2f} s, dropout masks {own('aten::bernoulli_'):.2f} s, "
          f"Adam {whole('Optimizer.step#Adam.step'):.2f} s, score-block casts {casts:.2f} s")
    # what bf16 arithmetic can speed up at all: the matrix products' own time (Amdahl's bound below)
    products = sum(own(name) for name in ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"))
    share = products / (sum(e.self_cpu_time_total for e in events) / 1e6)
    print(f"  matrix products {products:.2f} s ({share:.0%}): were they 3x faster and nothing else, the step "
          f"would be {1 / (1 - share + share / 3):.2f}x faster")


if __name__ == "__main__":
    main()
