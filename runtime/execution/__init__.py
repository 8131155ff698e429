"""Running a compiled graph: bind it to devices and run forward/backward through the kernels
(`executor`), initial parameters (`params`), the SGD update (`optim`), the gradient all-reduce
(`distributed`) and the eager PyTorch oracle the executor is checked against (`eager`).
"""
