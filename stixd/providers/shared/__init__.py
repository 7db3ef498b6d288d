"""Pieces several providers share: the SSH transport, agent bootstrap, node shells, file sync."""
