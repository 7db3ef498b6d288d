"""A fake Kubernetes API server for tests (no real one can be installed here): small but
wire-faithful enough for kubectl 1.32 and kubernetes-asyncio, with pods that really run as
sandboxes of local processes. Start it with `python -m tests.kube_fake` (tests/README.md) or
in a running loop with `tests.kube_fake.server.serve`."""
