"""The house's rules, read from the code's own imports (every ``import`` counts, also one inside
a function): no import circle, subpackages import downward only, Ray and TensorFlow only in
the modules that must, and lazily there.

The floors, bottom up: ``core`` (errors, inputs, the experiment's layout, the gate, processes,
study URLs) < ``data`` < ``odapi`` < ``search`` < ``run`` < ``report`` < ``cli``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sweep"
FLOORS = ("core", "data", "odapi", "search", "run", "report", "cli")
# The Ray backend: the trainable and Tuner, the scheduler factory, what Ray sees of a node.
RAY_MODULES = {"sweep.run.tune_backend", "sweep.run.schedulers", "sweep.run.ray_node"}
# TensorFlow (and the OD API's TF code, beyond its protobuf messages): the jobs and export.
TF_MODULES = {"sweep.odapi.worker", "sweep.odapi.compat", "sweep.odapi.detections",
              "sweep.odapi.tflite", "sweep.odapi.exported_eval",
              "sweep.report.export"}
# The experiment trackers (optional extras): MLflow and W&B clients.
TRACKER_MODULES = {"sweep.run.trackers"}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_imports(root: Path = PACKAGE) -> dict[str, list[tuple[str, bool]]]:
    """``{module: [(imported name, at module level?)]}`` for every module under ``root``."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(root.rglob("*.py")):
        found: list[tuple[str, bool]] = []

        def visit(node: ast.AST, top: bool, found: list[tuple[str, bool]] = found) -> None:
            for child in ast.iter_child_nodes(node):
                inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                if isinstance(child, ast.Import):
                    found.extend((a.name, inner) for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                    found.append((child.module, inner))
                    found.extend((f"{child.module}.{a.name}", inner) for a in child.names)
                visit(child, inner, found)

        visit(ast.parse(path.read_text()), True)
        out[module_name(path, root)] = found
    return out


def internal_graph(imports: dict[str, list[tuple[str, bool]]]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name resolves to its longest module)."""
    graph: dict[str, set[str]] = {m: set() for m in imports}
    for mod, names in imports.items():
        for name, _ in names:
            target = name
            while target and target not in imports:
                target = target.rpartition(".")[0]
            if target and target != mod and target != "sweep" and not mod.startswith(target + "."):
                graph[mod].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as the path that closes it (Tarjan's strongly connected sets)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def floor(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return FLOORS.index(part) if part in FLOORS else -1


def upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if floor(a) >= 0 and floor(b) > floor(a)]


def uses(imports: dict[str, list[tuple[str, bool]]], lib: str, *, skip: tuple[str, ...] = ()
         ) -> dict[str, bool]:
    """Modules importing ``lib`` -> whether any such import is at module level."""
    out: dict[str, bool] = {}
    for mod, names in imports.items():
        for name, top in names:
            if (name == lib or name.startswith(lib + ".")) and not name.startswith(skip):
                out[mod] = out.get(mod, False) or top
    return out


IMPORTS = read_imports()
GRAPH = internal_graph(IMPORTS)


def test_no_import_circle_anywhere_in_the_package() -> None:
    assert circles(GRAPH) == []


def test_subpackages_import_downward_only() -> None:
    assert upward(GRAPH) == []
    assert set(FLOORS[:-1]) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_ray_is_imported_only_by_the_backend_and_lazily() -> None:
    ray = uses(IMPORTS, "ray")
    assert set(ray) <= RAY_MODULES, f"Ray outside the backend: {sorted(set(ray) - RAY_MODULES)}"
    assert not any(ray.values()), "Ray imported at module level"


def test_tensorflow_is_imported_only_by_the_jobs_and_export_and_lazily() -> None:
    tf = uses(IMPORTS, "tensorflow")
    odapi = uses(IMPORTS, "object_detection", skip=("object_detection.protos",))
    assert set(tf) | set(odapi) <= TF_MODULES, sorted((set(tf) | set(odapi)) - TF_MODULES)
    assert not any(tf.values()) and not any(odapi.values()), "TensorFlow at module level"


def test_mlflow_and_wandb_are_imported_only_by_the_trackers_and_lazily() -> None:
    found = {**uses(IMPORTS, "mlflow"), **uses(IMPORTS, "wandb")}
    assert set(found) <= TRACKER_MODULES, sorted(set(found) - TRACKER_MODULES)
    assert not any(found.values()), "a tracker imported at module level"


def test_the_command_line_starts_without_ray_or_tensorflow() -> None:
    code = ("import sys, sweep.cli\n"
            "sweep.cli.build_parser()\n"
            "print(sorted(m for m in ('ray', 'tensorflow', 'mlflow', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"


# --- the checks themselves can fail -------------------------------------------------------------

def test_the_checks_catch_a_circle_an_upward_import_and_a_stray_ray(tmp_path: Path) -> None:
    pkg = tmp_path / "sweep"
    for sub in ("core", "run"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from sweep.run import b\n")
    (pkg / "run" / "b.py").write_text("def f():\n    from sweep.core import a\n    import ray\n")
    imports = read_imports(pkg)
    graph = internal_graph(imports)
    assert circles(graph) == [["sweep.core.a", "sweep.run.b"]]
    assert "sweep.core.a -> sweep.run.b" in upward(graph)
    assert uses(imports, "ray") == {"sweep.run.b": False}


@pytest.mark.parametrize("mod", sorted(RAY_MODULES | TF_MODULES | TRACKER_MODULES))
def test_every_named_module_exists(mod: str) -> None:
    assert mod in IMPORTS
