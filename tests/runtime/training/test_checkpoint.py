"""Checkpoints: lossless round trip, no pickle, crash leftovers passed over, SIGKILL mid-write."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from alexnetc.runtime.training import checkpoint as C


def sample_tensors(i: int = 0) -> dict:
    g = torch.Generator().manual_seed(i)
    w = torch.randn(7, 5, generator=g)
    return {
        "conv1/weight": w,
        "conv1/bias": torch.full((7,), float(i)),
        "fc/weight_bf16": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "momentum/conv1/weight": w * 0.5,
        "steps_i64": torch.tensor([i, 2**40 + i], dtype=torch.int64),
        "mask_i8": torch.tensor([-3, 0, 5], dtype=torch.int8),
        "flags": torch.tensor([True, False]),
        "rng/torch": torch.get_rng_state(),
        "view_of_w": w[2:4],                     # a view sharing storage: saved as a copy
        "empty": torch.zeros(0, 3),
    }


def test_round_trip_is_exact(tmp_path):
    t = sample_tensors(3)
    state = {"epoch": 3, "step": 1234, "lr": 0.001, "schedule": {"drops": 1, "best": 0.25},
             "classes": ["T-shirt/top", "Ankle boot"], "spec_text": "name: x\n# ü\n",
             "np_int": np.int64(7), "np_arr": np.arange(3), "loss": float("nan")}
    path = C.save_checkpoint(tmp_path, t, state, tag="e0003")
    assert path.endswith(".json") and os.path.basename(path).startswith("ckpt-000001-e0003")
    tensors, st = C.load_checkpoint(tmp_path)
    assert set(tensors) == set(t)
    for k, v in t.items():
        assert tensors[k].dtype == v.dtype and tensors[k].shape == v.shape, k
        assert tensors[k].device.type == "cpu"
        assert torch.equal(tensors[k], v), k
    assert st["np_int"] == 7 and st["np_arr"] == [0, 1, 2] and np.isnan(st["loss"])
    assert {k: st[k] for k in ("epoch", "step", "lr", "schedule", "classes", "spec_text")} == \
        {k: state[k] for k in ("epoch", "step", "lr", "schedule", "classes", "spec_text")}
    # the same through the .json and .safetensors paths
    assert C.load_checkpoint(path)[1]["step"] == 1234
    assert C.load_checkpoint(path[:-5] + ".safetensors")[1]["step"] == 1234


def test_files_are_safetensors_and_json_never_pickle(tmp_path):
    C.save_checkpoint(tmp_path, sample_tensors(), {"epoch": 0}, tag="a")
    files = sorted(os.listdir(tmp_path))
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "safetensors"]
    for f in files:
        data = (tmp_path / f).read_bytes()
        assert not data.startswith(b"\x80") and b"PK\x03\x04" not in data[:4]   # no pickle, no zip
    js = json.loads((tmp_path / files[0]).read_text())
    assert js["format"] == C.FORMAT and js["tensors_file"] == files[1]
    st = (tmp_path / files[1]).read_bytes()
    header_len = int.from_bytes(st[:8], "little")
    header = json.loads(st[8:8 + header_len])
    assert header["conv1/weight"]["dtype"] == "F32" and header["fc/weight_bf16"]["dtype"] == "BF16"


def test_both_files_get_one_mode_from_the_umask(tmp_path):
    """safetensors writes its file 0600; the checkpoint's two files share the mode a new file gets."""
    old = os.umask(0o027)
    try:
        C.save_checkpoint(tmp_path / "a", sample_tensors(), {"epoch": 0}, tag="a")
    finally:
        os.umask(old)
    modes = {f: os.stat(tmp_path / "a" / f).st_mode & 0o777 for f in os.listdir(tmp_path / "a")}
    assert sorted(modes.values()) == [0o640, 0o640], modes
    C.save_checkpoint(tmp_path / "b", sample_tensors(), {"epoch": 0}, tag="b")
    want = 0o666 & ~old
    assert {os.stat(tmp_path / "b" / f).st_mode & 0o777 for f in os.listdir(tmp_path / "b")} == {want}


def test_keep_last_k_and_protected_tags(tmp_path):
    for i in range(6):
        C.save_checkpoint(tmp_path, {"x": torch.tensor([i])}, {"i": i}, tag="best" if i == 1 else i, keep=3,
                          keep_tags=("best",))
    infos = C.list_checkpoints(tmp_path)
    assert [i.seq for i in infos] == [2, 4, 5, 6] and all(i.ok for i in infos)
    assert infos[0].tag == "best"
    assert len(os.listdir(tmp_path)) == 8
    C.save_checkpoint(tmp_path, {"x": torch.tensor([9])}, {"i": 9}, keep=3, keep_tags=("best",))
    assert [i.seq for i in C.list_checkpoints(tmp_path)] == [2, 5, 6, 7]


def _damaged_dir(tmp_path, how: str):
    for i in range(3):
        C.save_checkpoint(tmp_path, {"x": torch.full((100,), float(i))}, {"i": i}, tag=f"e{i}", keep=None)
    newest = C.latest_checkpoint(tmp_path)
    assert newest.endswith("ckpt-000003-e2.json")
    st = newest[:-5] + ".safetensors"
    if how == "truncated":
        data = open(st, "rb").read()
        open(st, "wb").write(data[: len(data) // 2])
    elif how == "hash":
        rec = json.load(open(newest))
        rec["tensors_sha256"] = "0" * 64
        json.dump(rec, open(newest, "w"))
    elif how == "flipped":
        data = bytearray(open(st, "rb").read())
        data[-1] ^= 0xFF
        open(st, "wb").write(bytes(data))
    elif how == "json_truncated":
        text = open(newest).read()
        open(newest, "w").write(text[: len(text) // 2])
    elif how == "no_tensors":
        os.unlink(st)
    elif how == "temp_leftover":
        # a crash before the JSON was committed: orphan tensors + a temp JSON from a dead writer
        os.unlink(newest)
        open(os.path.join(tmp_path, ".tmp-ckpt-999999999-1-ckpt-000003-e2.json"), "w").write("{")
        return "ckpt-000002-e1.json"
    return "ckpt-000002-e1.json"


@pytest.mark.parametrize("how", ["truncated", "hash", "flipped", "json_truncated", "no_tensors", "temp_leftover"])
def test_latest_falls_back_to_previous_good(tmp_path, how):
    expect = _damaged_dir(tmp_path, how)
    problems: list[str] = []
    latest = C.latest_checkpoint(tmp_path, problems)
    assert os.path.basename(latest) == expect
    if how != "temp_leftover":
        assert len(problems) == 1 and "ckpt-000003-e2" in problems[0]
    tensors, state = C.load_checkpoint(tmp_path)
    assert state["i"] == 1 and torch.equal(tensors["x"], torch.full((100,), 1.0))
    if how != "temp_leftover":
        with pytest.raises(C.CheckpointError, match="ckpt-000003-e2"):
            C.load_checkpoint(os.path.join(tmp_path, "ckpt-000003-e2.json"))
    # the next save goes on from there and cleans up the leftovers
    C.save_checkpoint(tmp_path, {"x": torch.zeros(1)}, {"i": 3}, keep=2)
    names = sorted(os.listdir(tmp_path))
    assert not any(n.startswith(".tmp-ckpt-") for n in names)
    assert C.load_checkpoint(tmp_path)[1]["i"] == 3


def test_errors_name_the_file(tmp_path):
    with pytest.raises(C.CheckpointError, match="nothing.json: no such checkpoint"):
        C.load_checkpoint(tmp_path / "nothing.json")
    with pytest.raises(C.CheckpointError, match=f"{tmp_path}: no checkpoint in this directory verifies"):
        C.load_checkpoint(tmp_path)
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"\x80\x04pickle")
    with pytest.raises(C.CheckpointError, match="model.pt: not a checkpoint"):
        C.load_checkpoint(bogus)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(C.CheckpointError, match="other.json: not an alexnetc checkpoint"):
        C.load_checkpoint(other)
    with pytest.raises(C.CheckpointError, match="not JSON-serialisable"):
        C.save_checkpoint(tmp_path / "d", {}, {"f": object()})
    with pytest.raises(C.CheckpointError, match=r"tensors\['w'\]: expected a torch.Tensor"):
        C.save_checkpoint(tmp_path / "d", {"w": np.zeros(2)}, {})
    with pytest.raises(C.CheckpointError, match="tag"):
        C.save_checkpoint(tmp_path / "d", {}, {}, tag="../evil")
    assert not os.path.exists(tmp_path / "d") or not os.listdir(tmp_path / "d")


def test_rng_state_round_trip(tmp_path):
    import random as pyrandom

    torch.manual_seed(1)
    np.random.seed(2)
    pyrandom.seed(3)
    np.random.normal()                            # leave a cached gaussian in numpy's state
    t, s = C.rng_state()
    C.save_checkpoint(tmp_path, t, {"rng": s})
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), pyrandom.random(), pyrandom.gauss(0, 1))
    torch.manual_seed(99)
    np.random.seed(99)
    pyrandom.seed(99)
    tensors, state = C.load_checkpoint(tmp_path)
    C.restore_rng_state(tensors, state["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), pyrandom.random(), pyrandom.gauss(0, 1))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


WRITER = textwrap.dedent("""
    import sys, torch
    from alexnetc.runtime.training.checkpoint import save_checkpoint
    d, start = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    i = start
    while True:
        x = torch.full((64, 1024), float(i))         # 256 KiB: writes take a moment
        save_checkpoint(d, {"x": x, "momentum/x": -x}, {"i": i, "pad": "y" * (i % 7) * 1000}, tag=f"i{i}", keep=2)
        i += 1
""")


def test_sigkill_while_writing_never_loses_the_latest(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    d = tmp_path / "ckpts"
    rnd = random.Random(0)
    last_i = -1
    deadline = time.monotonic() + 2.5
    rounds = 0
    while time.monotonic() < deadline or rounds < 3:
        proc = subprocess.Popen([sys.executable, str(script), str(d), str(last_i + 1)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        rounds += 1
        latest = C.latest_checkpoint(d)
        if latest is None:          # killed before the first save completed
            assert last_i == -1
            continue
        tensors, state = C.load_checkpoint(latest)
        i = state["i"]
        assert i >= last_i
        assert torch.equal(tensors["x"], torch.full((64, 1024), float(i)))
        assert torch.equal(tensors["momentum/x"], -tensors["x"])
        last_i = i
    assert last_i >= 1 and rounds >= 3
    # A kill between a save and its pruning leaves one checkpoint too many, and on a loaded machine
    # that can happen in several rounds running; the next save that completes prunes them all.
    x = torch.full((64, 1024), float(last_i + 1))
    C.save_checkpoint(d, {"x": x, "momentum/x": -x}, {"i": last_i + 1}, tag=f"i{last_i + 1}", keep=2)
    complete = [c for c in C.list_checkpoints(d) if c.ok]
    assert len(complete) == 2
