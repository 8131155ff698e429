"""replacing(): the new file appears whole on success; on failure the old one stays and no temp is left;
a target that is not a regular file is never written through (issue 25, item 3), and a read-only or
full disk is exit status 1 with a plain message in every command that writes (item 6)."""
from __future__ import annotations

import contextlib
import os
import stat
import subprocess

import pytest

from alexnetc.runtime.app.cli import main
from alexnetc.runtime.atomic import WriteTargetError, check_write_target, replacing


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with replacing(target, ".txt") as tmp:
        assert tmp.endswith(".txt") and os.path.dirname(tmp) == str(target.parent)
        open(tmp, "w").write("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["out.txt"]


# ------------------------------------------------------------------------------------------ issue 25, item 3



def _device_node(path) -> None:
    """A character device with /dev/full's numbers (1, 7): writes to it fail with ENOSPC. Made here, so a
    regression renames over a node of the test's own, never over the machine's /dev/full."""
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as exc:
        pytest.skip(f"cannot create a device node here: {exc.strerror}")


@contextlib.contextmanager
def _tmpfs(path, size: str, read_only: bool = False):
    """A real full (small) or read-only file system at `path` (as root: chmod does not stop root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _one_error(argv, capsys, status):
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert rc == status and len(err) == 1 and err[0].startswith("alexnetc: error: "), (rc, err)
    return err[0][len("alexnetc: error: "):]


def test_targets_that_are_not_regular_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path, kind in ((tmp_path / "fifo", "a FIFO"), (tmp_path, "a directory")):
        with pytest.raises(WriteTargetError, match=rf"not a regular file \({kind}\)"):
            with replacing(path) as tmp:
                open(tmp, "w").write("x")
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode) and sorted(os.listdir(tmp_path)) == ["fifo"]
    os.symlink(tmp_path / "fifo", tmp_path / "link")
    with pytest.raises(WriteTargetError, match=r"not a regular file \(a FIFO\)"):
        check_write_target(tmp_path / "link")
    check_write_target(tmp_path / "new")          # missing: fine
    (tmp_path / "old").write_text("x")
    check_write_target(tmp_path / "old")          # a regular file: replaced whole


def test_export_compile_and_figures_never_write_through_a_device(tiny_trained, tmp_path, capsys):
    """`alexnetc export RUN -o /dev/full`, as root, renamed a regular file over the device node and exited
    0. Every command that writes a file now refuses a target that is not a regular file (exit 2), and the
    node is still a device afterwards."""
    dev = tmp_path / "full"
    _device_node(dev)
    run = str(tiny_trained[2])
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for argv, target in ((["export", run, "-o", str(dev)], dev),
                         (["compile", "variants/mini", "-q", "--json", str(dev)], dev),
                         (["compile", "variants/mini", "-q", "--dot", str(fifo)], fifo),
                         (["filters", run, "-o", str(fifo)], fifo)):
        line = _one_error(argv, capsys, 2)
        assert "not a regular file" in line and str(target) in line, line
    assert stat.S_ISCHR(os.stat(dev).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert _one_error(["import", "torchvision-alexnet", str(dev), "-o", str(dev)], capsys, 2) == \
        f"-o {dev}: not a directory (the run directory to create)"
    assert _one_error(["train", "variants/mini", "--synthetic", "64", "--out", str(dev)], capsys, 2) == \
        f"--out {dev}: not a directory"
    assert stat.S_ISCHR(os.stat(dev).st_mode)


def test_read_only_and_full_disks_exit_1_with_a_plain_message(tiny_trained, tmp_path, capsys):
    """export and import exited 2 on a read-only target (the README promises 1, as train gives); a full
    disk during a checkpoint said "internal error: SafetensorError ..."."""
    spec, data, run = tiny_trained
    with _tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        for argv, target in ((["export", str(run), "-o", str(ro / "m.onnx")], ro / "m.onnx"),
                             (["compile", "variants/mini", "-q", "--json", str(ro / "g.json")], ro / "g.json"),
                             (["filters", str(run), "-o", str(ro / "f.png")], ro / "f.png")):
            assert _one_error(argv, capsys, 1) == f"{target}: cannot write: Read-only file system"
        line = _one_error(["train", spec, "--data", data, "--out", str(ro / "run"), "--no-progress", "--workers", "0",
                           "--epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1"], capsys, 1)
        assert line == f"{ro}/run: cannot create the run directory: Read-only file system"
    with _tmpfs(tmp_path / "full", "40k") as full:   # room for the metrics, not for the first checkpoint
        line = _one_error(["train", spec, "--data", data, "--out", str(full / "run"), "--no-progress", "--workers",
                           "0", "--epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1"], capsys, 1)
        assert line == f"no space left on device writing checkpoint {full}/run/checkpoints/ckpt-000001-epoch0001"
        assert [p.name for p in (full / "run" / "checkpoints").iterdir()] == []   # no half file left
        from alexnetc.runtime.training.run_log import run_log_files

        for p in [full / "run" / "metrics.jsonl", *run_log_files(str(full / "run"))]:   # metrics.csv, hparams, events
            os.unlink(p)
        (full / "big").write_bytes(b"\0" * (32 << 10))
        assert _one_error(["export", str(run), "-o", str(full / "m.onnx")], capsys, 1) == \
            f"no space left on device writing {full}/m.onnx"
        assert [p.name for p in full.iterdir()] == ["big", "run"]   # and no temporary file


def test_import_into_a_read_only_or_full_disk_exits_1(tmp_path, capsys):
    from safetensors.torch import save_file

    from .app.test_weights_import_resnet import _random_net

    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in _random_net("resnet18").state_dict().items()}, str(weights))
    with _tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert _one_error(["import", "torchvision-resnet18", str(weights), "-o", str(ro / "run")], capsys, 1) == \
            f"{ro}/run/checkpoints: cannot create checkpoint directory: Read-only file system"
    with _tmpfs(tmp_path / "full", "1m") as full:
        assert _one_error(["import", "torchvision-resnet18", str(weights), "-o", str(full / "run")], capsys, 1) == \
            f"no space left on device writing checkpoint {full}/run/checkpoints/ckpt-000001-imported"
        assert list((full / "run" / "checkpoints").iterdir()) == []
