"""`python -m nextclick.cli`: what grid workers run."""

import sys

from nextclick.cli import main

sys.exit(main())
