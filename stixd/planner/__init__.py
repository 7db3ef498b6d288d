"""Placement: which infra can run a task. Pure functions, no network I/O."""
