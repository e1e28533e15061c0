"""How a model's ranks move when the repeat decoder is added, case by case, from two committed results.

    .venv/bin/python scripts/repeat_rank_shift.py yoochoose1_64 \
        results/yoochoose1_64/sr-iem/attention_size=200,loss=ce,refit=true,shuffle=false,variant=code \
        results/yoochoose1_64/sr-iem/attention_size=200,loss=ce,refit=true,repeat=mix,shuffle=false,variant=code

Prints, for the new targets: the share that rank lower, higher and the same with the decoder, the shares
that leave and enter the top 20, and the share of the drops no larger than the session's distinct items
(the most that the session's items moving up can cost); then HR@20 / MRR@20 of the decoder's ranks on
repeat targets with the plain model's on new ones (docs/repeat.md, "Measured").
"""

import sys

import numpy as np

from nextclick.data.benchmarks import resolve
from nextclick.reproduce.significance import read_ranks


def main() -> None:
    dataset, plain_path, decoder_path = sys.argv[1:4]
    test = resolve(dataset, None).test
    repeats = test.repeats()
    distinct = np.array([len(np.unique(test.prefix(i))) for i in range(len(test))])
    plain, decoder = read_ranks(plain_path)[2], read_ranks(decoder_path)[2]
    new = ~repeats
    shift = decoder[new] - plain[new]
    print(f"new targets ({new.sum():,}): lower {(shift > 0).mean():.3f}, higher {(shift < 0).mean():.3f}, "
          f"same {(shift == 0).mean():.3f}")
    print(f"  out of the top 20 {((plain[new] <= 20) & (decoder[new] > 20)).mean():.4f}, "
          f"into it {((plain[new] > 20) & (decoder[new] <= 20)).mean():.4f}; drops within the session's distinct "
          f"items {((shift > 0) & (shift <= distinct[new])).sum() / (shift > 0).sum():.3f}")
    combined = np.where(repeats, decoder, plain)
    print(f"decoder on repeats, plain on new: HR@20 {100 * (combined <= 20).mean():.2f}, "
          f"MRR@20 {100 * np.where(combined <= 20, 1.0 / combined, 0.0).mean():.2f}")


if __name__ == "__main__":
    main()
