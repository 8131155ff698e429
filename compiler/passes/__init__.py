"""Graph passes: each a function from Graph to Graph that can be run, printed and tested on its own.

infer_shapes ▸ place_devices (cross-device copies) ▸ fuse_activations ▸ gradient ▸ plan_memory.
"""
from .infer_shape import infer_shapes  # noqa: F401
from .place_devices import place_devices, check_placement  # noqa: F401
from .fusion import fuse_activations  # noqa: F401
from .gradient import gradient  # noqa: F401
from .memory_plan import plan_memory  # noqa: F401
