"""Lambda (``lambda``, a Python keyword, hence the folder name): planned from its catalog,
no provider yet (planned, not launchable)."""
