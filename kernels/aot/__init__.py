"""Every Triton kernel compiled ahead of time for real GPUs (sm_80, sm_90a) on a machine without one.

`launches` finds what a training step launches (the step run on meta tensors), `archs` holds each
architecture's per-SM limits and the occupancy they allow, `compile` compiles one launch at one tile
config for one architecture and reads its resources from ptxas, `matrix` runs many compiles in worker
processes, `cache` keeps compiled resources on disk for `alexnetc profile --predict DEVICE --kernels`,
and `accepted` lists the register spills accepted on the training step's hot path, each with its reason.
benchmarks/aot_compile.py runs the whole matrix; tests/kernels/test_aot_compile.py checks it.
"""
