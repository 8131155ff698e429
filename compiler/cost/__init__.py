"""The cost model: what each node of a program costs (FLOPs, bytes, link bytes, memory held for the
backward), which named devices and links there are, and roofline bounds on them. Pure Python, read
by `alexnetc profile` (measured and `--predict`), the compile report and the placement planner; the
numbers come from the op descriptors, never from a table of ops here. `batch` scales costs to any batch
size, `allreduce` bounds data parallelism's gradient all-reduce.
"""
from .allreduce import DataParallelBound, bucket_layout, data_parallel_bound, ring_bytes  # noqa: F401
from .batch import affine, cost_at_batch  # noqa: F401
from .devices import DEVICES, LINKS, DeviceSpec, LinkSpec, UnknownDevice, device, device_for_cuda_name, link  # noqa: F401
from .node_cost import NodeCost, UpdateCost, program_costs, update_costs  # noqa: F401
from .predict import PredictedRow, Prediction, predict  # noqa: F401
from .roofline import Bound, Schedule, StepBound, node_bound, roofline_seconds, schedule, step_bound  # noqa: F401
from .rows import CostRow, block_names, block_of, cost_rows  # noqa: F401
