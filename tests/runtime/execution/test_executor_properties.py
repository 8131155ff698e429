"""Property test: random small specs (group counts and placements, own/all connections, strides,
padding, floor/ceil rounding, LRN, max/avg pooling, activations, fc groups) compile, and one training
step's gradients from the graph's backward nodes match torch.autograd of the eager graph (float64)."""
from __future__ import annotations

import textwrap

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alexnetc.compiler import SpecErrors, compile_spec
from alexnetc.compiler.ops.activation import ACTIVATIONS
from alexnetc.runtime.execution.params import init_params

from .test_executor import _batch, _check_against_autograd

DEVICES = ["gpu0", "gpu1"]


@st.composite
def specs(draw):
    size = draw(st.integers(9, 17))
    channels = draw(st.sampled_from([1, 2, 3]))
    layers = []
    prev_c = channels
    for i in range(draw(st.integers(1, 2))):
        count = draw(st.sampled_from([1, 2, 4]))
        connect = draw(st.sampled_from(["own", "all"])) if prev_c % count == 0 else "all"
        devs = draw(st.lists(st.sampled_from(DEVICES), min_size=count, max_size=count))
        filters = count * draw(st.integers(1, 3))
        k = draw(st.integers(1, 4))
        layers.append(dict(name=f"c{i}", op="conv", filters=filters, kernel=k, stride=draw(st.integers(1, 2)),
                           pad=draw(st.integers(0, k - 1)), rounding=draw(st.sampled_from(["floor", "ceil"])),
                           act=draw(st.sampled_from(ACTIVATIONS)),
                           groups=dict(count=count, devices=devs, connect=connect)))
        if draw(st.booleans()):
            layers.append(dict(name=f"n{i}", op="lrn", size=draw(st.sampled_from([1, 3, 5])), k=2.0,
                               alpha=draw(st.sampled_from([1e-4, 1e-2])), beta=0.75,
                               alpha_over_n=draw(st.booleans())))
        if draw(st.booleans()):
            pk = draw(st.integers(2, 3))
            layers.append(dict(name=f"p{i}", op=draw(st.sampled_from(["maxpool", "avgpool"])), kernel=pk,
                               stride=draw(st.integers(1, pk)), rounding=draw(st.sampled_from(["floor", "ceil"]))))
        prev_c = filters
    fcount = draw(st.sampled_from([1, 2]))
    layers.append(dict(name="f", op="fc", units=2 * fcount * draw(st.integers(1, 3)), act="relu",
                       groups=dict(count=fcount, devices=draw(st.lists(st.sampled_from(DEVICES), min_size=fcount,
                                                                        max_size=fcount)), connect="all")))
    layers.append(dict(name="out", op="fc", units=3, act="none", device=draw(st.sampled_from(DEVICES))))
    layers.append(dict(name="loss", op="softmax_loss"))
    body = "\n".join(f"  - {_flow(l)}" for l in layers)
    return textwrap.dedent(f"""\
        input: {{channels: {channels}, height: {size}, width: {size}}}
        classes: 3
        devices: [gpu0, gpu1]
        defaults: {{weight_init: {{type: gaussian, std: 0.3}}, bias_init: 0.1}}
        layers:
        """) + body + "\n"


def _flow(d) -> str:
    def val(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {val(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    return val(d)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=specs(), batch=st.integers(1, 3))
def test_random_specs_train_step_matches_autograd(tmp_path, text, batch):
    p = tmp_path / "random.yaml"
    p.write_text(text)
    try:
        net = compile_spec(p, batch=batch)
    except SpecErrors as exc:  # e.g. a window larger than a small map: a located error, not a crash
        assert all(e.mark.line >= 1 for e in exc.errors)
        assume(False)
    x, y = _batch(net, batch, seed=batch)
    _check_against_autograd(net, init_params(net, seed=3), x, y)
