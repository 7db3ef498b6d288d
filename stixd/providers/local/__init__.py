"""The local provider: nodes are process groups on this machine."""
