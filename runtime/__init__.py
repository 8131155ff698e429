"""alexnetc's runtime: bind a compiled graph to devices, train, evaluate and predict.

`executor` (bind + forward/backward over the symbolic graph), `train` (the paper's SGD loop),
`datasets`/`augment`/`loader` (data), `checkpoint` (atomic safetensors + JSON), `metrics`, and `cli`
(the `alexnetc` command). Modules import torch lazily where they can, so `alexnetc compile` stays light.
"""
