"""The README's commands work in the order it gives them (issue 26), so the README cannot drift from
what works: every command of its ```sh blocks and every ```python block, in a fresh working directory,
with tiny budgets (a couple of batches per epoch, one validation batch, 32 images a batch). A command
the test cannot run here (a GPU, ImageNet, downloaded weights, the user's photos) is skipped by a rule
below that says why; a command no rule covers fails the test, so a new README line is either run or
explicitly excused. Needs Fashion-MNIST (Debian's dataset-fashion-mnist, or $ALEXNETC_DATA); skipped
with the reason when it is absent. Nothing is downloaded.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_DATA = "/usr/share/datasets/fashion-mnist"

# Environment setup the test already stands in (it runs inside the installed package).
SETUP = ("apt-get ", "python3 -m venv ", ". .venv/bin/activate", "pip install ")
# Commands this machine cannot run, and why (each rule must still match a README line).
SKIP = {
    r"python -m pytest": "the test suite itself",
    r"benchmarks/": "a GPU benchmark",
    r"--synthetic 2560": "the full AlexNet at batch 128: a GPU job",
    r"/path/to/imagenet|/data/imagenet": "needs ImageNet",
    r"--nproc_per_node=N|--nnodes": "needs N GPUs or several machines",
    r"\.pth\b": "needs torchvision's published weights (import is tested in tests/runtime/app/test_weights_import*.py)",
    r"^tensorboard --logdir": "TensorBoard's own server (the event files are read back with tensorboard's reader "
                              "in tests/runtime/training/test_run_log.py)",
    r"/data/flowers": "needs your photos and torchvision's weights (tested on random weights in "
                      "tests/runtime/training/test_warm_start.py)",
}
# Tiny budgets appended to each command (a later option wins over the README's).
TRAIN = ["--limit-train-batches", "2", "--limit-val-batches", "1", "--batch", "16", "--workers", "0", "--no-progress"]
BUDGET = {
    "train": TRAIN,
    "compare": TRAIN,
    "ablate": TRAIN + ["--epochs", "1", "--seeds", "2"],
    "eval": ["--limit-batches", "2", "--batch", "32", "--workers", "0"],
    "neighbors": ["--limit", "64", "--batch", "32", "--workers", "0"],
    "profile": ["--batch", "8", "--iterations", "1", "--warmup", "0"],
}


def readme_steps() -> list[tuple[str, str]]:
    """("sh", one command) for every command of the ```sh blocks (continuation lines joined, comments
    and `&&` chains split off), ("python", a block) for every ```python block; in README order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    steps = []
    for lang, body in re.findall(r"```(sh|python)\n(.*?)```", text, flags=re.S):
        if lang == "python":
            steps.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            steps.extend(("sh", part.strip()) for part in line.split("&&") if part.strip())
    return steps


def _plan(command: str) -> tuple[str, str]:
    """("setup" | "skip" | "run", why or what)."""
    if command.startswith(SETUP):
        return "setup", "environment setup"
    for pattern, why in SKIP.items():
        if re.search(pattern, command):
            return "skip", why
    if command.startswith(("alexnetc ", "torchrun ")) or command == "alexnetc":
        return "run", command
    return "unknown", command


def test_every_readme_command_is_run_or_excused():
    """The rules cover the README exactly: no command left unclassified, no rule that matches nothing."""
    steps = [c for kind, c in readme_steps() if kind == "sh"]
    unknown = [c for c in steps if _plan(c)[0] == "unknown"]
    assert not unknown, f"README commands neither run by tests/test_readme_commands.py nor excused: {unknown}"
    unused = [p for p in SKIP if not any(re.search(p, c) for c in steps)]
    assert not unused, f"skip rules that match no README command (remove them): {unused}"
    assert sum(_plan(c)[0] == "run" for c in steps) >= 20


def _with_budget(argv: list[str]) -> list[str]:
    extra = list(BUDGET.get(argv[0], ()))
    if argv[0] == "profile" and "--predict" in argv:
        extra = []
    if argv[0] in ("train", "compare") and "--epochs" not in argv:
        extra += ["--epochs", "1"]
    return argv + extra


def _images(data: str, here: Path) -> None:
    """a.png (a sneaker) and b.png (a bag) from Fashion-MNIST's test split: the README's own images."""
    from PIL import Image

    from alexnetc.runtime.data.datasets import IdxDataset

    test = IdxDataset(data, "test")
    for name, label in (("a.png", "Sneaker"), ("b.png", "Bag")):
        i = int(np.flatnonzero(test.labels == test.classes.index(label))[0])
        Image.fromarray(test.images[i]).save(here / name)


def _torchrun(command: str, here: Path) -> None:
    from .runtime.execution.test_distributed import free_port

    argv = shlex.split(command)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--master_port={free_port()}", *argv[1:]]
    r = subprocess.run(cmd + TRAIN, cwd=here, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def _run_readme(tmp_path: Path, monkeypatch, capsys, fast_only: bool) -> list[str]:
    """Run the README's steps in order in `tmp_path` (the `fast_only` ones: no training, no data); the
    commands run."""
    from alexnetc.runtime.app.cli import main
    from alexnetc.runtime.data.datasets import DatasetError, find_default_dataset

    data = None
    if not fast_only:
        try:
            data = find_default_dataset()
        except DatasetError as exc:
            pytest.skip(str(exc))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALEXNETC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    if data is not None:
        _images(data, tmp_path)
    ran = []
    for kind, step in readme_steps():
        if kind == "python":
            exec(compile(step, "README.md (python block)", "exec"), {"__name__": "readme"})
            ran.append("python block")
            continue
        if _plan(step)[0] != "run" or (fast_only and not _fast(step)):
            continue
        if data is not None:
            step = step.replace(DEBIAN_DATA, data)
        if step.startswith("torchrun "):
            _torchrun(step, tmp_path)
        else:
            status = main(_with_budget(shlex.split(step)[1:]))
            out, err = capsys.readouterr()
            assert status == 0, f"{step}\n{out[-2000:]}\n{err[-2000:]}"
            if step == "alexnetc train":
                assert "run directory: runs/alexnet-mini/version_0 (a new one for this run" in out, out
        ran.append(step)
    return ran


def _fast(command: str) -> bool:
    """A command that neither trains nor reads a dataset (compile, specs, profile --predict, place)."""
    argv = shlex.split(command)
    return argv[0] == "alexnetc" and len(argv) > 1 and (
        argv[1] in ("specs", "compile", "place") or (argv[1] == "profile" and "--predict" in argv))


def test_the_readme_commands_that_need_no_data_work_in_sequence(tmp_path, monkeypatch, capsys):
    """The default suite's share (a few seconds): the compile, profile --predict and place commands and
    the Python blocks (the symbolic API, and three AdamW steps of the mini net as a torch.nn.Module
    saved as a run)."""
    ran = _run_readme(tmp_path, monkeypatch, capsys, fast_only=True)
    assert len(ran) >= 8 and (tmp_path / "runs" / "my-loop" / "checkpoints").is_dir()


@pytest.mark.slow
def test_the_readme_commands_work_in_sequence(tmp_path, monkeypatch, capsys):
    """Every command, in README order, exits 0 (about a minute on 2 shared cores: slow); the runs never
    collide (each `alexnetc train` without --out gets its own runs/alexnet-mini/version_N, --resume
    continues the newest; the torchrun line takes version_3)."""
    ran = _run_readme(tmp_path, monkeypatch, capsys, fast_only=False)
    versions = sorted(p.name for p in (tmp_path / "runs" / "alexnet-mini").iterdir())
    assert versions == ["version_0", "version_1", "version_2", "version_3"], versions
    assert len(ran) >= 20
