"""alexnetc's runtime: bind a compiled graph to devices, train, evaluate and predict.

Four parts, each a subpackage: `execution` (executor, optimizer, parameters, all-reduce, eager
oracle), `training` (the epoch loop and its options, run directory, resume, inputs, evaluation,
signals; checkpoints, metrics), `data` (datasets, augmentation, loader) and `app` (the `alexnetc`
command line and figures); `atomic` is the one file-replacement helper they share; `torch_module` is a
compiled spec as a torch.nn.Module for a training loop of one's own.
Dependencies point one way: app -> training -> data, execution -> compiler, kernels. Modules import
torch lazily where they can, so `alexnetc compile` stays light.
"""
