"""A checkpoint checked against the network it is loaded into: the record's fields, the stored spec's
hash, and every tensor's name, dtype and shape. Used on ``--resume`` and by eval/predict/figures, so a
re-signed checkpoint with a wrong shape, a missing parameter or an edited ``state.spec`` is an error
naming what is wrong instead of a silent broadcast, zeros, or another network.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from ...compiler.program import master_dtype
from .checkpoint import PARAM_PREFIX, STATE_PREFIX, CheckpointError

if TYPE_CHECKING:
    from ...compiler import CompiledNet

SHOWN = 5  # how many offending names a message lists


def _names(xs: list[str]) -> str:
    more = f" and {len(xs) - SHOWN} more" if len(xs) > SHOWN else ""
    return ", ".join(xs[:SHOWN]) + more


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_state(path: str, state: Mapping[str, Any], for_training: bool) -> None:
    """The JSON state a checkpoint carries has the fields (and types) alexnetc reads from it."""
    from ...compiler.pipeline import spec_hash
    from ...compiler.program import TRAIN_DTYPES

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a usable alexnetc training checkpoint: {what}")

    if not isinstance(state.get("spec"), dict):
        raise bad("state.spec is missing or not a mapping")
    if not isinstance(state.get("spec_hash"), str):
        raise bad("state.spec_hash is missing")
    try:
        actual = spec_hash(state["spec"])
    except (TypeError, ValueError, RecursionError):
        raise bad("state.spec is not plain data") from None
    if actual != state["spec_hash"]:
        raise bad("state.spec was changed after the checkpoint was written (its hash does not match "
                  "state.spec_hash)")
    dtype = state.get("dtype")
    if dtype is not None and dtype not in TRAIN_DTYPES:
        raise bad(f"state.dtype is {repr(dtype)[:30]} (expected one of {', '.join(TRAIN_DTYPES)})")
    classes = state.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("state.classes is missing or not a list of names")
    problem = data_settings_problem(state)
    if problem:
        raise bad(problem)
    if not for_training:
        return
    for key in ("epoch", "batch", "step"):
        v = state.get(key)
        if not _is_int(v) or v < 0:
            raise bad(f"state.{key} is {'missing' if v is None else repr(v)[:20]} (expected a whole number >= 0)")
    for key in ("seed", "batch_size", "epochs"):
        v = state.get(key)
        if v is not None and (not _is_int(v) or (v < 1 and key != "seed")):
            raise bad(f"state.{key} is {repr(v)[:20]}")
    sched = state.get("schedule")
    if not isinstance(sched, dict) or not isinstance(sched.get("lr"), (int, float)) \
            or isinstance(sched.get("lr"), bool) or not math.isfinite(sched["lr"]) or sched["lr"] <= 0:
        raise bad("state.schedule.lr is missing or not a positive number")
    hist = state.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(r, dict) and _is_int(r.get("epoch")) for r in hist):
        raise bad("state.history is not a list of epoch records")
    if len(hist) != state["epoch"]:
        raise bad(f"state.history holds {len(hist)} epoch records for epoch {state['epoch']}")
    running = state.get("running")
    if running is not None and not (isinstance(running, dict) and all(
            isinstance(running.get(k), (int, float)) for k in ("loss", "top1", "top5", "n"))):
        raise bad("state.running is malformed")


def data_settings_problem(state: Mapping[str, Any]) -> str | None:
    """What is wrong with a checkpoint's data section and dataset statistics (the evaluation transform is
    built from them), or None: ``data_config`` a mapping, ``data_stats`` null or what `DataStats` reads."""
    from ..data.augment import DataStats

    cfg = state.get("data_config")
    if cfg is not None and not isinstance(cfg, dict):
        return "state.data_config is not a mapping"
    stats = state.get("data_stats")
    if stats is None:
        return None
    try:
        DataStats.from_json(stats)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)[:80]
        return f"state.data_stats is malformed ({what})"
    return None


def check_classes(path: str, state: Mapping[str, Any], classes: int) -> None:
    n = len(state.get("classes") or [])
    if n != classes:
        raise CheckpointError(f"{path}: state.classes lists {n} class names for a network with {classes} classes")


def expected_params(net: CompiledNet, dtype: str | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every parameter of a compiled net (from its graph), for a run trained
    in `dtype`."""
    out = {}
    for n in net.graph.params():
        out[n.name] = (tuple(n.shapes[0]) if n.shapes else None, str(n.attrs.get("dtype", master_dtype(dtype))))
    return out


def check_state_tensors(path: str, tensors: Mapping[str, Any], net: CompiledNet) -> None:
    """Every state variable (batch norm's running statistics) present with the graph's shape, none
    unknown: evaluation and resuming both need them exactly."""
    want = {n.name: tuple(n.shapes[0]) for n in net.graph.variables() if n.role == "state"}
    have = {k[len(STATE_PREFIX):]: t for k, t in tensors.items() if k.startswith(STATE_PREFIX)}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing:
        raise CheckpointError(f"{path}: missing state tensors (running statistics) for {net.name}: "
                              f"{_names(missing)}")
    if extra:
        raise CheckpointError(f"{path}: state tensors {net.name} does not have: {_names(extra)}")
    wrong = [f"{n} has shape {tuple(have[n].shape)}, the spec needs {s}" for n, s in want.items()
             if tuple(have[n].shape) != s]
    if wrong:
        raise CheckpointError(f"{path}: tensors do not fit {net.name}: {_names(wrong)}")


def check_tensors(path: str, tensors: Mapping[str, Any], net: CompiledNet, for_training: bool,
                  dtype: str | None = None, fresh_optimizer: bool = False, optimizer: str = "sgd") -> None:
    """Every parameter present with the graph's shape and the dtype a `dtype` run stores, no unknown
    parameter; for training also the `optimizer`'s state of every parameter (SGD's momentum buffers,
    AdamW's moments), unless `fresh_optimizer` (then none is needed, and the caller starts the
    optimizer from zero). (Values are `check_finite`'s, on the checkpoint's own logical names.)"""
    want = expected_params(net, dtype)
    have = {k[len(PARAM_PREFIX):]: t for k, t in tensors.items() if k.startswith(PARAM_PREFIX)}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing:
        raise CheckpointError(f"{path}: missing parameter tensors for {net.name}: {_names(missing)}")
    if extra:
        raise CheckpointError(f"{path}: tensors for parameters {net.name} does not have: {_names(extra)}")
    problems = []
    for name, (shape, dtype) in want.items():
        t = have[name]
        tdtype = str(t.dtype).replace("torch.", "")
        if shape is not None and tuple(t.shape) != shape:
            problems.append(f"{name} has shape {tuple(t.shape)}, the spec needs {shape}")
        elif tdtype != dtype:
            problems.append(f"{name} is {tdtype}, the spec needs {dtype}")
    if problems:
        raise CheckpointError(f"{path}: tensors do not fit {net.name}: {_names(problems)}")
    check_state_tensors(path, tensors, net)
    if not for_training or fresh_optimizer:
        return
    from ..execution.optim import OPTIMIZERS

    opt = OPTIMIZERS[optimizer]
    for prefix in opt.state_prefixes:
        _check_optimizer_state(path, tensors, prefix, want, opt)


def _check_optimizer_state(path: str, tensors: Mapping[str, Any], prefix: str, want: Mapping[str, Any],
                           opt: Any) -> None:
    """One kind of optimizer state (``momentum/``, ``exp_avg/`` ...): a tensor per parameter, its shape."""
    mom = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(want) - set(mom))
    extra = sorted(set(mom) - set(want))
    if missing and not mom:
        raise CheckpointError(f"{path}: no optimizer state ({opt.state_what}) for {_names(missing)}: resuming would "
                              f"silently restart {opt.state_restart} at zero; pass --fresh-optimizer to resume so")
    if missing or extra:
        raise CheckpointError(f"{path}: {opt.state_what} do not match the parameters "
                              f"(missing: {_names(missing) or '-'}; unknown: {_names(extra) or '-'})"
                              + (f"; pass --fresh-optimizer to resume with {opt.state_restart} at zero"
                                 if missing else ""))
    if mom:
        wrong = [f"{prefix}{n} has shape {tuple(t.shape)}, the spec needs {want[n][0]}"
                 for n, t in mom.items() if want[n][0] is not None and tuple(t.shape) != want[n][0]]
        if wrong:
            raise CheckpointError(f"{path}: {_names(wrong)}")


def non_finite(tensors: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """``(name, non-finite count, size)`` of every floating-point tensor holding a NaN or an infinity."""
    import torch

    out = []
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                out.append((name, bad, t.numel()))
    return out


def check_finite(path: str, tensors: Mapping[str, Any], with_momentum: bool = True) -> None:
    """CheckpointError naming the tensors of a checkpoint (weights, running statistics and, unless not
    `with_momentum`, the optimizer's state: momentum buffers, AdamW's moments) that hold NaN or
    infinite values: a network computed from them prints "loss nan" or "nan%" instead of a result, a
    resumed one diverges."""
    from ..execution.optim import STATE_PREFIXES

    prefixes = (PARAM_PREFIX, STATE_PREFIX) + (STATE_PREFIXES if with_momentum else ())
    bad = non_finite({k: t for k, t in tensors.items() if k.startswith(prefixes)})
    if bad:
        shown = [f"{name.split('/', 1)[1] if name.startswith((PARAM_PREFIX, STATE_PREFIX)) else name} "
                 f"({n:,} of {size:,} values)" for name, n, size in bad]
        raise CheckpointError(f"{path}: non-finite values (NaN or infinity) in {_names(shown)}; refusing to use "
                              "them (a diverged or damaged checkpoint)")


def without_optimizer_state(tensors: Mapping[str, Any], log: Any = None, optimizer: str = "sgd") -> dict[str, Any]:
    """The tensors less any optimizer's state (``--fresh-optimizer``: the `optimizer` starts from zero)."""
    from ..execution.optim import OPTIMIZERS, STATE_PREFIXES

    kept = {k: t for k, t in tensors.items() if not k.startswith(STATE_PREFIXES)}
    if log is not None:
        opt = OPTIMIZERS[optimizer]
        log(f"--fresh-optimizer: {opt.state_restart} starts at zero ({len(tensors) - len(kept)} optimizer state "
            "tensors in the checkpoint ignored)")
    return kept
