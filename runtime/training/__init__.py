"""Training: the paper's SGD loop (`loop`) and what a run needs around it, one concept per module:
its options (`options`), run directory (`run_dir`), continuing or warm-starting from a checkpoint
(`resume`, `warm_start`, `verify`), data (`inputs`), evaluation and prediction (`evaluate`), progress
(`progress`: a bar on a terminal, lines in a log), signals
(`signals`) and errors (`errors`); atomic checkpoints (`checkpoint`), and the metrics log and curves
(`metrics`).
"""
