"""Training neural models: `loop` (the one trainer), `state` (save and resume in one commit).
Models never import this package; it drives them through their contract (nextclick.models.base)."""
