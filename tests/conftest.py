"""Shared test setup: small deterministic torch on the CPU, and paths to the shipped specs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


@pytest.fixture
def specs_dir() -> Path:
    return SPECS


def pytest_configure(config):
    os.environ.setdefault("ALEXNETC_CACHE", str(ROOT / ".pytest_cache" / "alexnetc"))
