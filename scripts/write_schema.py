#!/usr/bin/env python3
"""Write config/teams.schema.json from the pydantic model in stacks/settings.py (`make schema`)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.settings import json_schema  # noqa: E402

SCHEMA_PATH = ROOT / "config" / "teams.schema.json"


def render() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
