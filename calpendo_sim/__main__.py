"""``python -m calpendo_sim``: same as the ``calpendo-sim`` console script."""

import sys

from .cli import main

sys.exit(main())
