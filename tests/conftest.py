import os

import pytest
import torch

from nextclick.data.benchmarks import data_dir

# tests are small: one thread avoids oversubscription when other jobs share the cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def benchmarks_dir():
    root = data_dir()
    if root is None or not (root / "benchmarks").is_dir():
        pytest.skip("published splits not found (set NEXTCLICK_DATA or put ../shared/data beside the checkout)")
    return root / "benchmarks"
