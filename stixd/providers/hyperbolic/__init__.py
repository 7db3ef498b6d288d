"""Hyperbolic: planned from its catalog, no provider yet (planned, not launchable)."""
