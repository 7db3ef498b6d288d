"""``python -m stixd.agent serve ...`` runs the agent straight from a source checkout."""

import sys

from .cli import main

sys.exit(main())
