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


def test_search_names_the_trial_side_only_in_the_composition_root():
    """search/ imports no trial-side module: everything it needs comes through TrialSide."""
    offenders = []
    for path in sorted((REPO / "search").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "trainables" or n.startswith("trainables.") for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert len(offenders) == 1 and offenders[0].startswith("cli.py:"), offenders


def _search_imports(name: str) -> set[str]:
    tree = ast.parse((REPO / "search" / f"{name}.py").read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}


def test_no_import_cycle_between_space_and_spec():
    """_space and _spec used to import each other; both now build on _schema, which imports neither."""
    assert "_spec" not in _search_imports("_space")
    assert _search_imports("_schema") == set()


def test_metric_names_come_from_the_trial_side():
    spec = resolve({**SPEC, "experiment": {"name": "c", "metric": "val_loss"}}, trainables)
    assert spec["experiment"]["mode"] == "min"  # the metric's better direction is the default
    with pytest.raises(SpecError, match=r"experiment.metric: 'val_los' is not reported by trials; allowed: "
                                        r"val_acc, val_loss, train_acc, train_loss, val_f1_macro, val_mcc, "
                                        r"val_balanced_acc, val_auc \(did you mean 'val_loss'\?\)"):
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
