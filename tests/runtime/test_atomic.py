"""replacing(): the new file appears whole on success; on failure the old one stays and no temp is left."""
from __future__ import annotations

import os

import pytest

from alexnetc.runtime.atomic import replacing


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
