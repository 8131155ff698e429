"""Validation: every error class, printed as FILE:LINE:COL: layer NAME: message, all reported together."""
from __future__ import annotations

import textwrap

import pytest

from alexnetc.compiler import SpecErrors, compile_spec
from alexnetc.compiler.ops import spec_ops

KNOWN_OPS = ", ".join(spec_ops())   # the registry's spec ops, in the order errors list them

HEAD = """\
name: t
input: {channels: 3, height: 32, width: 32}
classes: 10
devices: [gpu0, gpu1]
layers:
"""  # layers start on line 6


def errors_of(tmp_path, layers: str, head: str = HEAD, name: str = "spec.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(head + textwrap.dedent(layers))
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    return [str(e).replace(str(path), "F") for e in info.value.errors]


def test_valid_spec_compiles(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(HEAD + textwrap.dedent("""\
        - {name: conv1, op: conv, filters: 16, kernel: 3, pad: 1}
        - {name: fc1, op: fc, units: 10, act: none}
        - {name: loss, op: softmax_loss}
    """))
    net = compile_spec(path, batch=4)
    assert net.graph.outputs[1].shape == (4, 10)


def test_unknown_op_with_did_you_mean(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: cnov, filters: 16, kernel: 3}
        - {name: loss, op: softmax_loss}
    """)
    # Only the op is reported: the keys of an unknown op cannot be judged.
    assert errs == [f"F:6:21: layer conv1: unknown op 'cnov' (did you mean 'conv'?); known ops: {KNOWN_OPS}"]


def test_unknown_key_with_did_you_mean(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, strides: 2}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:51: layer conv1: unknown key 'strides' in conv layer (did you mean 'stride'?)"]


def test_unknown_top_level_key(tmp_path):
    errs = errors_of(tmp_path, "  - {name: loss, op: softmax_loss}\n", head=HEAD.replace("classes: 10\n", "clases: 10\n"))
    assert errs == ["F:1:1: missing required key 'classes'",
                    "F:3:1: unknown key 'clases' in spec (did you mean 'classes'?)"]


def test_invalid_value_reports_only_that_value(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: -16, kernel: 3, stride: 2}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:36: layer conv1: layers.filters: must be at least 1, got -16"]


def test_wrong_type(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: many}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:30: layer fc1: layers.units: expected an integer, got 'many'"]


def test_non_positive_output_size(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 40}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:48: layer conv1: conv height: window 40 is larger than the padded input 32 + 2*0 = 32, "
                    "so the output size would be -7"]


def test_pool_window_larger_than_input(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, stride: 2}
        - {name: pool1, op: maxpool, kernel: 16, stride: 2}
        - {name: loss, op: softmax_loss}
    """)
    # conv1: floor((32 - 3) / 2) + 1 = 15; a 16-wide window does not fit.
    assert errs == ["F:7:38: layer pool1: maxpool height: window 16 is larger than the padded input "
                    "15 + 2*0 = 15, so the output size would be 0"]


def test_fractional_output_size_under_exact_rounding(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, stride: 2, rounding: exact}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:48: layer conv1: conv height: output size (32 + 2*0 - 3) / 2 + 1 = 15.5 is fractional "
                    "under rounding 'exact'"]


def test_top_level_exact_rounding_applies_to_every_layer(tmp_path):
    layers = ("  - {name: conv1, op: conv, filters: 16, kernel: 3, stride: 2}\n  - {name: fc1, op: fc, units: 10}\n"
              "  - {name: loss, op: softmax_loss}\n")
    (tmp_path / "floor.yaml").write_text(HEAD + layers)
    assert compile_spec(tmp_path / "floor.yaml").layers[0].shape == (16, 15, 15)  # floor(29 / 2) + 1
    errs = errors_of(tmp_path, layers, head="rounding: exact\n" + HEAD)
    assert errs == ["F:7:48: layer conv1: conv height: output size (32 + 2*0 - 3) / 2 + 1 = 15.5 is fractional "
                    "under rounding 'exact'"]


def test_channels_not_divisible_by_groups(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, groups: {count: 2, connect: own}}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:59: layer conv1: the input's 3 channels are not divisible into 2 groups "
                    "(connect: own gives each group its own slice)"]


def test_filters_not_divisible_by_groups(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 15, kernel: 3, groups: {count: 2, connect: all}}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:59: layer conv1: 15 filters are not divisible into 2 groups"]


def test_fc_units_not_divisible_by_groups(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: 9, groups: {count: 2, connect: all}}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:41: layer fc1: 9 units are not divisible into 2 groups"]


def test_undeclared_device_in_layer_and_in_groups(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, groups: {count: 2, devices: [gpu0, gpu3]}}
        - {name: fc1, op: fc, units: 10, device: gpu9}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == [
        "F:6:86: layer conv1: device 'gpu3' is not declared in devices ['gpu0', 'gpu1'] (did you mean 'gpu1'?)",
        "F:7:42: layer fc1: device 'gpu9' is not declared in devices ['gpu0', 'gpu1'] (did you mean 'gpu1'?)"]


def test_no_devices_declared_means_gpu0_only(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: 10, device: gpu1}
        - {name: loss, op: softmax_loss}
    """, head=HEAD.replace("devices: [gpu0, gpu1]\n", ""))
    assert errs == ["F:5:42: layer fc1: device 'gpu1' is not declared in devices ['gpu0'] (did you mean 'gpu0'?)"]


def test_group_devices_count_mismatch(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, groups: {count: 2, devices: [gpu0]}}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:79: layer conv1: groups.devices lists 1 device(s) for 2 group(s); give one per group"]


def test_reference_to_missing_layer(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3}
        - {name: fc1, op: fc, units: 10, input: conv2}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:7:41: layer fc1: input 'conv2' is not a layer (did you mean 'conv1'?)"]


def test_duplicate_names(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3}
        - {name: conv1, op: conv, filters: 16, kernel: 3}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:7:10: layer conv1: duplicate layer name 'conv1' (first defined at line 6)"]


def test_reserved_name(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: data, op: relu}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:10: layer data: 'data' is reserved for the network's input"]


def test_cycle(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: a, op: relu, input: b}
        - {name: b, op: relu, input: a}
        - {name: loss, op: softmax_loss, input: b}
    """)
    assert errs == ["F:6:10: layer a: cycle through named inputs: a <- b <- a"]


def test_self_cycle(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: a, op: relu, input: a}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:30: layer a: layer reads its own output (a cycle: a -> a)"]


def test_fc_input_size_mismatch(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 3, pad: 1}
        - {name: fc1, op: fc, units: 10, in_features: 4096}
        - {name: loss, op: softmax_loss}
    """)
    # 16 * 32 * 32 = 16384 features reach fc1.
    assert errs == ["F:7:47: layer fc1: in_features is 4096 but the input has 16384 features"]


def test_classes_mismatch(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: 7}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:7:20: layer loss: the scores reaching the loss have 7 features but the spec has classes: 10"]


def test_lrn_even_size(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: norm1, op: lrn, size: 4, k: 2, alpha: 1.0e-4, beta: 0.75, alpha_over_n: false}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:32: layer norm1: LRN size must be odd (a window centred on the channel), got 4"]


def test_missing_loss(tmp_path):
    errs = errors_of(tmp_path, "  - {name: fc1, op: fc, units: 10}\n")
    assert errs == ["F:6:1: the network has no softmax_loss layer (the output)"]


def test_duplicate_yaml_key(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: 10, units: 12}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == ["F:6:34: duplicate key 'units' (first given at line 6)"]


def test_yaml_syntax_error_located(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: fc1, op: fc, units: 10
        - {name: loss, op: softmax_loss}
    """)
    assert len(errs) == 1 and errs[0].startswith("F:7:3: YAML syntax error:")


def test_many_errors_reported_together_sorted_by_position(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: cnov, filters: 16, kernel: 3}
        - {name: conv2, op: conv, filters: 16, kernal: 3}
        - {name: conv2, op: conv, filters: 16, kernel: 3, device: gpu2}
        - {name: conv3, op: conv, filters: 16, kernel: 99, input: data}
        - {name: fc1, op: fc, units: 10, input: fc9}
        - {name: a, op: relu, input: b}
        - {name: b, op: relu, input: a}
        - {name: loss, op: softmax_loss, input: conv3}
    """)
    assert errs == [
        f"F:6:21: layer conv1: unknown op 'cnov' (did you mean 'conv'?); known ops: {KNOWN_OPS}",
        "F:7:3: layer conv2: missing required key 'kernel'",
        "F:7:40: layer conv2: unknown key 'kernal' in conv layer (did you mean 'kernel'?)",
        "F:8:10: layer conv2: duplicate layer name 'conv2' (first defined at line 7)",
        "F:8:59: layer conv2: device 'gpu2' is not declared in devices ['gpu0', 'gpu1'] (did you mean 'gpu1'?)",
        "F:10:41: layer fc1: input 'fc9' is not a layer",
        "F:11:10: layer a: cycle through named inputs: a <- b <- a",
    ]  # conv3's shape error is not among them: layers are lowered only once the structure is valid


def test_semantic_and_shape_errors_reported_together(tmp_path):
    errs = errors_of(tmp_path, """\
        - {name: conv1, op: conv, filters: 16, kernel: 40}
        - {name: conv2, op: conv, filters: 16, kernel: 3, input: data}
        - {name: fc1, op: fc, units: 10, input: conv9}
        - {name: fc2, op: fc, units: 10, in_features: 5, input: conv2}
        - {name: loss, op: softmax_loss}
    """)
    assert errs == [
        "F:6:48: layer conv1: conv height: window 40 is larger than the padded input 32 + 2*0 = 32, "
        "so the output size would be -7",
        "F:8:41: layer fc1: input 'conv9' is not a layer (did you mean 'conv2'?)",
        "F:9:47: layer fc2: in_features is 5 but the input has 14400 features",
    ]


def test_error_in_inherited_layer_points_into_the_variant(tmp_path):
    (tmp_path / "base.yaml").write_text(HEAD + "  - {name: fc1, op: fc, units: 10}\n  - {name: loss, op: softmax_loss}\n")
    errs = errors_of(tmp_path, "", head="base: base.yaml\nmodify_layers:\n  fc1: {units: 0}\n", name="v.yaml")
    assert errs == ["F:3:16: layer fc1: layers.units: must be at least 1, got 0"]


def test_layer_named_like_a_generated_node_is_an_error(tmp_path):
    p = tmp_path / "clash.yaml"
    p.write_text(
        "input: {channels: 1, height: 28, width: 28}\n"
        "classes: 10\n"
        "devices: [gpu0, gpu1]\n"
        "layers:\n"
        "  - {name: conv1, op: conv, filters: 8, kernel: 3, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}\n"
        "  - {name: conv1_g0, op: conv, filters: 8, kernel: 3}\n"
        "  - {name: fc, op: fc, units: 10}\n"
        "  - {name: loss, op: softmax_loss}\n")
    from alexnetc.compiler import SpecErrors, compile_spec
    with pytest.raises(SpecErrors) as exc:
        compile_spec(p)
    assert [str(e) for e in exc.value.errors] == [
        f"{p}:6:12: layer conv1_g0: names generated for layer conv1 (conv1_g0, conv1_g0_bias, conv1_g0_weight) "
        f"clash with this layer's; rename layer conv1_g0"]
