"""``python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json``."""

import json
import sys

from calpendo_assets.config.models import json_schema

USAGE = "usage: python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json"

if sys.argv[1:] != ["--schema"]:
    raise SystemExit(USAGE)
print(json.dumps(json_schema(), indent=2))
