"""The ssh provider: SSH node pools from ssh_node_pools.yaml."""
