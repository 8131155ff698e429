"""Continuing a run (``--resume``, a torchrun restart) and starting one from another run's weights
(``--init-from``): which checkpoint, read once and checked, and what of it the new process restores.

``resume`` uses the newest checkpoint that verifies and is checked against the spec (fields, spec hash
or the same network however placed, every tensor's name, dtype and shape); newer ones that fail are
named with their problem; with none that verifies it refuses instead of starting over. Under torchrun
rank 0 picks and reads the checkpoint and sends it to every process (other machines need no copy of
the run directory). What a checkpoint decides about the run (seed, batch size, dtype, epochs) is
resolved with the spec and the command line in `options.resolve`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...compiler import CompiledNet
from ...compiler.pipeline import compile_dict
from ..execution import distributed as dp
from ..execution.layout import LayoutError, network_hash, placed_tensors
from ..execution.schedule import LRSchedule
from . import checkpoint as ckpt
from .errors import TrainingError
from .rank0 import on_rank0
from .run_contents import refuse_resume, run_contents
from .run_dir import RunDir


@dataclass(frozen=True)
class Resumed:
    """The checkpoint a run continues from: read once (on rank 0), its record checked, the same network;
    its tensors under their saved names, or this placement's once `placed`."""

    path: str
    tensors: dict[str, torch.Tensor]
    state: dict


def resuming(resume: bool, run_dir: RunDir, dist: dp.DistContext | None, log: Callable[[str], None]) -> bool:
    """--resume, or a torchrun restart of this job (TORCHELASTIC_RESTART_COUNT > 0) whose run
    directory holds checkpoints: a restart continues its own run; one before any checkpoint starts
    it again, there being nothing to discard. Rank 0 decides for every process."""
    if resume:
        return True
    if not restarted():
        return False
    decided = on_rank0(lambda: bool(ckpt.list_checkpoints(run_dir.ckpt_dir)), dist)
    if decided:
        log(f"torchrun restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: resuming the run in {run_dir.out}")
    return bool(decided)


def restarted() -> bool:
    """Whether this job is a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def pick_checkpoint(run_dir: RunDir, log: Callable[[str], None]) -> str:
    """The newest checkpoint that verifies; newer failing ones are named; none verifying is an error."""
    ckpt_dir = run_dir.ckpt_dir
    infos = ckpt.list_checkpoints(ckpt_dir)
    if not infos:
        raise TrainingError(refuse_resume(run_contents(run_dir.out)))
    good = [i for i in infos if i.ok]
    if not good:
        raise TrainingError(f"--resume: no checkpoint in {ckpt_dir} verifies; refusing to start over: "
                            + "; ".join(i.problem for i in reversed(infos)))
    newest = good[-1]
    skipped = [i for i in infos if not i.ok and i.seq > newest.seq]
    if skipped:
        log(f"warning: --resume skipped {len(skipped)} newer checkpoint{'s' if len(skipped) != 1 else ''} "
            "that failed verification (kept for inspection): "
            + "; ".join(i.problem for i in reversed(skipped)))
    return newest.path


def read_on_rank0(pick: Callable[[], str], dist: dp.DistContext | None) -> tuple[str, dict, dict]:
    """(path, tensors, state) of the checkpoint `pick` names: rank 0 (or the one process) picks and
    reads it, and under torchrun sends it to every process (or its refusal: `rank0.on_rank0`)."""
    def read() -> tuple[str, dict, dict]:
        path = pick()
        return (path, *ckpt.load_checkpoint(path))

    return on_rank0(read, dist)


def read_resume(run_dir: RunDir, net: CompiledNet, spec_path: str, dist: dp.DistContext | None,
                log: Callable[[str], None], fresh_optimizer: bool = False) -> Resumed:
    """The checkpoint to resume from, verified, its values finite (the momentum too unless
    `fresh_optimizer`), its record checked and written for `net`'s network."""
    from .verify import check_finite, check_state

    path, tensors, state = read_on_rank0(lambda: pick_checkpoint(run_dir, log), dist)
    try:
        check_finite(path, tensors, with_momentum=not fresh_optimizer)
        check_state(path, state, for_training=True)
    except ckpt.CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    # The same network, however placed (alexnet.yaml's run resumes as alexnet-1gpu.yaml)
    if state.get("spec_hash") != net.hash and (
            not state.get("spec") or network_hash(state["spec"]) != network_hash(net.spec)):
        raise TrainingError(f"{path}: this checkpoint was written for a different spec "
                            f"({str(state.get('spec_name'))[:60]}); refusing to resume {spec_path}")
    return Resumed(path, tensors, state)


def placed(resumed: Resumed, net: CompiledNet, dtype: str, fresh_optimizer: bool,
           log: Callable[[str], None], optimizer: str = "sgd") -> Resumed:
    """The checkpoint with its tensors under `net`'s placed names, checked against its classes, names,
    dtypes and shapes at the resolved batch size and dtype, and the `optimizer`'s state; with
    `fresh_optimizer`, without any optimizer state (said through `log`): the optimizer starts over."""
    from .verify import check_classes, check_tensors, without_optimizer_state

    path, state = resumed.path, resumed.state
    try:  # logical names (or an older checkpoint's placed ones) -> this placement's
        saved = None if state.get("spec_hash") == net.hash else compile_dict(state["spec"], path)
        tensors = placed_tensors(resumed.tensors, net.graph, saved_graph=saved and saved.graph,
                                 source=path, target=net.name)
    except LayoutError as exc:
        raise TrainingError(str(exc)) from None
    try:
        check_classes(path, state, net.classes)
        check_tensors(path, tensors, net, for_training=True, dtype=dtype, fresh_optimizer=fresh_optimizer,
                      optimizer=optimizer)
    except ckpt.CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    if fresh_optimizer:
        tensors = without_optimizer_state(tensors, log, optimizer)
    return Resumed(path, tensors, state)


def restore(resumed: Resumed, opt: Any, schedule: LRSchedule, lr: float | None, log: Callable[[str], None]) -> None:
    """Put the optimizer's state (SGD's momentum, AdamW's moments and update count), the schedule and
    the random generators back as the (placed) checkpoint left them; a given `lr` applies from the
    resume point on."""
    path, tensors, state = resumed.path, resumed.tensors, resumed.state
    try:
        opt.load_state(tensors, state.get("optimizer"))
        schedule.load_state(state["schedule"])
        if state.get("rng"):
            ckpt.restore_rng_state(tensors, state["rng"])
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise TrainingError(f"{path}: cannot restore the optimizer, schedule or random state from this "
                            f"checkpoint ({type(exc).__name__}: {str(exc)[:80]})") from None
    if lr is not None and lr != schedule.lr:
        log(f"--lr {lr:g}: learning rate {lr:g} from the resume point on (the run was at {schedule.lr:g})")
        schedule.lr = float(lr)


def warm_start_from(init_from: str, net: CompiledNet, seed: int, dist: dp.DistContext | None,
                    log: Callable[[str], None]) -> tuple[dict, dict, str]:
    """--init-from: the starting parameters and state, and the checkpoint they came from (rank 0 reads
    it and sends it to every process, as for a resume)."""
    from .warm_start import WarmStartError, warm_start

    source = ckpt.checkpoints_dir(init_from)
    try:
        path, tensors, state = read_on_rank0(
            lambda: ckpt.newest_verified(source, log) if os.path.isdir(source) else source, dist)
    except ckpt.CheckpointError as exc:
        raise TrainingError(f"--init-from: {exc}") from None
    try:
        ws = warm_start(net, seed, tensors, state, path)
    except WarmStartError as exc:
        raise TrainingError(f"--init-from: {exc}") from None
    log(ws.summary(path))
    return ws.params, ws.state, path
