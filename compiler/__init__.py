"""alexnetc's compiler: YAML spec -> validated spec -> MXNet-style symbolic graph -> passes.

Frontend: `source` (safe YAML with positions), `variants` (base specs and edits), `validate` (schema and
semantic checks). IR: `graph` (nodes, entries, JSON), `symbol` (composition API), `ops` (one descriptor
per op: attributes, shape rule, cost, gradient, lowering, kernel entry points). `lower` turns a spec into
a graph; `passes` transform graphs; `program` is the typed result the runtime executes; `pipeline`
drives it all; `report` presents the result (table, JSON, and Graphviz through `report.to_dot`).
Nothing here imports torch or triton.
"""
from . import symbol as sym  # noqa: F401
from .errors import Mark, ShapeError, SpecError, SpecErrors  # noqa: F401
from .graph import Entry, Graph, Node  # noqa: F401
from .pipeline import CompiledNet, compile_loaded, compile_spec, load_spec, spec_hash  # noqa: F401
