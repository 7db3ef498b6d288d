"""Serving's pure parts: the autoscaler, rollouts, and the seam to the load balancers.

Nothing here does I/O; the service and replica actors (`stixd.actors`) call these functions and
act on what they return, and the balancer processes (`stixd.balancer`) sit behind `seams`.
"""
