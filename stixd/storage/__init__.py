"""Storage for tasks: buckets mounted or copied onto nodes, and volumes (issue 19)."""
