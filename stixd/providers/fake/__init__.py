"""The fake provider: a cloud for tests and benchmarks, its nodes in memory or processes."""
