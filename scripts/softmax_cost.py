"""Where a full-catalogue softmax step spends its time on this CPU, at STAMP's Retailrocket shape
(batch 512, d 100, 36,969 rows): the score matmul, the two gradient matmuls, the exponentials, and the
same score matmul in bf16. Prints JSON; docs/baselines.md cites it for why STAMP stays near 1.4x RecBole.

    .venv/bin/python scripts/softmax_cost.py [--threads 2]
"""

import argparse
import json
import time

import torch


def milliseconds(step, repeats: int = 10) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return round((time.perf_counter() - start) / repeats * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, width, rows = 512, 100, 36_969
    torch.manual_seed(0)
    table, queries = torch.randn(rows, width), torch.randn(batch, width)
    upstream = torch.randn(batch, rows)  # stands for d loss / d scores
    with torch.no_grad():
        figures = {
            "scores_matmul_ms": milliseconds(lambda: queries @ table.T),
            "query_gradient_matmul_ms": milliseconds(lambda: upstream @ table),
            "table_gradient_matmul_ms": milliseconds(lambda: upstream.T @ queries),
            "exp_of_the_scores_ms": milliseconds(lambda: upstream.clone().exp_()),
            "scores_matmul_bf16_ms": milliseconds(lambda: queries.bfloat16() @ table.bfloat16().T),
        }
    print(json.dumps({"shape": [batch, width, rows], "threads": args.threads, **figures}, indent=1))


if __name__ == "__main__":
    main()
