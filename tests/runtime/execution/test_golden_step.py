"""Two training steps on the CPU reference backend give, bit for bit, the losses, probabilities,
gradients and updated weights recorded before the op registry replaced the per-op tables
(tests/runtime/execution/golden/training-step.json: SHA-256 prefixes of each tensor's bytes).

Each record also says the `layout` the reference kept its maps in. The records made in NCHW still
hold with the backend's map layout set back to NCHW (`_common.maps` as `.contiguous()`) and LRN's
power back on ATen's pow: the CPU speed work of issue 20 changed which ATen/oneDNN kernels sum the
convolutions and pools and how LRN raises to -beta, nothing else, and this proves it. The channels-last records, made since,
pin the backend as it runs.

A record says the thread count it was made with (oneDNN splits a convolution's weight gradient over
the threads), and the test runs with that many. ATen's CPU kernels differ between instruction sets
and releases (and within one instruction set: AMX or not, oneDNN's choices), so each golden record
says where it was made: the `cpu` capability, the `torch` version and, for records made since, a
`probe`, the hash of a few ATen calls the reference kernels make (convolution forward and backward,
GEMM, LRN, softmax) on fixed inputs in the record's layout. A record applies where its probe hashes
the same (a record without one: where capability and version match and no probed record applies);
elsewhere the test is skipped, and the executor-versus-autograd tests still hold the numbers to tolerances.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.runtime.execution.executor import Executor
from alexnetc.runtime.execution.optim import SGD
from alexnetc.runtime.execution.params import init_params

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GOLDENS = json.loads((HERE / "golden" / "training-step.json").read_text())["records"]
SPECS = {"mini.yaml": ROOT / "specs" / "variants" / "mini.yaml", "graph.yaml": HERE / "golden" / "graph.yaml"}


def _fp(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


LAYOUTS = ("nchw", "channels_last")


def _layout(monkeypatch, layout: str) -> None:
    """NCHW: every reference module that places maps (`from ._common import maps`) gets the NCHW rule."""
    if layout == "nchw":
        import importlib
        import pkgutil

        import alexnetc.kernels.reference as reference
        from alexnetc.kernels.reference import _common

        rule = _common.maps
        # every module imported before any is patched (an import would copy a patched name)
        modules = [importlib.import_module(f"{reference.__name__}.{m.name}")
                   for m in pkgutil.iter_modules(reference.__path__)]
        for module in modules:
            if getattr(module, "maps", None) is rule:
                monkeypatch.setattr(module, "maps", lambda t: t.contiguous())
        # and LRN's s^-beta back on ATen's pow (it is exp2(-beta log2 s) since, as in the Triton kernel)
        monkeypatch.setattr(importlib.import_module(f"{reference.__name__}.lrn"), "_pow_neg",
                            lambda s, beta: s.pow(-beta))


def _two_steps(path: Path) -> dict:
    net = compile_spec(path, batch=8)
    ex = Executor(net, {d: "cpu" for d in net.devices}, params=init_params(net, seed=3), backend="reference")
    g = torch.Generator().manual_seed(5)
    c, h, w = net.input_shape
    x, y = torch.randn(8, c, h, w, generator=g), torch.randint(0, net.classes, (8,), generator=g)
    res, opt = {}, None
    for step in range(2):
        ex.seed, ex.step_count = 7, step
        out = ex.forward(x, y, is_train=True)
        grads = ex.backward()
        opt = opt or SGD(ex.params, {n.name: (1.0, 1.0) for n in ex.param_nodes})
        opt.step(grads, 0.05)
        res[f"step{step}"] = {"loss": float(out["loss"]).hex(), "prob": _fp(out["prob"]),
                              "grads": {k: _fp(v) for k, v in sorted(grads.items())},
                              "params": {k: _fp(v) for k, v in sorted(ex.params.items())}}
    return res


def aten_probe(layout: str = "nchw") -> str:
    """A hash of the ATen calls the reference kernels build on, on fixed inputs, maps in `layout`:
    where it matches a record's, ATen computes those the same way bit for bit."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, 6, 13, 13, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(12, 3, 3, 3, generator=g, requires_grad=True)
    y = F.conv2d(x, w, stride=2, padding=1, groups=2)
    z = F.local_response_norm(torch.relu(y), 5, 1e-4, 0.75, 2.0)
    m = torch.mm(z.flatten(1), torch.randn(z[0].numel(), 10, generator=g))
    p = torch.softmax(m, 1)
    p.log().sum().backward()
    h = hashlib.sha256()
    for t in (y, z, m, p, x.grad, w.grad):
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _golden(layout: str) -> dict | None:
    probe = aten_probe(layout)
    records = [r for r in GOLDENS if r.get("layout", "nchw") == layout]
    for record in records:
        if record.get("probe") == probe:
            return record
    for record in records:
        if "probe" not in record and record["cpu"] == torch.backends.cpu.get_cpu_capability() \
                and record["torch"] == torch.__version__:
            return record
    return None


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_training_steps_are_bit_identical_to_the_golden(spec, layout, monkeypatch):
    golden = _golden(layout)
    if golden is None:
        pytest.skip(f"no {layout} golden record for this machine's ATen (probe {aten_probe(layout)}, "
                    f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__})")
    _layout(monkeypatch, layout)
    threads = torch.get_num_threads()
    torch.set_num_threads(golden["threads"])   # oneDNN splits a weight gradient's sum over the threads
    try:
        assert _two_steps(SPECS[spec]) == golden[spec]
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":   # print a record for this machine: python tests/runtime/execution/test_golden_step.py
    import platform
    import sys

    layout = sys.argv[1] if len(sys.argv) > 1 else "channels_last"
    torch.set_num_threads(1)   # one thread: no reduction split that depends on the machine's cores
    record = {"cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "layout": layout,
              "threads": torch.get_num_threads(),
              "probe": aten_probe(layout), "note": f"recorded on {platform.processor() or platform.machine()}"}
    if layout == "nchw":
        pytest.exit("record NCHW goldens from a commit that ran NCHW, not by patching")
    record.update({name: _two_steps(path) for name, path in sorted(SPECS.items())})
    print(json.dumps(record, indent=1, sort_keys=True))
