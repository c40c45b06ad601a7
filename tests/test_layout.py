"""The package layout: one subpackage per workflow stage, imports running one way, no cycles.

Every import of every module (top-level and inside functions) is read with ``ast``, resolved to a
module of the package, and checked against the allowed direction between layers below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "pathologies"

# Shared plumbing: modules at the package's top level that every stage may import.
PLUMBING = {"pathologies", "pathologies.errors", "pathologies.io", "pathologies.cliargs", "pathologies.config",
            "pathologies.device", "pathologies.config_docs", "pathologies.rate_table", "pathologies.analysis",
            "pathologies.plots"}
# The layer of each subpackage and what it may import besides plumbing (the workflow's direction:
# data -> models -> training -> sis -> overinterp; ddd reads training's dumps).
ALLOWED = {
    "data": set(),
    "models": {"data"},
    "training": {"data", "models"},
    "sis": {"data", "models"},
    "overinterp": {"data", "models", "training", "sis"},
    "ddd": {"data", "models", "training"},
    "bench": {"data", "models", "training", "sis", "ddd", "overinterp"},
}
# Experiment expansion composes the stages' grids in one place, above every stage.
COMPOSITION = {"pathologies.experiments": {"data", "ddd", "models", "overinterp", "sis"},  # models: weights names
               # the docs table of every stage's declared analyses
               "pathologies.outputs_doc": {"ddd", "overinterp", "sis"},
               # the bill of a config: expanded config, SIS jobs (calibrated and ensemble SIS: overinterp),
               # dataset sizes, model FLOPs, the training throughput table
               "pathologies.cost": {"data", "models", "sis", "overinterp", "training"},
               # training jobs' runtime, time budget and attempts, from the bill (read by the train rule)
               "pathologies.jobplan": {"sis", "training"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.c`` for ``a.b.c.func``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
        else:
            continue
        for target in targets:
            module = resolve(target, known)
            if module is not None and module != name and target.startswith("pathologies"):
                found.add(module)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_is_plumbing_a_stage_or_the_composition():
    for name in modules():
        assert name in PLUMBING or name in COMPOSITION or stage_of(name) in ALLOWED, (
            f"{name} belongs to no stage; put it in a stage folder or list it as plumbing here")


def test_no_import_cycle():
    assert find_cycle(graph()) is None


def test_imports_run_one_way():
    bad = []
    for name, targets in graph().items():
        for target in targets:
            if target in PLUMBING:
                continue
            if name in PLUMBING:
                bad.append(f"plumbing {name} imports {target}")
            elif name in COMPOSITION:  # may build on another composition module (the cycle test still applies)
                if stage_of(target) not in COMPOSITION[name] and target not in COMPOSITION:
                    bad.append(f"{name} imports {target}")
            elif stage_of(target) is None and target not in COMPOSITION:
                bad.append(f"{name} imports unknown {target}")
            elif stage_of(target) != stage_of(name) and stage_of(target) not in ALLOWED[stage_of(name)]:
                bad.append(f"{stage_of(name)} module {name} imports {target} (stage {stage_of(target)})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_cycle_finder(edges, cycle):
    assert find_cycle(edges) == cycle


def test_import_reader_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pathologies"
    (pkg / "sis").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "sis" / "__init__.py").write_text("")
    (pkg / "sis" / "engine.py").write_text("def f():\n    from ..errors import UserError\n")
    known = {"pathologies", "pathologies.errors", "pathologies.sis", "pathologies.sis.engine"}
    assert imports_of("pathologies.sis.engine", pkg / "sis" / "engine.py", known) == {"pathologies.errors"}
