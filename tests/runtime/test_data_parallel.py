"""Data-parallel training end to end: 1, 2 and 3 CPU processes (gloo on 127.0.0.1, the environment
torchrun sets) train the mini spec with dropout and mirroring on, and end with the weights of one
process on the same global batches; only rank 0 writes; evaluation numbers equal one process's."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training.loop import Trainer, TrainOptions

from .test_distributed import free_port
from .test_train import _pattern_dataset

MINI = os.path.join(os.path.dirname(__file__), "..", "..", "specs", "variants", "mini.yaml")
# Batch 8 on 3 processes: shards of 3, 3, 2; 21 validation images: uneven slices of the last batch too.
STEPS = dict(epochs=2, batch_size=8, limit_train_batches=2, limit_val_batches=3)


def _opts(data: str, out: str, **kw) -> TrainOptions:
    return TrainOptions(spec=os.path.abspath(MINI), data=data, out=out, workers=0, progress=False,
                        seed=3, log=lambda s: None, **{**STEPS, **kw})


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _worker(rank: int, world: int, port: int, data: str, out: str, kw: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(_env(rank, world, port))
    t = Trainer(_opts(data, out, **kw))
    t.run()
    torch.save({k: v.clone() for k, v in t.executor.params.items()}, os.path.join(out, f"params.{rank}.pt"))


def _run(world: int, data: str, out: str, **kw) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_worker, args=(world, free_port(), data, out, kw), nprocs=world, join=True)
    return [torch.load(os.path.join(out, f"params.{r}.pt")) for r in range(world)]


def _metrics(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_n_processes_train_like_one(tmp_path, monkeypatch):
    """oracle: a one-process Trainer (no torchrun environment) on the same spec, seed and global batch.
    Tolerances: 1 process under torchrun is bit-identical (weight 1, nothing reordered); 2 and 3
    processes compute each shard's convolutions and the gradient sum in another order: every weight
    within 2e-6 absolute + 1e-4 relative after 4 SGD steps with momentum (measured: 3e-7). Every rank
    ends bit-identical to rank 0; one metrics line per epoch; validation errors equal."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Trainer(_opts(data, str(tmp_path / "one")))
        one.run()
    finally:
        torch.set_num_threads(threads)
    ref = {k: v.clone() for k, v in one.executor.params.items()}
    ref_metrics = _metrics(str(tmp_path / "one"))
    assert one.dist is None
    for world in (1, 2, 3):
        out = str(tmp_path / f"dp{world}")
        params = _run(world, data, out)
        for r in range(1, world):
            assert all(torch.equal(params[r][k], params[0][k]) for k in ref), f"rank {r} differs from rank 0"
        for k, w in ref.items():
            if world == 1:
                assert torch.equal(params[0][k], w), k
            else:
                torch.testing.assert_close(params[0][k], w, rtol=1e-4, atol=2e-6, msg=f"{world} processes: {k}")
        m = _metrics(out)
        assert [r["epoch"] for r in m] == [1, 2]
        for a, b in zip(m, ref_metrics):
            assert a["val_top1_err"] == b["val_top1_err"] and a["val_top5_err"] == b["val_top5_err"]
            assert a["train_top1_err"] == b["train_top1_err"]
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        saved = ckpt.load_checkpoint(out + "/checkpoints")[0]
        assert all(torch.equal(saved[ckpt.PARAM_PREFIX + k], params[0][k]) for k in ref)
        assert sorted(os.listdir(out)) == ["cache", "checkpoints", "curves.png", "metrics.jsonl"] + \
            [f"params.{r}.pt" for r in range(world)]
