"""Kubernetes: pods as nodes, contexts as regions; the agent reached over the API server's exec
(see provider.py, and seams.py for how the parts meet)."""
