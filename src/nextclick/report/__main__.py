"""python -m nextclick.report RESULTS... (the same as `nextclick report`)."""

from nextclick.report import main

raise SystemExit(main())
