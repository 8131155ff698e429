"""Data parallelism: two processes (gloo on loopback) that each compute half a batch and all-reduce
their gradient buckets get the gradients of the whole batch computed in one process."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alexnetc.compiler import compile_spec
from alexnetc.runtime.execution.distributed import allreduce_gradients, shard
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.params import init_params

CPU2 = {"gpu0": "cpu", "gpu1": "cpu"}


def _spec(tmp):
    p = os.path.join(tmp, "nodrop.yaml")
    root = os.path.join(os.path.dirname(__file__), "..", "..", "specs", "variants", "mini.yaml")
    with open(p, "w") as fh:
        fh.write(f"base: {os.path.abspath(root)}\nremove_layers: [drop6, drop7]\n")
    return p


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)


def _worker(rank, world, port, tmp, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    net = compile_spec(_spec(tmp), batch=3)
    ex = bind(net, CPU2, params=init_params(net, 0))
    x, y = _data()
    idx = list(shard(6, rank, world))
    ex.forward(x[idx], y[idx], is_train=True)
    ex.backward()
    allreduce_gradients(ex)
    if rank == 0:
        torch.save({k: v.clone() for k, v in ex.grads.items()}, out)
    dist.destroy_process_group()


def test_two_processes_average_to_the_whole_batch_gradient(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, port, str(tmp_path), out), nprocs=2, join=True)
    reduced = torch.load(out)
    net = compile_spec(_spec(str(tmp_path)), batch=6)
    ex = bind(net, CPU2, params=init_params(net, 0))
    x, y = _data()
    ex.forward(x, y, is_train=True)
    whole = ex.backward()
    for name, g in whole.items():
        torch.testing.assert_close(reduced[name], g, rtol=1e-4, atol=1e-6)


def test_shard_covers_the_batch_once():
    for n in (1, 6, 7, 128):
        for world in (1, 2, 3):
            parts = [list(shard(n, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
