"""alexnetc's compiler: YAML spec -> validated spec -> MXNet-style symbolic graph -> passes.

Frontend: `source` (safe YAML with positions), `variants` (base specs and edits), `validate` (schema and
semantic checks). IR: `graph` (nodes, entries, JSON), `symbol` (composition API), `ops` (each op's shape
rule, cost and gradient). `lower` turns a spec into a graph; `passes` transform graphs; `pipeline`
drives it all; `report` and `dot` present the result. Nothing here imports torch or triton.
"""
from . import symbol as sym  # noqa: F401
from .errors import Mark, ShapeError, SpecError, SpecErrors  # noqa: F401
from .graph import Entry, Graph, Node  # noqa: F401
from .pipeline import CompiledNet, compile_loaded, compile_spec, load_spec, spec_hash  # noqa: F401
