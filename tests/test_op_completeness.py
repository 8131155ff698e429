"""Every registered op is complete: described, schema-valid, shape-inferred, differentiated, and
implemented by both kernel backends and the eager oracle, which agree on a small random case; and
every activation works fused into every op that fuses one.

Adding an op needs its descriptor (compiler/ops/F.py), its kernels (kernels/F.py and
kernels/reference/F.py), its tests and a line in `EXAMPLES` below (docs/adding-an-op.md). This file
fails until all of them exist: `test_every_spec_op_has_an_example` names a missing example, and
`test_every_kernel_entry_point_exists_in_both_backends` a missing kernel. An activation needs no line
here: the cases are derived from the registry (each activation as a layer, and fused into conv, fc,
batch norm and add, the ops whose descriptor has `fuse_activation`).

The agreement case compiles a tiny spec around the op (a 1x1 conv before it, so the op's backward is
on the path of a parameter's gradient; an fc and the loss after it) and runs one training step on the
reference backend, on the Triton launchers in Triton's interpreter, and through the eager oracle
(`OpDef.eager` in float64, differentiated by torch.autograd). Tolerances: reference vs Triton 1e-5
relative to each tensor's scale (both fp32), 3e-5 with an activation fused after the input conv's tanh
(measured 1.2e-5 for conv and tanh: the gradient of the last fc's weight is the product of the
probabilities' gradient and activations of about 1e-3, where the Triton tanh, computed through exp2,
has a relative error of about one fp32 ulp over 2|x|); reference vs float64 eager 1e-4.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from alexnetc.compiler import compile_spec
from alexnetc.compiler.ops import OPS, OpDef, spec_ops
from alexnetc.compiler.ops.activation import ACT, ACTIVATIONS
from alexnetc.compiler.ops.registry import SameShape
from alexnetc.kernels import backend as kb

# A small case per spec op: its layer keys. (Internal ops -- backward ops, reshape, slice, add_n,
# copy -- are exercised through the gradient pass and the lowering of these.)
EXAMPLES: dict[str, dict] = {
    "conv": {"filters": 4, "kernel": 3, "pad": 1, "groups": {"count": 2}},
    "fc": {"units": 6, "act": "relu"},
    "lrn": {"size": 3, "k": 2.0, "alpha": 0.1, "beta": 0.75, "alpha_over_n": True},
    "batchnorm": {"momentum": 0.2, "eps": 1e-3, "act": "relu"},
    "maxpool": {"kernel": 3, "stride": 2, "rounding": "ceil"},
    "avgpool": {"kernel": 2, "stride": 2, "pad": 1},
    "globalmaxpool": {},
    "globalavgpool": {},
    "dropout": {"p": 0.5},
    **{act: {} for act in ACTIVATIONS[1:]},   # an activation layer has no keys
    "flatten": {},
    "concat": {"inputs": ["pre", "pre2"]},
    "add": {"inputs": ["pre", "pre2"]},
    "softmax_loss": {},
}


def _overrides(op: OpDef, method: str) -> bool:
    return getattr(type(op), method) is not getattr(OpDef, method) or (
        method == "infer" and isinstance(op, SameShape))


def test_every_spec_op_has_an_example():
    assert sorted(EXAMPLES) == sorted(spec_ops()), "add an example case for each spec op"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_is_described(name):
    op = OPS[name]
    assert _overrides(op, "infer"), f"{name}: no shape rule"
    assert op.kernel is not None or name == "copy", f"{name}: no kernel entry point"
    if op.in_spec:
        assert op.doc, f"{name}: no doc (shown in the schema and the symbol constructor)"
        assert _overrides(op, "gradient") or _overrides(op, "input_grad"), f"{name}: no gradient rule"
    if op.in_spec or name in ("reshape", "slice", "add_n", "copy"):  # what a forward graph may hold
        assert _overrides(op, "eager"), f"{name}: no eager rule"


def test_every_kernel_entry_point_exists_in_both_backends():
    assert kb.missing_entry_points("reference") == []
    assert kb.missing_entry_points("triton") == []


def test_a_missing_entry_point_is_an_import_error_naming_the_op(monkeypatch):
    real = kb._defined_names
    monkeypatch.setattr(kb, "_defined_names",
                        lambda m: (real(m) or set()) - {"lrn_backward"} if m.endswith(".lrn") else real(m))
    with pytest.raises(ImportError, match=r"kernels\.lrn\.lrn_backward \(op lrn_backward\)"):
        kb.check_backends()


def test_an_activation_a_backend_lacks_is_an_import_error_naming_it(monkeypatch):
    """A backend must define each activation's forward and backward (`Kernel.requires`), or the kernels
    do not import: the reference backend without tanh_grad, the Triton one without sigmoid."""
    real = kb._defined_names
    drop = {"alexnetc.kernels.reference.activation": "tanh_grad", "alexnetc.kernels.activation": "sigmoid"}
    monkeypatch.setattr(kb, "_defined_names", lambda m: (real(m) or set()) - {drop.get(m)})
    with pytest.raises(ImportError, match=r"reference: alexnetc\.kernels\.reference\.activation\.tanh_grad \(op tanh\)"):
        kb.check_backends()
    assert kb.missing_entry_points("triton") == ["alexnetc.kernels.activation.sigmoid (op sigmoid)"]


# The ops an activation layer after them is folded into (their descriptors accept it).
FUSING = sorted(name for name in spec_ops() if _overrides(OPS[name], "fuse_activation"))


def _spec(name: str, fused: str | None = None) -> dict:
    """A tiny net around op `name`; with `fused`, that activation as a layer right after it (the fusion
    pass folds it into the op)."""
    layers = [{"name": "pre", "op": "conv", "filters": 4, "kernel": 1, "act": "tanh"}]
    if name == "batchnorm":   # no conv bias before it: its gradient is 0 exactly, compared it is only noise
        layers[0] = {**layers[0], "act": "none", "bias": False}
    if name == "concat":
        layers.append({"name": "pre2", "op": "conv", "filters": 2, "kernel": 1, "input": "data"})
    if name == "add":   # the second branch on the other device: the add gathers it through a copy
        layers.append({"name": "pre2", "op": "conv", "filters": 4, "kernel": 1, "input": "data", "device": "gpu1"})
    if name != "softmax_loss":
        layers.append({"name": "x", "op": name, **EXAMPLES[name], **({ACT.name: "none"} if fused else {})})
    if fused:
        layers.append({"name": "a", "op": fused})
    layers += [{"name": "out", "op": "fc", "units": 3}, {"name": "loss", "op": "softmax_loss"}]
    return {"name": f"one-{name}", "input": {"channels": 2, "height": 7, "width": 7}, "classes": 3,
            "devices": ["gpu0", "gpu1"], "layers": layers}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    scale = max(float(b.detach().abs().max()), 1e-6)
    torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=rel * scale)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_backends_and_eager_agree(name, tmp_path, monkeypatch):
    net = _compile(_spec(name), tmp_path)   # schema, semantic checks, lowering, shapes, fusion, placement
    assert any(n.op == name or n.attrs.get("act") == name for n in net.graph.nodes()), "op not in the graph"
    # The oracle: dropout's masks are torch's own there, so compare it as the identity (eval mode).
    _agree(net, monkeypatch, training=name != "dropout")


@pytest.mark.parametrize("op,act", [(op, act) for op in FUSING for act in ACTIVATIONS[1:]])
def test_every_activation_fused_into_every_op_that_fuses_one(op, act, tmp_path, monkeypatch):
    """The activation runs in the op's epilogue (the fused node carries it), on both backends and in the
    eager rule: a backend that does not implement it fails here, and so would one that skipped it."""
    net = _compile(_spec(op, fused=act), tmp_path)
    fused = [n for n in net.graph.nodes() if n.op == op and n.layer == "x"]
    assert fused and all(n.attrs[ACT.name] == act for n in fused), "the activation was not fused"
    assert not any(n.op == act for n in net.graph.nodes())
    _agree(net, monkeypatch, training=True, backends_rel=3e-5)


@pytest.mark.parametrize("act", ACTIVATIONS[1:])
def test_each_activations_derivative_from_its_output_is_autograds(act):
    """oracle: torch.autograd of the eager rule, float64; `grad_from_y` is what the kernels' tests hold
    act_backward to."""
    x = torch.linspace(-8, 8, 801, dtype=torch.float64, requires_grad=True)
    y = OPS[act].rule(x)
    dy = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (dx,) = torch.autograd.grad(y, x, dy)
    torch.testing.assert_close(OPS[act].grad_from_y(dy, y.detach()), dx, rtol=1e-9, atol=1e-12)


def _compile(spec: dict, tmp_path):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return compile_spec(path, batch=3)


def _agree(net, monkeypatch, training: bool, backends_rel: float = 1e-5) -> None:
    """One training step on both backends and, `training` or as the identity in evaluation, the eager
    oracle: loss, probabilities, every gradient and updated state agree within the tolerances above."""
    from alexnetc.runtime.execution.eager import EagerNet
    from alexnetc.runtime.execution.executor import bind
    from alexnetc.runtime.execution.params import init_params

    params = init_params(net, 0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 2, 7, 7, generator=g), torch.randint(0, 3, (3,), generator=g)
    cpu2 = {"gpu0": "cpu", "gpu1": "cpu"}

    results = {}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for backend in ("reference", "triton"):
        ex = bind(net, cpu2, params=params, backend=backend)
        ex.seed, ex.step_count = 3, 1
        out = ex.forward(x, y, is_train=True)
        results[backend] = (out["loss"], out["prob"], {k: v.clone() for k, v in ex.backward().items()},
                            {k: v.clone() for k, v in ex.state.items()})
    (l_r, p_r, g_r, s_r), (l_t, p_t, g_t, s_t) = results["reference"], results["triton"]
    _close(l_t, l_r, backends_rel)
    _close(p_t, p_r, backends_rel)
    for k in g_r:
        _close(g_t[k], g_r[k], backends_rel)
    assert set(s_t) == set(s_r)
    for k in s_r:   # state a training forward updated (batch norm's running statistics)
        _close(s_t[k], s_r[k], backends_rel)

    eager = EagerNet(net, {k: v.double() for k, v in params.items()}, lrn="formula").double()
    eager.train(training)
    loss, prob = eager(x.double(), y)
    loss.backward()
    if training:
        _close(l_r, loss, 1e-4)
        for k in g_r:
            _close(g_r[k], eager.param(k).grad, 1e-4)
        for k in s_r:
            _close(s_r[k], eager.state(k), 1e-4)
    else:
        ex = bind(net, cpu2, params=params, backend="reference", for_training=False)
        _close(ex.forward(x, y)["prob"], prob, 1e-4)
