"""The compile report's rows: output shape per group and device per group, for towers and merged groups."""
from __future__ import annotations

from pathlib import Path

from alexnetc.compiler import compile_spec
from alexnetc.compiler.report import format_table, rows

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _row(spec, layer, batch=1):
    rs, totals = rows(compile_spec(SPECS / spec, batch=batch))
    return next(r for r in rs if r.name == layer), totals


def test_two_towers_show_one_shape_and_device_per_group():
    r, totals = _row("alexnet.yaml", "conv2", batch=128)
    assert r.shapes == ["128x27x27", "128x27x27"] and r.devices == ["gpu0", "gpu1"]
    assert r.params == 48 * 5 * 5 * 256 + 256 and r.macs == 27 * 27 * 256 * 48 * 5 * 5
    assert r.act_bytes == 128 * 4 * 256 * 27 * 27  # fp32 outputs of both towers at batch 128
    assert totals["copies"] == ["conv3", "fc6", "fc7", "fc8"]
    # forward bytes per image crossing devices: pool2 both ways, pool5 both ways, drop6 both ways, drop7 once
    assert totals["cross_device_bytes_per_image"] == 4 * (2 * 128 * 13 * 13 + 2 * 128 * 6 * 6 + 2 * 2048 + 2048)


def test_groups_merged_on_one_device_still_show_per_group_shapes():
    r, totals = _row("alexnet-1gpu.yaml", "conv1")
    assert r.shapes == ["2×48x55x55"] and r.devices == ["gpu0"]
    r, _ = _row("alexnet-1gpu.yaml", "fc8")
    assert r.shapes == ["1000"]
    assert totals["copies"] == [] and totals["cross_device_bytes_per_image"] == 0


def test_table_has_a_row_per_layer_and_the_totals():
    text = format_table(compile_spec(SPECS / "alexnet.yaml"))
    assert "60,965,224" in text and "724,406,816" in text
    for layer in ("conv1", "norm1", "pool5", "fc8", "loss"):
        assert any(line.startswith(layer + " ") for line in text.splitlines())
