"""The fake provider: in-memory nodes for tests and benchmarks, never real work."""
