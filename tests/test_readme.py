"""The README's two fresh-machine commands stay true: CI runs exactly the README's install and test
steps, and the main job's command names what the package really provides."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_install_and_test_commands():
    test_cmd = next(b for b in _blocks() if "pytest" in b).strip()
    steps = [s.strip() for s in test_cmd.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate"
    ci = (ROOT / ".ci" / "run").read_text()
    for step in steps[2:]:  # the install and the test run, verbatim
        assert re.search(rf"^{re.escape(step)}$", ci, flags=re.M), f"CI does not run: {step}"


def test_main_job_command_trains_the_embedded_default():
    main = _blocks()[0].strip()
    assert main.endswith("alexnetc train")
    assert "apt-get install -y dataset-fashion-mnist" in main and "pip install torch==2.13.0 -e ." in main
    from alexnetc.runtime.app.specs import resolve_spec_path

    assert Path(resolve_spec_path(None)).is_file()
