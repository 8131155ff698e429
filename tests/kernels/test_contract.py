"""The kernels' file layout and signatures against docs/kernel-interface.md, and the oracle's independence.

Oracle: the document's per-family tables (a `### family:` heading, then one row per entry whose first
cell is the entry's signature), which must list exactly the op registry's entry points. Each entry
must exist in `kernels/<family>.py` and, except for the data-movement family (one implementation for
both backends), in `kernels/reference/<family>.py`, with exactly the documented parameters (names,
order, keyword-only marker, defaults). And the Triton side and the reference must not import each
other: the reference is the Triton kernels' test oracle.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alexnetc.compiler.ops import OPS
from alexnetc.kernels.backend import entry_points

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "kernel-interface.md"
KERNELS = ROOT / "kernels"
# Families whose entries have one implementation for both backends (no reference copy), from the registry.
ALL_BACKENDS_FAMILIES = {op.family for op in OPS.values() if op.kernel is not None and op.kernel.all_backends}


def _documented() -> dict[str, dict[str, str]]:
    """{family: {entry: "parameter list as written"}} from the document's tables."""
    out: dict[str, dict[str, str]] = {}
    family = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        head = re.match(r"^### (\w+):", line)
        if head:
            family = head.group(1)
            out[family] = {}
            continue
        row = re.match(r"^\| `(\w+)\((.*?)\)` \|", line)
        if row:
            assert family is not None, f"entry row outside a family section: {line}"
            out[family][row.group(1)] = row.group(2)
    return out


DOCUMENTED = _documented()
ENTRIES = [(fam, entry, params) for fam, entries in DOCUMENTED.items() for entry, params in entries.items()]


def _params(fn) -> str:
    """A signature's parameter list as the document writes it: no annotations, `*` before keyword-only."""
    parts, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(parts)


def test_document_lists_every_family_and_entry_point():
    """oracle: the op registry's kernel entry points and their families (one file each)."""
    eps = entry_points()
    assert set(DOCUMENTED) == {ep.family for ep in eps.values()}
    assert {entry: family for family, entries in DOCUMENTED.items() for entry in entries} == \
        {entry: ep.family for entry, ep in eps.items()}


@pytest.mark.parametrize("family,entry,params", ENTRIES, ids=[f"{f}.{e}" for f, e, _ in ENTRIES])
def test_entry_exists_with_the_documented_signature(family, entry, params):
    """oracle: the document's signature, for the Triton module and the reference module of the family."""
    triton_side = importlib.import_module(f"alexnetc.kernels.{family}")
    assert _params(getattr(triton_side, entry)) == params
    if family in ALL_BACKENDS_FAMILIES:
        assert not (KERNELS / "reference" / f"{family}.py").exists()
        return
    reference = importlib.import_module(f"alexnetc.kernels.reference.{family}")
    assert _params(getattr(reference, entry)) == params


def _imports(path: Path) -> list[str]:
    """Every module an import statement of `path` names, resolved relative to alexnetc.kernels."""
    pkg = ["alexnetc", "kernels"] + (["reference"] if path.parent.name == "reference" else [])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
    return names


def test_triton_modules_do_not_import_the_reference():
    """oracle: the rule that kernels never import their test oracle (backend.py, the dispatcher, names
    both by string and is the one exception)."""
    for path in sorted(KERNELS.glob("*.py")):
        if path.name == "backend.py":
            continue
        bad = [m for m in _imports(path) if m.startswith("alexnetc.kernels.reference")]
        assert not bad, f"{path.name} imports {bad}"


def test_reference_imports_only_itself_and_shared():
    """oracle: the reference's allowed dependencies (torch, numpy (a dependency of ours) and the
    standard library's os and thread pool (dropout's CPU hash, in pieces on threads), its own modules,
    kernels/shared.py, and the op registry's activation descriptors: which activations exist, by name
    (their eager rules, the reference's own oracle, it must not call); `native.py`, which builds and
    loads the C kernels, also the standard library's compiler-driving and ctypes modules."""
    allowed = ("alexnetc.kernels.reference", "alexnetc.kernels.shared", "torch", "numpy", "__future__", "os",
               "concurrent.futures", "alexnetc.compiler.ops.activation")
    loader = ("ctypes", "hashlib", "shutil", "subprocess", "sys", "tempfile", "warnings", "pathlib")
    for path in sorted((KERNELS / "reference").glob("*.py")):
        ok = allowed + loader if path.name == "native.py" else allowed
        bad = [m for m in _imports(path) if not m.startswith(ok)]
        assert not bad, f"reference/{path.name} imports {bad}"


def test_every_kernel_module_says_its_job():
    """oracle: the layout rule (a module docstring on every file of kernels/ and kernels/reference/)."""
    for path in sorted(KERNELS.glob("*.py")) + sorted((KERNELS / "reference").glob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path} has no docstring"


def test_reference_runs_without_triton():
    """oracle: sys.modules after importing every reference family (the CPU backend needs no triton)."""
    fams = ", ".join(f"alexnetc.kernels.reference.{f}" for f in DOCUMENTED if f not in ALL_BACKENDS_FAMILIES)
    code = f"import sys, {fams}, alexnetc.kernels.tensor; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
