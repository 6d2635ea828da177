"""The boundary between search/ (orchestration) and trainables/ (one trial): one written contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trainables
from search import SpecError, resolve
from search._contract import TrialSide

REPO = Path(__file__).resolve().parents[1]
SPEC = {"experiment": {"name": "c"}, "data": {"dataset": "digits"}, "model": {"name": "cnn"}}


def test_trainables_implements_the_contract():
    assert isinstance(trainables, TrialSide)
    names = [n for n in vars(TrialSide) if not n.startswith("_")] + list(TrialSide.__annotations__)
    assert len(names) >= 14 and not [n for n in names if not hasattr(trainables, n)]


def test_the_contracts_functions_stay_functions_once_every_module_is_loaded():
    """Importing a submodule binds its name on the package: a module named like one of the face's functions
    (explain.py beside trainables.explain) replaced that function for the rest of the process."""
    import importlib
    import pkgutil
    import types

    for m in pkgutil.walk_packages(trainables.__path__, "trainables."):
        importlib.import_module(m.name)
    names = [n for n in vars(TrialSide) if not n.startswith("_")] + list(trainables.__all__)
    assert [n for n in names if isinstance(getattr(trainables, n), types.ModuleType)] == []


PACKAGES = ("search", "trainables")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in ``path`` of a module of ours, lazy ones inside functions included:
    ``from .x import y`` names ``x``, or ``x.y`` where ``y`` is a module itself."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for a in node.names:
                sub = f"{module}.{a.name}"
                is_module = (
                    any((REPO / Path(*sub.split("."))).with_suffix(s).exists() for s in (".py",))
                    or (REPO / Path(*sub.split(".")) / "__init__.py").exists()
                )
                found.append((sub if is_module else module, node.lineno))
    return [(m, line) for m, line in found if m.split(".")[0] in PACKAGES]


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): {m for m, _ in _imports(p) if m in modules and m != _module_name(p)} for p in files}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a list of its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_anywhere_in_search_or_trainables():
    """The whole import graph of both packages, lazy imports inside functions included (package __init__
    files count by what they import themselves)."""
    graph = _graph()
    assert len(graph) > 50 and "search.run._runner" in graph
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_search_names_the_trial_side_only_in_the_composition_root():
    """No search/ module but cli.py (the composition root) imports trainables: everything else it needs
    comes through TrialSide."""
    offenders = [
        f"{p.relative_to(REPO)}:{line}"
        for p in sorted((REPO / "search").rglob("*.py"))
        for m, line in _imports(p)
        if m.split(".")[0] == "trainables"
    ]
    assert len(offenders) == 1 and offenders[0].startswith("search/cli.py:"), offenders


def test_no_module_imports_another_modules_private_names():
    """``from m import _x`` only within one module's own package face: a private name stays in its module."""
    offenders = []
    for p in [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                offenders += [
                    f"{p.relative_to(REPO)}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__") and not _is_module(p, node, a.name)
                ]
    assert offenders == [], offenders


def _is_module(path: Path, node: ast.ImportFrom, name: str) -> bool:
    """Whether ``from X import name`` in ``path`` imports a module (a private module is fine to import)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
    target = REPO / Path(*[*base, *((node.module or "").split(".") if node.module else []), name])
    return target.with_suffix(".py").exists() or (target / "__init__.py").exists()


def test_metric_names_come_from_the_trial_side():
    spec = resolve({**SPEC, "experiment": {"name": "c", "metric": "val_loss"}}, trainables)
    assert spec["experiment"]["mode"] == "min"  # the metric's better direction is the default
    with pytest.raises(
        SpecError,
        match=r"experiment.metric: 'val_los' is not reported by trials; allowed: "
        r"val_acc, val_loss, train_acc, train_loss, val_f1_macro, val_mcc, "
        r"val_balanced_acc, val_auc, train_seconds, gpu_hours \(did you mean 'val_loss'\?\)",
    ):
        resolve({**SPEC, "experiment": {"name": "c", "metric": "val_los"}}, trainables)
    with pytest.raises(SpecError, match="val_loss is better when lower: mode must be min, got max"):
        resolve({**SPEC, "experiment": {"name": "c", "metric": "val_loss", "mode": "max"}}, trainables)


def test_a_new_model_family_starts_a_fresh_model_section():
    """One rule (trainables.apply_config) for trials, branch validation and best.yaml."""
    spec = resolve({**SPEC, "model": {"name": "vit", "patch_size": 2, "freeze": "head_only"}}, trainables)
    out = trainables.apply_config(spec, {"model.name": "cnn", "model.conv1": 8.0, "family": "cnn"})
    assert out["model"] == {"freeze": "head_only", "name": "cnn", "conv1": 8}  # int key stays int
    raw = trainables.apply_config({"data": {"dataset": "digits"}}, {"data.augment.hflip": 1})
    assert raw["data"]["augment"] == {"hflip": 1.0}  # a raw spec may leave sections out
