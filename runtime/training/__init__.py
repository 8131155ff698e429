"""Training: the paper's SGD loop and evaluation (`loop`), atomic checkpoints (`checkpoint`), and the
metrics log and curves (`metrics`).
"""
