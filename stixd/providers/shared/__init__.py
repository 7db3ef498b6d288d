"""Pieces several providers share: the SSH transport, agent bootstrap over any node shell, and
file sync."""
