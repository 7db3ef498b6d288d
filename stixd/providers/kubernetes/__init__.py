"""Kubernetes: contexts as pools, no provider yet (planned, not launchable)."""
