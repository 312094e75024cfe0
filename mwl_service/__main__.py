"""`python -m mwl_service`: same as the `mwl-service` console script."""

import sys

from mwl_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
