"""``python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json``."""

import json
import sys

from calpendo_assets.config.models import json_schema

if sys.argv[1:] != ["--schema"]:
    raise SystemExit("usage: python -m calpendo_assets.config --schema > config/calpendo-mwl.schema.json")
print(json.dumps(json_schema(), indent=2))
