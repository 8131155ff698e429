"""The command line's error contract (runtime/app/errors.py; issue 25, item 6): user-supplied strings
(file names, class names) reach the terminal with their control characters escaped, on stdout as in
error lines; a failed write is exit status 1 when the machine failed (disk full, read-only) and 2 when
the input did (a device as the target), in one plain line."""
from __future__ import annotations

import errno

import numpy as np
from PIL import Image

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.errors import EnvironmentFailure, UserError, say, write_failure
from alexnetc.runtime.atomic import WriteTargetError
from alexnetc.runtime.training import checkpoint as ckpt

ESC = "\x1b[2J\x1b[31m"


def test_file_and_class_names_are_escaped_in_predict_and_neighbors(tiny_copy, tmp_path, capsys, monkeypatch):
    """predict printed file names and class names raw: an ESC [2J in a name cleared the terminal."""
    path = ckpt.latest_checkpoint(str(tiny_copy / "checkpoints"))
    tensors, state = ckpt.load_checkpoint(path)
    state["classes"] = [f"class{ESC}{i}" for i in range(4)]
    ckpt.save_checkpoint(tiny_copy / "checkpoints", tensors, state, tag="named", keep=None)
    img = tmp_path / f"shoe{ESC}.png"
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(img)
    assert main(["predict", str(tiny_copy), str(img)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.startswith(f"{tmp_path}/shoe\\x1b[2J\\x1b[31m.png\n")
    assert "class\\x1b[2J\\x1b[31m" in out
    monkeypatch.setenv("ALEXNETC_CACHE", str(tmp_path / "cache"))
    assert main(["neighbors", str(tiny_copy), "--limit", "4", "--k", "1", "--workers", "0", "-o",
                 str(tmp_path / "nn.png"), "--query", str(img)]) == 0
    cap = capsys.readouterr()
    assert "\x1b" not in cap.out + cap.err and "shoe\\x1b[2J" in cap.out


def test_say_keeps_line_breaks_and_escapes_the_rest(capsys):
    say(f"\nline{ESC}\tone\nline two\r")
    assert capsys.readouterr().out == "\nline\\x1b[2J\\x1b[31m\\tone\nline two\\r\n"


def test_write_failures_are_the_machines_or_the_inputs():
    full = write_failure("out.onnx", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, EnvironmentFailure) and str(full) == "no space left on device writing out.onnx"
    ro = write_failure("out.onnx", OSError(errno.EROFS, "Read-only file system"))
    assert isinstance(ro, EnvironmentFailure) and str(ro) == "out.onnx: cannot write: Read-only file system"
    dev = write_failure("/dev/x", WriteTargetError(errno.EINVAL, "not a regular file (a FIFO)", "/dev/x"))
    assert isinstance(dev, UserError) and str(dev) == "/dev/x: cannot write: not a regular file (a FIFO)"
    parent = write_failure("a/b", OSError(errno.ENOTDIR, "Not a directory"))
    assert isinstance(parent, UserError)

    class SafetensorError(Exception):   # safetensors reports the OS error inside its own exception type
        pass

    wrapped = write_failure("c.safetensors", SafetensorError("Error while serializing: I/O error: No space left on "
                                                             "device (os error 28)"))
    assert isinstance(wrapped, EnvironmentFailure) and str(wrapped) == "no space left on device writing c.safetensors"


def test_a_bad_host_heap_setting_is_one_line_before_any_work(monkeypatch, capsys, specs_dir):
    """oracle: runtime/execution/host_memory.py's choices (keep, off)."""
    monkeypatch.setenv("ALEXNETC_HOST_HEAP", "no")
    assert main(["compile", str(specs_dir / "variants" / "mini.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["alexnetc: error: ALEXNETC_HOST_HEAP='no': expected one of keep, off (default keep)"]
