"""The code's shape, checked: each op attribute named in one source file, no import circles in the
runtime, kernels that never import their test oracle, a compiler that imports without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from alexnetc.compiler.ops import OPS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "kernels", "runtime")

# String literals equal to an attribute name that mean something else there (file, word): why.
OTHER_MEANINGS = {
    ("compiler/graph.py", "device"): "the IR node's field",
    ("compiler/report.py", "device"): "the IR node's field",
    ("compiler/pipeline.py", "channels"): "the spec's input section",
    ("compiler/lower.py", "channels"): "the spec's input section",
    ("compiler/schema/build.py", "channels"): "the spec's input section",
    ("runtime/data/augment.py", "channels"): "a dataset's channel count",
    ("compiler/ops/batchnorm.py", "bias"): "PyTorch's state-dict suffix of batch norm's shift",
    ("runtime/data/augment.py", "size"): "a dataset's size",
    ("runtime/app/commands.py", "shape"): "numpy's attribute",
    ("runtime/app/figure_commands.py", "shape"): "numpy's attribute",
    ("runtime/app/figures.py", "shape"): "numpy's attribute",
    ("runtime/app/figure_commands.py", "filters"): "the subcommand's name",
    ("compiler/passes/infer_shape.py", "shape"): "a variable's given shape (sym.var(shape=...))",
    ("compiler/symbol.py", "shape"): "a variable's given shape (sym.var(shape=...))",
    ("compiler/schema/build.py", "momentum"): "SGD's momentum (the training section)",
    ("runtime/training/options.py", "momentum"): "SGD's momentum (the training section)",
    ("runtime/execution/optim.py", "momentum"): "SGD's momentum (the training section's default)",
    ("compiler/schema/build.py", "eps"): "AdamW's epsilon (the training section's optimizer)",
    ("runtime/execution/optim.py", "eps"): "AdamW's epsilon (the training section's optimizer)",
    ("compiler/cost/devices.py", "device"): "a named GPU of the device table",
    ("runtime/profile/report.py", "device"): "a profile row's device (JSON key)",
    ("runtime/profile/predict_report.py", "device"): "the predicted GPU and a row's device (JSON keys)",
    ("runtime/profile/trace.py", "device"): "a trace event's device (argument)",
    ("runtime/profile/peak.py", "size"): "the peak GEMM's size (cache key)",
    ("kernels/aot/launches.py", "kernel"): "a launch's Triton kernel name (JSON key)",
    ("kernels/aot/matrix.py", "kernel"): "a compile result's Triton kernel name (JSON key)",
    ("kernels/aot/accepted.py", "kernel"): "a compile result's Triton kernel name (JSON key)",
    ("runtime/profile/kernels_report.py", "kernel"): "a row's Triton kernel name (JSON key)",
    ("runtime/profile/kernels_report.py", "device"): "a row's device (JSON key)",
}


def _sources():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def test_each_op_attribute_name_is_written_in_one_source_file():
    declared: dict[str, set[str]] = defaultdict(set)   # attribute name -> files declaring it
    for op in OPS.values():
        for a in op.attrs:
            declared[a.name].add(None)
    written: dict[str, set[str]] = defaultdict(set)
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in declared:
                if (rel, node.value) not in OTHER_MEANINGS:
                    written[node.value].add(rel)
    spread = {name: sorted(files) for name, files in written.items() if len(files) != 1}
    assert spread == {}, "attribute names written out in several files (use the descriptor's Attr.name)"
    assert set(written) == set(declared), f"never written: {sorted(set(declared) - set(written))}"


def _imports(rel: str, tree: ast.AST) -> set[str]:
    """Modules (dotted, repository-relative) a module imports, lazily or not."""
    here = rel[:-3].replace("/", ".").removesuffix(".__init__").split(".")
    pkg = here if rel.endswith("__init__.py") else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod + "." + a.name for a in node.names] if not node.module else [mod]
            out.update(names)
    return out


def test_no_import_circles_in_the_runtime():
    mods = {rel[:-3].replace("/", ".").removesuffix(".__init__"): tree
            for rel, tree in _sources() if rel.startswith("runtime/")}
    rels = {rel[:-3].replace("/", ".").removesuffix(".__init__"): rel for rel, _ in _sources()}
    graph = {m: {i for i in _imports(rels[m], t) if i in mods and i != m and not m.startswith(i + ".")}
             for m, t in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_kernels_do_not_import_their_test_oracle():
    for rel, tree in _sources():
        if rel.startswith("kernels/") and not rel.startswith("kernels/reference/") and rel != "kernels/backend.py":
            assert not any("reference" in i for i in _imports(rel, tree)), rel


def test_the_compiler_imports_without_torch_or_triton():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['triton'] = None\n"
            "import alexnetc.compiler, alexnetc.compiler.ops, alexnetc.compiler.report\n"
            "from alexnetc.compiler import compile_spec\n"
            "compile_spec('specs/alexnet.yaml', batch=2).training()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


BASES = {"OpDef": "registry.py", "WeightedLayer": "weighted.py"}   # descriptor base classes


def _opdef_methods() -> set[str]:
    out: set[str] = set()
    for cls, file in BASES.items():
        tree = ast.parse((ROOT / "compiler" / "ops" / file).read_text(encoding="utf-8"))
        out |= {f.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == cls
                for f in node.body if isinstance(f, ast.FunctionDef)}
    return out


def test_public_functions_of_the_compiler_and_runtime_are_typed():
    """Every public function and method (not starting with '_') has annotated parameters and return;
    overrides of the descriptor base classes' methods inherit theirs."""
    inherited = _opdef_methods()
    missing = []
    for rel, tree in _sources():
        if rel.startswith("kernels/"):
            continue

        def check(fn: ast.FunctionDef, cls: str | None, rel: str = rel) -> None:
            if fn.name.startswith("_") and fn.name != "__init__":
                return
            if cls is not None and cls not in BASES and fn.name in inherited:
                return
            a = fn.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs
                     if x.annotation is None and x.arg not in ("self", "cls")]
            names += [f"*{x.arg}" for x in (a.vararg, a.kwarg) if x is not None and x.annotation is None]
            if fn.returns is None and fn.name != "__init__":
                names.append("return")
            if names:
                missing.append(f"{rel}:{fn.lineno} {fn.name}: {', '.join(names)}")

        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                check(node, None)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef):
                        check(fn, node.name)
    assert missing == []


def test_every_package_is_installed():
    """Each folder of compiler/, kernels/, runtime/ and specs/ with an __init__.py is a package listed in
    pyproject.toml (kernels/aot among them): one left out imports from a checkout but not once installed."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {"alexnetc." + init.parent.relative_to(ROOT).as_posix().replace("/", ".")
             for pkg in (*PACKAGES, "specs") for init in (ROOT / pkg).rglob("__init__.py")}
    assert "alexnetc.kernels.aot" in found
    assert found - listed == set()
