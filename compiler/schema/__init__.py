"""The spec language's JSON Schema (Draft 2020-12), shipped as package data and loaded once."""
from __future__ import annotations

import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def spec_schema() -> dict:
    return json.loads(resources.files(__name__).joinpath("alexnetc.schema.json").read_text("utf-8"))
