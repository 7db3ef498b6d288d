"""The live web dashboard stixd serves at `/dashboard` beside its HTTP API: hand-written HTML
rendered on the server, one small script and one style sheet shipped in `static/` (no build
step), updated by one server-sent event stream per page fed by the store's writes."""

from stixd.dashboard.server import Dashboard, Gate

__all__ = ["Dashboard", "Gate"]
