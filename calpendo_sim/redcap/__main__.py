"""``python -m calpendo_sim.redcap``: the same as the ``redcap-sim`` console script."""

import sys

from .cli import main

sys.exit(main())
