"""A service's load balancer: a process of its own that outlives the daemon.

`python -m stixd.balancer --dir DIR` serves the service's port and a control socket in DIR, over
which the daemon (`stixd.balancer.fleet`) pushes the ready set and takes the traffic counted.
The process imports nothing of stixd outside this package and `stixd.serve`, so an upgrade of
the daemon never has to restart it.
"""
