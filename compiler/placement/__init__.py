"""The placement planner behind `alexnetc place`: how to split a network across N devices.

`units` (what can be placed and split without changing the network), `spec_edits` (a placement as a
placed spec and as a variant file), `reference` and `stages` (costs of any placement read from one
compiled reference per tower width), `search` (dynamic programming over the layer order, for every
data-parallel width), `evaluate` (a placement's exact figures: compiled, memory plan, cost model),
`measured` (profiled times instead of the roofline), `shipped` (the hand placements to compare
with) and `planner` (all of it, for the command). Pure Python: it needs neither torch nor a GPU.
"""
from .evaluate import Evaluation, evaluate  # noqa: F401
from .planner import MAX_DEVICES, Plan, Request, describe, plan  # noqa: F401
from .spec_edits import Placement, placed_spec, variant_edits, variant_text  # noqa: F401
from .units import PlacementError, Unit, plan_units  # noqa: F401
