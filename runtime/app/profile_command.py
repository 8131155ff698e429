"""`alexnetc profile`: where a training step's time and memory go, layer by layer and device by device
(measured), or where they would go on a named GPU (`--predict`, the roofline, nothing run).

    alexnetc profile variants/mini --batch 128                 # measured on this machine
    alexnetc profile runs/alexnet-mini --sort total --json p.json  # a run's network and weights
    alexnetc profile alexnet --batch 128 --predict h100        # bounds on an H100, without one
    alexnetc profile alexnet --predict h100 --kernels          # + its Triton kernels compiled for sm_90a
    alexnetc profile variants/mini --trace mini.json           # open in Perfetto or chrome://tracing
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from .errors import UserError, say

EPILOG = """examples:
  alexnetc profile variants/mini --batch 128             # per layer and device: ms, FLOPs, bytes, % of peak
  alexnetc profile runs/alexnet-mini --sort total            # a run's network (its checkpoint's spec and weights)
  alexnetc profile alexnet --batch 128 --predict h100    # roofline bounds on a named GPU, nothing run
  alexnetc profile resnet50 --batch 256 --predict a100 --dtype bfloat16 --expand layer4
  alexnetc profile alexnet --predict h100 --kernels      # + each layer's Triton kernels compiled for sm_90a
  alexnetc profile variants/mini --trace mini-trace.json # a Chrome trace: one lane per device

Devices for --predict: {devices}. Links: {links}."""


def _is_run(path: str) -> bool:
    return os.path.isdir(path) or path.endswith((".json", ".safetensors"))


def _load(args) -> tuple[Any, dict | None, dict | None, str | None]:
    """(net at --batch, params or None, state or None, the run's dtype or None) for SPEC or RUN."""
    from ...compiler import compile_spec
    from .specs import resolve_spec_path

    if args.target and _is_run(args.target) and not args.predict:
        from ..training.checkpoint import CheckpointError
        from .model import load_model

        if not os.path.exists(args.target):
            raise UserError(f"{args.target}: no such run or checkpoint")
        try:
            model = load_model(args.target, args.device, args.batch or 1)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        batch = args.batch or int(model.net.settings("train").get("batch_size") or 128)
        dtype = model.state.get("dtype")
        return (model.net.at_batch(batch), dict(model.executor.params), dict(model.executor.state) or None, dtype)
    if args.target and _is_run(args.target):   # --predict of a run: its checkpoint's spec
        from ...compiler.pipeline import compile_dict
        from ..training.checkpoint import CheckpointError, checkpoint_record, checkpoints_dir, newest_verified

        try:
            path = checkpoints_dir(args.target)
            path = newest_verified(path) if os.path.isdir(path) else path
            state = checkpoint_record(path)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        if "spec" not in state:
            raise UserError(f"{path}: not an alexnetc training checkpoint (no spec in it)")
        net = compile_dict(state["spec"], f"<spec in {os.path.basename(path)}>")
        return net.at_batch(args.batch or int(net.settings("train").get("batch_size") or 128)), None, None, state.get("dtype")
    net = compile_spec(resolve_spec_path(args.target))
    return net.at_batch(args.batch or int(net.settings("train").get("batch_size") or 128)), None, None, None


def _expand(args) -> bool | set[str]:
    if args.expand is None:
        return False
    return set(args.expand) if args.expand else True


def _check_expand(net, expand) -> None:
    from ...compiler.cost import block_names
    from ...compiler.errors import did_you_mean

    if isinstance(expand, set):
        known = block_names(info.name for info in net.layers)
        for name in sorted(expand - known):
            raise UserError(f"--expand {name[:40]}: not a block instance of {net.name}{did_you_mean(name, known)}"
                            f" (instances: {', '.join(sorted(known)) or 'none'})")


def _profile(args) -> int:
    dtype_choices = ("float32", "float64", "bfloat16")
    if args.dtype is not None and args.dtype not in dtype_choices:
        raise UserError(f"--dtype {args.dtype[:40]}: expected one of {', '.join(dtype_choices)}")
    if args.kernels and not args.predict:
        raise UserError("--kernels needs --predict DEVICE (the GPU whose architecture to compile for)")
    if args.predict:
        return _predict(args)
    import torch

    from ...compiler.cost import UnknownDevice
    from ..execution.executor import default_group2ctx
    from ..execution.memory import MemoryLimitError, check_fits
    from ..execution.params import init_params
    from ..execution.precision import PrecisionError, check_supported, precision
    from ..profile.profiler import profile_training
    from ..profile.report import format_profile, profile_json

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    net, params, state, run_dtype = _load(args)
    expand = _expand(args)
    _check_expand(net, expand)
    dtype = args.dtype or run_dtype or net.dtype
    g2c = default_group2ctx(net, "cpu" if args.device == "cpu" or (args.device == "auto" and dtype == "float64")
                            else None)
    try:
        check_supported(precision(dtype), g2c, args.backend)
        check_fits(net, g2c, for_training=True, dtype=dtype)
        from ...kernels.backend import get_backend

        for dev in set(g2c.values()):
            get_backend(dev, args.backend)
    except (MemoryLimitError, PrecisionError, ValueError, UnknownDevice) as exc:
        raise UserError(str(exc)) from None
    if params is None:
        params = init_params(net, 0)
    lr = float(net.settings("train").get("lr") or 0.01)
    bar = _bar(args)
    try:
        p = profile_training(net, g2c, params=params, state=state, backend=args.backend, dtype=dtype,
                             iterations=args.iterations, warmup=args.warmup, lr=lr, expand=expand, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    say(format_profile(p, args.sort))
    if args.json:
        _write_json(args.json, profile_json(p))
        say(f"profile written to {args.json}")
    if args.trace:
        from ..profile.trace import write_trace

        _write(args.trace, lambda path: write_trace(p, path))
        say(f"trace written to {args.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


class _Bar:
    """A one-line progress count on stderr while iterations run (a terminal only)."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.t = tqdm(total=total, desc="profiling", unit="step", leave=False)

    def __call__(self, done: int, total: int) -> None:
        self.t.update(done - self.t.n)

    def close(self) -> None:
        self.t.close()


def _bar(args) -> Any:
    import sys

    return _Bar(args.warmup + args.iterations) if sys.stderr.isatty() else None


def _write(path: str, write) -> None:
    """`write(path)`, a failure in the project's terms: exit 1 for a full or read-only disk, 2 for a
    target that cannot be written (a directory, a device, a missing parent)."""
    from .errors import write_failure

    try:
        write(path)
    except OSError as exc:
        raise write_failure(path, exc) from None


def _write_json(path: str, data: dict) -> None:
    import json

    def write(p: str) -> None:
        from ..atomic import replacing

        with replacing(p) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)

    _write(path, write)


def _predict(args) -> int:
    from ...compiler.cost import UnknownDevice, device, link, predict
    from ..profile.predict_report import format_prediction, prediction_json

    try:
        dev = device(args.predict)
        ln = link(args.link or dev.link)
    except UnknownDevice as exc:
        raise UserError(str(exc)) from None
    net, _, _, run_dtype = _load(args)
    expand = _expand(args)
    _check_expand(net, expand)
    dtype = args.dtype or run_dtype or net.dtype
    if args.kernels:
        from ..profile.kernels_report import check_device

        try:
            check_device(dev, dtype)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    try:
        pred = predict(net, dev, ln, dtype, expand)
    except (ValueError, UnknownDevice) as exc:
        raise UserError(f"--predict {args.predict}: {exc}") from None
    say(format_prediction(pred, args.sort))
    data = prediction_json(pred)
    if args.kernels:
        data["kernels"] = _kernels(pred, dev, dtype)
    if args.json:
        _write_json(args.json, data)
        say(f"prediction written to {args.json}")
    return 0


def _kernels(pred: Any, dev: Any, dtype: str) -> dict:
    """--kernels: print which Triton kernels and configs serve each layer, compiled for dev's arch."""
    import sys

    from ..profile.kernels_report import format_kernels, kernel_report, kernels_json

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total or done % 25 == 0:
            print(f"\rcompiling Triton kernels for {dev.arch}: {done}/{total}", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)

    try:
        rep = kernel_report(pred, dtype, progress=progress)
    except RuntimeError as exc:   # TRITON_INTERPRET set: the kernels carry the interpreter's configs
        raise UserError(f"--kernels: {exc}") from None
    say(format_kernels(rep))
    return kernels_json(rep)


def register(sub: Any) -> None:
    from ...compiler.cost import DEVICES, LINKS
    from ..profile import SORT_KEYS

    p = sub.add_parser("profile", help="per-layer time, FLOPs and memory of a training step (or --predict one)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EPILOG.format(devices=", ".join(DEVICES), links=", ".join(LINKS)))
    p.add_argument("target", nargs="?", default=None, metavar="SPEC|RUN",
                   help="a spec file or shipped name (default: variants/mini), or a run directory or checkpoint")
    p.add_argument("--batch", type=int, help="batch size (default: the spec's train.batch_size)")
    p.add_argument("--iterations", type=int, default=20, help="measured steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="steps run before measuring (default 5)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    p.add_argument("--dtype", metavar="DTYPE", help="float32, bfloat16 or float64 (default: the spec's train.dtype)")
    p.add_argument("--backend", choices=("triton", "reference"),
                   help="kernels: triton (CUDA) or reference (ATen); default: triton on CUDA, reference on the CPU")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sort", choices=SORT_KEYS, default="order",
                   help="row order: execution order (default), total, forward, backward, flops, bytes, kept, name")
    p.add_argument("--expand", nargs="*", metavar="BLOCK",
                   help="show block instances layer by layer (all of them, or the instances named)")
    p.add_argument("--json", metavar="FILE", help="also write the table and totals as JSON")
    p.add_argument("--trace", metavar="FILE.json", help="also write a Chrome trace (Perfetto, chrome://tracing)")
    p.add_argument("--predict", metavar="DEVICE", help="no run: roofline bounds on a named GPU (see below)")
    p.add_argument("--link", metavar="LINK", help="with --predict: the link between devices (default: the GPU's usual one)")
    p.add_argument("--kernels", action="store_true",
                   help="with --predict: also which Triton kernel and tile configs serve each layer, with the "
                        "registers, spills, shared memory and occupancy they compile to for the GPU's architecture "
                        "(h100/h200: sm_90a, a100: sm_80), compiled here without a GPU and cached in "
                        "~/.cache/alexnetc/aot (the first run compiles for minutes)")
    p.set_defaults(func=_profile)
