"""Walk lemmas (placeholder filled below)."""
CHECKS: dict = {}
