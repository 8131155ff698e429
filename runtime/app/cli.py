"""The `alexnetc` command line: compile, train, eval, predict and the paper's figures.

Each subcommand imports what it needs when it runs, so `alexnetc compile` never loads torch. Spec
errors print as FILE:LINE:COL lines and exit with status 2; other user errors print one line naming
the file or option at fault and exit with status 2 too. Failures of the machine (disk full, read-only
directory) print one line and exit with status 1. No traceback reaches the user unless
``ALEXNETC_DEBUG=1`` is set; every message is one line with control characters escaped.
"""
from __future__ import annotations

import argparse
import sys
import time

from .errors import DEBUG_ENV, EnvironmentFailure, UserError, one_line, write_failure, write_text  # noqa: F401  (cli.UserError is re-exported)


def _compile(args) -> int:
    from ...compiler import compile_spec
    from ...compiler.report import as_dict, format_table, to_dot
    from .specs import resolve_spec_path

    if args.expand:  # the flat spec: base and edits applied, blocks expanded, validated
        import yaml

        from ...compiler.pipeline import load_spec, plain

        for key, value in plain(load_spec(resolve_spec_path(args.spec))).items():
            if key == "layers":  # one layer a line, as specs are written
                print("layers:")
                for layer in value:
                    print("  - " + yaml.safe_dump(layer, default_flow_style=True, sort_keys=False, width=1 << 16).strip())
            else:
                print(yaml.safe_dump({key: value}, sort_keys=False, width=120), end="")
        return 0
    t0 = time.perf_counter()
    net = compile_spec(resolve_spec_path(args.spec), batch=args.batch).with_dtype(args.dtype)
    table = format_table(net)
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        print(table)
        print(f"compiled in {elapsed * 1000:.0f} ms")
    if args.json:
        graph = net.graph.with_attrs(spec_hash=net.hash, report=as_dict(net))
        write_text(args.json, graph.tojson())
        if not args.quiet:
            print(f"graph written to {args.json}")
    if args.dot:
        write_text(args.dot, to_dot(net.graph, net.name))
        if not args.quiet:
            print(f"Graphviz written to {args.dot} (render: dot -Tpng {args.dot} -o graph.png)")
    return 0


def _specs(args) -> int:
    from .specs import description, shipped_dir, shipped_specs

    print(f"specs shipped in {shipped_dir()} (give the name to any command, e.g. alexnetc train variants/mini):")
    names = shipped_specs()
    width = max(len(s) - 5 for s in names)
    for s in names:
        print(f"  {s[:-5]:<{width}}  {description(s)}".rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ...compiler.program import TRAIN_DTYPES

    p = argparse.ArgumentParser(
        prog="alexnetc",
        description="Describe a convolutional network in YAML, compile it to a device-placed graph, "
                    "train it on Triton kernels.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  alexnetc compile specs/alexnet.yaml --batch 128 --dot alexnet.dot\n"
               "  alexnetc train                      # the embedded default: a two-tower net on Fashion-MNIST\n"
               "  alexnetc train specs/alexnet.yaml --data /path/to/imagenet\n")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("compile", help="validate a spec and print its per-layer table",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  alexnetc compile specs/alexnet.yaml --batch 128 --json alexnet.json")
    c.add_argument("spec", help="a spec file, or a shipped spec name (alexnet, variants/tanh, ...)")
    c.add_argument("--batch", type=int, default=1, help="batch size for activation memory (default 1)")
    c.add_argument("--dtype", choices=TRAIN_DTYPES,
                   help="count memory in this precision instead of the spec's train.dtype (as train --dtype)")
    c.add_argument("--json", metavar="FILE", help="write the graph (with the report) as JSON")
    c.add_argument("--dot", metavar="FILE", help="write a Graphviz picture, one cluster per device")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing; exit status says valid or not")
    c.add_argument("--expand", action="store_true",
                   help="print the flat spec (base and edits applied, blocks expanded) as YAML instead")
    c.set_defaults(func=_compile)

    s = sub.add_parser("specs", help="list the specs shipped with alexnetc, each with its description")
    s.set_defaults(func=_specs)

    from . import commands  # the runtime commands (train, eval, predict, figures) register themselves
    commands.register(sub)
    return p


# Numeric options shared by several subcommands, with their smallest valid value.
_MINIMA = {"epochs": 1, "workers": 0, "limit_batches": 1, "limit_train_batches": 1, "limit_val_batches": 1,
           "synthetic": 1, "iterations": 1, "warmup": 0, "threads": 1}


def _bad_number(args) -> str | None:
    """The first numeric option out of range, as a message naming it (None when all are fine)."""
    for dest, lo in _MINIMA.items():
        v = getattr(args, dest, None)
        if v is not None and v < lo:
            return f"--{dest.replace('_', '-')} {v}: must be at least {lo}"
    lr = getattr(args, "lr", None)
    if lr is not None and not (0 < lr < float("inf")):
        return f"--lr {lr:g}: must be a positive number"
    return None


def _bad_environment() -> str | None:
    """An environment setting a command would refuse once it binds a network, as a message up front."""
    from ..execution.host_memory import requested

    try:
        requested()
    except ValueError as exc:
        return str(exc)
    return None


MAX_ERRORS = 100  # spec errors printed at most (a hostile spec can hold hundreds of thousands)
MAX_ERRORS_ENV = "ALEXNETC_MAX_ERRORS"


def _max_errors() -> int:
    import os

    raw = os.environ.get(MAX_ERRORS_ENV, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_ERRORS


def _debug() -> bool:
    import os

    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _fail(message: str, status: int) -> int:
    print(f"alexnetc: error: {one_line(message)}", file=sys.stderr)
    return status


def _drop_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so the interpreter's final flush of what is still buffered
    for a closed pipe cannot raise again (an 'Exception ignored' message and status 120)."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured, in-memory stdout: nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    from ...compiler.errors import SpecErrors
    from ...compiler.limits import LimitSettingError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "batch", 1) is not None and getattr(args, "batch", 1) < 1:
        print(f"alexnetc: error: --batch must be at least 1, got {args.batch}", file=sys.stderr)
        return 2
    problem = _bad_number(args) or _bad_environment()
    if problem:
        print(f"alexnetc: error: {problem}", file=sys.stderr)
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is caught below
        return status
    except BrokenPipeError:
        # The reader went away (`alexnetc predict ... | head`): stop quietly, as Unix tools do when
        # SIGPIPE ends them, and with their status (128 + SIGPIPE).
        _drop_stdout()
        return 128 + 13
    except SpecErrors as exc:
        if _debug():
            raise
        shown = _max_errors()
        for e in exc.errors[:shown]:
            print(one_line(e), file=sys.stderr)
        n = len(exc.errors)
        if n > shown:
            print(f"... {n - shown:,} more not shown (set {MAX_ERRORS_ENV} to see more)", file=sys.stderr)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 2
    except (UserError, LimitSettingError) as exc:
        if _debug():
            raise
        return _fail(str(exc), 2)
    except EnvironmentFailure as exc:
        if _debug():
            raise
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        print("alexnetc: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not the input: a full or read-only disk, a vanished directory
        if _debug():
            raise
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _fail(f"no space left on device{' writing ' + str(exc.filename) if exc.filename else ''}", 1)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}", 1)
    except MemoryError:
        if _debug():
            raise
        return _fail("out of memory", 1)
    except RecursionError:
        if _debug():
            raise
        return _fail("the input is nested too deeply to process", 2)
    except Exception as exc:  # a bug: still one line, with the way to see more
        if _debug():
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)", 1)


if __name__ == "__main__":
    sys.exit(main())
