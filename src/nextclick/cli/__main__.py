"""`python -m nextclick.cli`: what grid workers and torchrun run."""

import os
import sys

from nextclick.cli import main

code = main()
if "RANK" in os.environ:  # possibly one of torchrun's processes: training/distributed.leave says why
    from nextclick.training import distributed

    if distributed.launched():
        distributed.leave(code)
sys.exit(code)
