"""Runs: fit and select on validation (select), search (search), benchmark and results (bench, identity),
how far a run got (status). Drives the models and the trainer; nothing below imports it."""
