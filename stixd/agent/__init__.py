"""The on-node agent (SkyPilot's "skylet" role).

Standard library only, and only relative imports between its modules: it runs on bare nodes,
shipped inside a zipapp under the package name ``stix_agent``.
"""

PROTOCOL = 1
"""Version of the JSON-lines protocol spoken on the agent's Unix socket."""
