"""Graph passes, in the order the pipeline runs them. Rewrites take a Graph and return a Graph; the
last two produce the typed results the runtime reads (`program.Program`, `program.MemoryPlan`).

(lowering infers shapes at batch 1 as it builds) ▸ fuse_activations ▸ fuse_residual_adds ▸ place_devices
(cross-device copies) ▸ infer_shapes (at the batch size) ▸ gradient (-> Program) ▸ plan_memory (-> MemoryPlan).
"""
from .fusion import absorbed_into, fuse_activations, fuse_residual_adds  # noqa: F401
from .gradient import gradient  # noqa: F401
from .infer_shape import infer_shapes  # noqa: F401
from .memory_plan import plan_memory  # noqa: F401
from .place_devices import check_placement, place_devices  # noqa: F401
