"""Data-parallel training end to end: 1, 2 and 3 CPU processes (gloo on 127.0.0.1, the environment
torchrun sets) train the mini spec with dropout and mirroring on, and end with the weights of one
process on the same global batches; only rank 0 writes; evaluation numbers equal one process's."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch
import torch.multiprocessing as mp

from alexnetc.runtime.execution.layout import to_logical, to_placed
from alexnetc.runtime.training import checkpoint as ckpt
from alexnetc.runtime.training import run_log
from alexnetc.runtime.training.loop import Trainer
from alexnetc.runtime.training.options import TrainOptions

from ..training.test_train import _pattern_dataset
from .test_distributed import free_port

MINI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "specs", "variants", "mini.yaml")
# Batch 8 on 3 processes: shards of 3, 3, 2; 21 validation images: uneven slices of the last batch too.
STEPS = dict(epochs=2, batch_size=8, limit_train_batches=2, limit_val_batches=3)


def _opts(data: str, out: str, **kw) -> TrainOptions:
    return TrainOptions(data=data, out=out, workers=0, progress=False,
                        log=lambda s: None, **{"spec": os.path.abspath(MINI), **STEPS, "seed": 3, **kw})


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
    """oracle: a one-process Trainer (no torchrun environment) on the same spec, seed and global batch,
    all in float64. Tolerances: 1 process under torchrun is bit-identical (weight 1, nothing
    reordered); 2 and 3 processes compute each shard's convolutions and the gradient sum in another
    order: every weight within 1e-12 absolute + 1e-9 relative after 4 SGD steps with momentum. Every
    rank ends bit-identical to rank 0; one metrics line per epoch; validation errors equal.

    Why float64: ReLU and max-pooling are not smooth, so a rounding difference that moves a value
    across a kink (a max-pool tie broken the other way) changes a gradient by O(1), and the steps after
    carry it on. In fp32 this run ended within 3e-7 on one machine and 1.3 % apart (conv1's weight) on
    another (AVX512 with AMX, same torch) while the first step's gradients agreed within 2e-6 on both;
    in float64 the rounding is 1e-16 and no such flip happens, so the test checks the data-parallel
    algorithm (shards, weights, order) and not the luck of fp32 rounding."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Trainer(_opts(data, str(tmp_path / "one"), dtype="float64"))
        one.run()
    finally:
        torch.set_num_threads(threads)
    ref = {k: v.clone() for k, v in one.executor.params.items()}
    ref_metrics = _metrics(str(tmp_path / "one"))
    assert one.dist is None
    for world in (1, 2, 3):
        out = str(tmp_path / f"dp{world}")
        params = _run(world, data, out, dtype="float64")
        for r in range(1, world):
            assert all(torch.equal(params[r][k], params[0][k]) for k in ref), f"rank {r} differs from rank 0"
        for k, w in ref.items():
            if world == 1:
                assert torch.equal(params[0][k], w), k
            else:
                torch.testing.assert_close(params[0][k], w, rtol=1e-9, atol=1e-12,
                                               msg=lambda m, world=world, k=k: f"{world} processes: {k}: {m}")
        m = _metrics(out)
        assert [r["epoch"] for r in m] == [1, 2]
        for a, b in zip(m, ref_metrics):
            assert a["val_top1_err"] == b["val_top1_err"] and a["val_top5_err"] == b["val_top5_err"]
            assert a["train_top1_err"] == b["train_top1_err"]
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        saved = ckpt.params_from(ckpt.load_checkpoint(out + "/checkpoints")[0])   # logical names
        placed = to_placed(saved, one.net.graph)
        assert placed.keys() == ref.keys() and all(torch.equal(placed[k], params[0][k]) for k in ref)
        # only rank 0 writes the run: one metrics.csv and hparams.yaml, and one event file when tensorboard is there
        files = sorted(os.listdir(out))
        events = [f for f in files if f.startswith("events.out.tfevents.")]
        assert len(events) == (1 if run_log.tensorboard_writer() else 0), events
        assert [f for f in files if f not in events] == ["cache", "checkpoints", "curves.png", "hparams.yaml",
                                                          "metrics.csv", "metrics.jsonl"] + \
            [f"params.{r}.pt" for r in range(world)]
        rows = run_log.read_csv_rows(os.path.join(out, "metrics.csv"))
        assert [r["epoch"] for r in rows if r["val_loss"]] == ["1", "2"]   # each epoch once, not once per rank


@pytest.mark.slow
def test_resume_under_torchrun_continues_exactly(tmp_path):
    """oracle: the same 2-process run without a stop. Stopping after epoch 1 and resuming on 2
    processes (rank 0 reads the checkpoint and sends it to rank 1) ends bit-identical."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    whole = _run(2, data, str(tmp_path / "whole"))
    _run(2, data, str(tmp_path / "split"), epochs=1)
    resumed = _run(2, data, str(tmp_path / "split"), resume=True)
    for k, w in whole[0].items():
        assert torch.equal(resumed[0][k], w) and torch.equal(resumed[1][k], w), k
    assert [r["epoch"] for r in _metrics(str(tmp_path / "split"))] == [1, 2]
    assert _metrics(str(tmp_path / "split"))[1]["val_loss"] == _metrics(str(tmp_path / "whole"))[1]["val_loss"]


def _failing_worker(rank: int, world: int, port: int, data: str, out: str, how: str) -> None:
    """Rank 1 fails (exits, or hangs for 40 s) at its second step; rank 0 must stop with a
    DistributedError, not hang."""
    import time

    from alexnetc.runtime.execution.distributed import DistributedError

    torch.set_num_threads(1)
    os.environ.update(_env(rank, world, port))
    t = Trainer(_opts(data, out, dist_timeout=60 if how == "exit" else 4))
    if rank == 1:
        step = t.train_step

        def failing(images, labels, i):
            if i == 1:
                with open(os.path.join(out, "failed_at"), "w") as fh:
                    fh.write(repr(time.time()))
                if how == "hang":
                    time.sleep(40)
                os._exit(3)  # as abrupt as a crash: no cleanup, no goodbye to the process group
            return step(images, labels, i)
        t.train_step = failing
    try:
        t.run()
        msg = "finished"
    except DistributedError as exc:
        msg = str(exc)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as fh:
        fh.write(f"{time.time()!r}\n{msg}")


@pytest.mark.parametrize("how", ["exit", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_failed_process_stops_the_others_with_a_message(tmp_path, how):
    """oracle: the failure is injected at rank 1's step 2. Exit: rank 0 ends at once (a lost connection
    is noticed without waiting for the 60 s timeout); hang: rank 0 ends after its 4 s collective
    timeout, long before rank 1 would wake (after 40 s). Either way with a DistributedError naming itself and
    telling to resume."""
    import multiprocessing

    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    out = str(tmp_path / "run")
    os.makedirs(out)
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_failing_worker, args=(r, 2, port, data, out, how)) for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(timeout=120)
    if how == "hang":
        procs[1].kill()
    procs[1].join(timeout=30)
    alive = [p.is_alive() for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert alive == [False, False] and procs[0].exitcode == 0
    assert procs[1].exitcode == (3 if how == "exit" else -9)
    ended, msg = open(os.path.join(out, "rank0.txt")).read().split("\n", 1)
    failed = float(open(os.path.join(out, "failed_at")).read())
    assert "rank 0 of 2" in msg and "--resume" in msg, msg
    # from rank 1's failure to rank 0's error: at once for a lost connection, the timeout for a hang
    # (generous margins: the test machine is a shared 2-core one)
    assert float(ended) - failed < (15 if how == "exit" else 4 + 20)


def _diverging_worker(rank: int, world: int, port: int, data: str, out: str, how: str) -> None:
    """At the second step, "update": every process's SGD step leaves an infinite weight (as a too
    high learning rate does); "one-gradient": rank 1 alone hands an infinite gradient to the all-reduce."""
    from alexnetc.runtime.execution import distributed
    from alexnetc.runtime.execution.optim import SGD
    from alexnetc.runtime.training.errors import TrainingError

    torch.set_num_threads(1)
    os.environ.update(_env(rank, world, port))
    calls = {"step": 0, "ready": 0}
    if how == "update":
        real_step = SGD.step

        def poisoned_step(self, grads, lr):
            real_step(self, grads, lr)
            calls["step"] += 1
            if calls["step"] == 2:
                next(iter(self.params.values())).view(-1)[0] = float("inf")
        SGD.step = poisoned_step
    elif rank == 1:
        real_ready = distributed.GradReducer._ready

        def poisoned_ready(self, name):
            calls["ready"] += 1
            if calls["ready"] == len(self.executor.grad_names) + 1:  # the second backward's first gradient
                self.executor.grads[name].view(-1)[0] = float("inf")
            real_ready(self, name)
        distributed.GradReducer._ready = poisoned_ready
    try:
        Trainer(_opts(data, out, epochs=2)).run()
        msg = "finished"
    except TrainingError as exc:
        msg = str(exc)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as fh:
        fh.write(msg)


@pytest.mark.parametrize("how", ["update", "one-gradient"])
def test_divergence_under_data_parallelism_stops_every_process_before_saving(tmp_path, how):
    """oracle: the same verdict as one process (issue 13's checks): a non-finite gradient norm (of the
    all-reduced gradients, so one process's overflow stops all) or parameter at step 2, the last batch
    of epoch 1, stops every process with the step named and nothing saved."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    out = str(tmp_path / "run")
    os.makedirs(out)
    mp.spawn(_diverging_worker, args=(2, free_port(), data, out, how), nprocs=2, join=True)
    what = "parameter \\S+ became non-finite after the update" if how == "update" else "the gradient norm became (nan|inf)"
    for r in range(2):
        msg = open(os.path.join(out, f"rank{r}.txt")).read()
        assert re.search(rf"training diverged at epoch 1, batch 2 \(step 2\): {what}; stopped without saving", msg), msg
    assert not os.path.exists(os.path.join(out, "checkpoints")) or os.listdir(os.path.join(out, "checkpoints")) == []


def _torchrun(args: list[str], out: str, data: str, extra: list[str] = ()) -> list[str]:
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            *extra, "-m", "alexnetc", "train", os.path.abspath(MINI), "--data", data, "--out", out, "--seed", "3",
            "--batch", "8", "--limit-train-batches", "12", "--limit-val-batches", "2", "--workers", "0",
            "--no-progress", *args]


@pytest.mark.slow
def test_kill_9_of_a_worker_then_torchrun_restart_resumes(tmp_path):
    """oracle: the same torchrun job not killed. A worker killed with SIGKILL during epoch 2; torchrun
    (--max-restarts=1) restarts both; the restarted job resumes from epoch 1's checkpoint; the final weights are
    bit-identical to the uninterrupted job's."""
    import signal
    import subprocess
    import time

    data = _pattern_dataset(tmp_path / "data", n_train=128, n_val=16)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = str(tmp_path / "whole")
    subprocess.run(_torchrun(["--epochs", "3"], whole, data), check=True, env=env, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = str(tmp_path / "killed")
    log_path = str(tmp_path / "job.log")
    logf = open(log_path, "w")
    job = subprocess.Popen(_torchrun(["--epochs", "3"], out, data, ["--max-restarts=1"]), env=env,
                           stdout=logf, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while ckpt.latest_checkpoint(out + "/checkpoints") is None:
            assert time.monotonic() < deadline and job.poll() is None, "no first checkpoint"
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[1]), signal.SIGKILL)
        job.wait(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        logf.close()
    with open(log_path) as fh:
        log = fh.read()
    assert job.returncode == 0, log[-3000:]
    assert "resumed from" in log and "epoch 2" in log
    a = ckpt.load_checkpoint(whole + "/checkpoints")[0]
    b = ckpt.load_checkpoint(out + "/checkpoints")[0]
    params = [k for k in a if k.startswith(ckpt.PARAM_PREFIX)]
    assert params and all(torch.equal(a[k], b[k]) for k in params)
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3]


def test_init_from_reaches_every_process(tmp_path):
    """oracle: the same fine-tuning run in one process. Rank 0 reads the --init-from checkpoint and
    sends it; 2 processes end within the tolerance of test_n_processes_train_like_one (a process that
    started from its own random draw instead would be far off)."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    src = str(tmp_path / "src")
    Trainer(_opts(data, src, epochs=1, seed=11)).run()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Trainer(_opts(data, str(tmp_path / "one"), epochs=1, init_from=src))
        one.run()
    finally:
        torch.set_num_threads(threads)
    two = _run(2, data, str(tmp_path / "two"), epochs=1, init_from=src)
    for k, w in one.executor.params.items():
        assert torch.equal(two[0][k], two[1][k]), k
        torch.testing.assert_close(two[0][k], w, rtol=1e-4, atol=2e-6, msg=k)


RESNET_MINI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "specs", "variants", "resnet-mini.yaml")


@pytest.mark.parametrize("world", [2, 3])
def test_sync_batchnorm_processes_train_like_one(tmp_path, world):
    """oracle: one process on the same global batches of resnet-mini (batch norm after every conv).
    With train.sync_batchnorm each process normalises with the global batch's statistics, so 2 and 3
    processes (shards 4/4, 3/3/2) end within the tolerance of test_n_processes_train_like_one, running
    statistics included; without it they end measurably elsewhere (the oracle can tell)."""
    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = Trainer(_opts(data, str(tmp_path / "one"), spec=os.path.abspath(RESNET_MINI)))
        one.run()
    finally:
        torch.set_num_threads(threads)
    ref = {k: v.clone() for k, v in one.executor.params.items()}
    ref_state = {k: v.clone() for k, v in one.executor.state.items()}
    synced = _run(world, data, str(tmp_path / "sync"), spec=os.path.abspath(RESNET_MINI), sync_batchnorm=True)
    for k, w in ref.items():
        assert torch.equal(synced[0][k], synced[1][k]), k
        torch.testing.assert_close(synced[0][k], w, rtol=1e-4, atol=2e-6, msg=k)
    state = ckpt.state_from(ckpt.load_checkpoint(str(tmp_path / "sync" / "checkpoints"))[0])
    for k, v in to_logical(ref_state, one.net.graph, "state").items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-6, msg=k)
    local = _run(world, data, str(tmp_path / "local"), spec=os.path.abspath(RESNET_MINI))
    worst = max(float((local[0][k] - w).abs().max()) for k, w in ref.items())
    assert worst > 1e-3, f"per-process batch norm came within {worst:.1e} of one process: no test"


def test_a_refusal_under_torchrun_is_one_line_from_rank_0(tmp_path):
    """--out holding another run under torchrun: rank 0's one-line refusal is the job's only message
    (the other rank used to wait in a collective and then advise --resume, which was wrong here)."""
    import subprocess

    data = _pattern_dataset(tmp_path / "data", n_train=64, n_val=21)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(_torchrun(["--epochs", "1"], str(out), data), env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if "alexnetc" in line and "error" in line]
    assert len(ours) == 1 and ours[0].startswith(f"alexnetc: error: {out} holds a run with no complete checkpoint "
                                                 "(metrics.jsonl)"), r.stderr
    assert "Restart the job" not in r.stderr and "DistributedError" not in r.stderr
