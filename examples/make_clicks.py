"""Writes examples/clicks.csv, the small click log of docs/tutorial.md: sessions from nextclick's synthetic
generator (nextclick.data.synthetic; no real data), dressed as a log of your own would be.

    session_id,item_id,timestamp
    1,100013,1764547200

Item ids are raw catalogue ids (100000 + 13 x the generator's index), not 1..n, so the tutorial shows
the vocabulary mapping them; sessions start through 14 days, clicks 20 to 120 s apart, so a time split
has a test window to cut. Run from the repository root: `python examples/make_clicks.py`. The output is
deterministic (fixed seeds) and committed; rerunning rewrites the same file.
"""

from pathlib import Path

import numpy as np

from nextclick.data.synthetic import SyntheticConfig, generate

CONFIG = SyntheticConfig(n_items=300, n_categories=8, n_sessions=1500, seed=40)
START = 1_764_547_200  # 2025-12-01 00:00 UTC
DAYS = 14


def sessions_in_time_order(config: SyntheticConfig) -> list[np.ndarray]:
    """Every generated session (training ones, then test ones: the generator's time order), as indices."""
    split = generate(config).split
    test = split.test.sessions
    return [split.train[i] for i in range(len(split.train))] + [test[i] for i in range(len(test))]


def rows(sessions: list[np.ndarray], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    starts = START + np.sort(rng.uniform(0, DAYS * 86_400, size=len(sessions))).astype(np.int64)
    lines = ["session_id,item_id,timestamp"]
    for number, (session, start) in enumerate(zip(sessions, starts), 1):
        times = start + np.cumsum(rng.integers(20, 121, size=len(session))) - 20
        lines += [f"{number},{100_000 + 13 * int(item)},{int(time)}" for item, time in zip(session, times)]
    return lines


if __name__ == "__main__":
    path = Path(__file__).parent / "clicks.csv"
    path.write_text("\n".join(rows(sessions_in_time_order(CONFIG))) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
