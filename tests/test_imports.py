"""The import graph of `ladder` and `analysis`: no cycles, and `analysis` stays free of torch and
`ladder`. Read statically with `ast`, so imports inside functions (the lazy ones) count too."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ladder", "analysis")
ANALYSIS_NEVER = ("torch", "transformers", "accelerate", "ladder")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name an import statement of the file names, anywhere in it, resolved to
    the named module (``from a.b import c`` names ``a.b.c`` if that is a module, else ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (the innermost module each import names)."""
    files = module_files(root, packages)
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in imported_names(name, path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycles():
    graph = import_graph(ROOT)
    assert len(graph) > 50 and "analysis.observational.selection" in graph
    assert cycles(graph) == []


def test_analysis_never_imports_torch_or_ladder():
    files = module_files(ROOT, ("analysis",))
    bad = {name: sorted(m for m in imported_names(name, path)
                        if m.split(".")[0] in ANALYSIS_NEVER)
           for name, path in files.items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checks_see_cycles_lazy_imports_and_relative_imports(tmp_path):
    pkg = tmp_path / "ladder"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ladder.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")  # lazy, relative
    (pkg / "sub" / "c.py").write_text("import ladder.a\n")
    (pkg / "d.py").write_text("from ladder.a import name\nimport torch\n")
    graph = import_graph(tmp_path, ("ladder",))
    assert graph["ladder.d"] == {"ladder.a"}
    assert cycles(graph) == [["ladder.a", "ladder.sub.b", "ladder.sub.c"]]
    (pkg / "sub" / "c.py").write_text("import numpy\n")
    assert cycles(import_graph(tmp_path, ("ladder",))) == []


def test_command_options_import_no_fitting_code():
    """`ladder predict`/`backtest` build their options from the method config alone: parsing
    (and --help, and a bad argument's exit 2) does not pay for scipy, pandas or numpy."""
    import subprocess
    code = ("import argparse, sys; import ladder.cli.predict as p; p.add_arguments(argparse.ArgumentParser());"
            "heavy = [m for m in ('scipy', 'pandas', 'numpy', 'matplotlib') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
