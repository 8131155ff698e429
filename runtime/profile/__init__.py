"""Profiling: measured per-layer time of a training step (`profiler`, `timing`), the peaks it is held
against (`peak`), and its tables and Chrome trace (`report`, `predict_report`, `trace`). The cost model
they read lives in the compiler (`alexnetc.compiler.cost`). Importing this package loads nothing heavy.
"""

# `--sort` keys of both tables: execution order, then the measured (or bounded) time and the cost model's columns.
SORT_KEYS = ("order", "total", "forward", "backward", "flops", "bytes", "kept", "name")
