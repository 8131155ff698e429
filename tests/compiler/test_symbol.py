"""Symbol API: composing from Python, arguments/outputs, infer_shape (and its errors), JSON round trips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from alexnetc.compiler import Graph, ShapeError, compile_spec, sym
from alexnetc.compiler.passes import infer_shapes
from alexnetc.compiler.pipeline import _strip_shapes

SPECS = Path(__file__).resolve().parents[2] / "specs"


def small_net():
    data = sym.var("data")
    x = sym.conv(data, filters=96, kernel=11, stride=4, pad=2, act="relu", name="conv1")
    x = sym.lrn(x, name="norm1")
    x = sym.maxpool(x, kernel=3, stride=2, name="pool1")
    x = sym.fc(sym.flatten(x, name="flat"), units=10, name="fc")
    return sym.softmax_loss(x, sym.var("label"), name="loss")


def test_compose_and_list():
    net = small_net()
    assert net.list_arguments() == ["data", "conv1_weight", "conv1_bias", "fc_weight", "fc_bias", "label"]
    assert net.list_outputs() == ["loss_loss", "loss_prob"]
    assert net["loss_prob"].list_outputs() == ["loss_prob"]
    internals = net.get_internals().list_outputs()
    assert internals[:6] == ["data", "conv1_weight", "conv1_bias", "conv1_output", "norm1_output",
                             "pool1_output"]  # LRN's scale and the pool's argmax are hidden


def test_infer_shape():
    args, outs, aux = small_net().infer_shape(data=(8, 3, 224, 224))
    # conv1: floor((224 + 4 - 11) / 4) + 1 = 55; pool1: floor((55 - 3) / 2) + 1 = 27; 96*27*27 = 69984.
    assert args == [(8, 3, 224, 224), (96, 3, 11, 11), (96,), (10, 69984), (10,), (8,)]
    assert outs == [(), (8, 10)]
    assert aux == []
    shapes = small_net().infer_shape_dict(data=(2, 3, 224, 224))
    assert shapes["conv1_output"] == (2, 96, 55, 55)
    assert shapes["pool1_argmax"] == (2, 96, 27, 27)


def test_no_bias_and_groups():
    x = sym.conv(sym.var("data"), filters=8, kernel=3, num_group=2, no_bias=True, name="c")
    assert x.list_arguments() == ["data", "c_weight"]
    args, outs, _ = x.infer_shape(data=(1, 4, 5, 5))
    assert args == [(1, 4, 5, 5), (8, 2, 3, 3)] and outs == [(1, 8, 3, 3)]


def test_infer_shape_error_names_the_node():
    x = sym.conv(sym.var("data"), filters=8, kernel=7, name="big")
    with pytest.raises(ShapeError) as info:
        x.infer_shape(data=(1, 3, 5, 5))
    assert str(info.value) == ("node big: conv height: window 7 is larger than the padded input 5 + 2*0 = 5, "
                               "so the output size would be -1")
    assert info.value.node_name == "big"


def test_infer_shape_unknown_input_is_reported():
    with pytest.raises(ShapeError, match="the shape of input 'data' is unknown"):
        small_net().infer_shape()


def test_infer_shape_error_names_node_and_spec_line():
    net = compile_spec(SPECS / "alexnet.yaml")
    with pytest.raises(ShapeError) as info:
        infer_shapes(_strip_shapes(net.graph), data=(1, 3, 8, 8), label=(1,))
    # conv1 gives floor((8 + 4 - 11) / 4) + 1 = 1 pixel; pool1 (line 25 of alexnet.yaml) cannot fit its 3x3 window.
    assert str(info.value) == (f"{SPECS / 'alexnet.yaml'}:25:5: layer pool1 (node pool1_g0): maxpool height: "
                               f"window 3 is larger than the padded input 1 + 2*0 = 1, so the output size would be 0")
    assert (info.value.layer, info.value.node_name, info.value.mark.line) == ("pool1", "pool1_g0", 25)


def test_symbol_json_round_trip():
    net = small_net()
    text = net.tojson()
    back = sym.load_json(text)
    assert back.tojson() == text
    assert back.list_arguments() == net.list_arguments()
    assert back.infer_shape(data=(2, 3, 224, 224)) == net.infer_shape(data=(2, 3, 224, 224))
    assert json.loads(text)["format"] == "alexnetc-graph/1"


@pytest.mark.parametrize("spec", ["alexnet.yaml", "alexnet-1gpu.yaml", "variants/mini.yaml"])
def test_compiled_graph_json_round_trip(spec):
    net = compile_spec(SPECS / spec, batch=4)
    for g in (net.graph, net.training().graph):
        text = g.tojson()
        back = Graph.load_json(text)
        assert back.tojson() == text
        assert [(n.op, n.name, n.device, n.layer, n.mark, n.shapes) for n in back.nodes()] == \
               [(n.op, n.name, n.device, n.layer, n.mark, n.shapes) for n in g.nodes()]


def test_load_json_rejects_other_formats():
    with pytest.raises(ValueError, match="not an alexnetc graph"):
        Graph.load_json('{"format": "mxnet"}')


@pytest.mark.parametrize("spec", ["alexnet.yaml", "variants/mini.yaml"])
def test_compiling_twice_gives_identical_json(spec, tmp_path):
    # Two different paths with the same text defeat the compile cache: really compiled twice.
    text = (SPECS / spec).read_text()
    if spec.startswith("variants/"):
        text = text.replace("base: ../alexnet.yaml", f"base: {SPECS / 'alexnet.yaml'}")
    outs = []
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(text)
        net = compile_spec(tmp_path / name, batch=8)
        outs.append(net.training().graph.tojson().replace(str(tmp_path / name), "SPEC"))
    assert outs[0] == outs[1]
