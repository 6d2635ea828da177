"""The papers' studies (spaces/*.yaml): each validates and smoke-runs on generated class-per-folder trees, through
tune-run's ``main`` on the test session's Ray (the console script itself: test_readme)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import trainables
from search import load_spec
from tests.conftest import make_image_tree

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "spaces"


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    binary = make_image_tree(root / "coins", {"coin": 14, "other": 14}, size=40)
    casting = make_image_tree(root / "casting", {"def_front": 14, "ok_front": 12}, size=40, split="train")
    make_image_tree(casting, {"def_front": 6, "ok_front": 5}, size=40, split="test", seed=1)
    cars = make_image_tree(root / "cars", {f"model{i}": n for i, n in enumerate([30, 8, 12, 20, 6])}, size=40)
    cifar = make_image_tree(root / "cifar", {f"c{i}": 12 for i in range(10)}, size=32, split="train")
    make_image_tree(cifar, {f"c{i}": 3 for i in range(10)}, size=32, split="test", seed=1)
    return {
        "coins-cnn": binary,
        "coins-vit": binary,
        "coins-vit-pretrained": binary,
        "casting-freeze": casting,
        "cars-hyperband": cars,
        "data-efficiency": cifar,
    }


PRETRAINED = {"coins-vit-pretrained", "casting-freeze", "cars-hyperband"}


@pytest.mark.parametrize(
    "name", ["coins-cnn", "coins-vit", "coins-vit-pretrained", "casting-freeze", "cars-hyperband", "data-efficiency"]
)
def test_paper_spec_dry_runs(name, trees, tmp_path, cli):
    r = cli("tune-run", str(SPACES / f"{name}.yaml"), "--dry-run", "--set", f"data.root={trees[name]}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    grid = {"coins-cnn": 3**9, "coins-vit": 864, "casting-freeze": 22, "cars-hyperband": 6, "data-efficiency": 78}
    if name in grid:
        assert f"# grid points: {grid[name]};" in r.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_coins_threshold_is_searched_with_a_bce_head():
    spec = load_spec(SPACES / "coins-cnn.yaml", trainables)
    assert spec["train"]["loss"] == "bce" and spec["space"]["train.threshold"] == {"uniform": [0.1, 0.9]}
    assert spec["final"]["threshold"] is None  # final evaluation applies the searched train.threshold


def test_casting_grid_is_model_by_freezing_strategy():
    spec = load_spec(SPACES / "casting-freeze.yaml", trainables)
    (options,) = spec["space"]["family"].values()
    pretrained = [o for o in options if o["model.name"] != "luna"]
    assert len(pretrained) == 7 and all(o["model.freeze"] == {"grid": ["head_only", 0.333, "none"]} for o in pretrained)
    luna = next(o for o in options if o["model.name"] == "luna")
    assert luna["train.epochs"] == 50 and "model.freeze" not in luna


@pytest.mark.parametrize(
    "name", ["coins-cnn", "coins-vit", "coins-vit-pretrained", "casting-freeze", "cars-hyperband", "data-efficiency"]
)
def test_paper_spec_smoke_runs(name, trees, tmp_path, cli, ray_session):
    args = [
        str(SPACES / f"{name}.yaml"),
        "--smoke",
        "--set",
        f"data.root={trees[name]}",
        "--set",
        f"tracking.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    if name in PRETRAINED:  # no weights offline: the architecture from random weights, as the issue allows
        args += ["--set", "model.pretrained=false"]
        # One trial, not the smoke's two: both would train the same ImageNet-sized model (the smoke takes a family
        # grid's first option) and the second adds nothing the first did not run (cars-hyperband's second
        # ConvNeXt-B trial: 20 s of its 99 s alone). Every spec's smoke sizes are tested as written in
        # tests/test_smoke_memory.py.
        args += ["--set", "search.num_samples=1"]
    if name == "cars-hyperband":
        # No final training: this test reads only the study, and a timm model's final training, test evaluation and
        # model folder are coins-vit-pretrained's (ViT-B/16; its test reads them). ConvNeXt-B's took 36 of the 84 s.
        args += ["--set", "final.after_search=false"]
    r = cli("tune-run", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "runs" / f"{name}-smoke"
    study = json.loads((out / "study.json").read_text())
    assert study["status_counts"].get("completed", 0) >= 1, study["status_counts"]
    best = yaml.safe_load((out / "best.yaml").read_text())
    if name.startswith("coins"):
        assert best["train"]["loss"] == "bce" and 0.1 <= best["train"]["threshold"] <= 0.9
        metrics = json.loads((out / "final" / "0" / "metrics.json").read_text())
        # The searched threshold is the one the test predictions used.
        assert metrics["test"]["threshold"] == pytest.approx(best["train"]["threshold"])
        assert {"recall", "precision", "f1", "auc_roc"} <= set(metrics["test"])
        assert metrics["cost"]["macs_per_image"] > 0
    if name in ("coins-cnn", "coins-vit"):  # Grad-CAM for CNNs, token maps for ViTs
        r3 = cli("tune-eval", str(out / "final" / "0"), "--explain", "3", cwd=tmp_path)
        assert r3.returncode == 0, r3.stderr[-2000:]
        explain = out / "final" / "0" / "explain"
        assert len(list(explain.glob("*.png"))) == 3
        index = (explain / "index.csv").read_text()
        assert ("vit-tokens" if name == "coins-vit" else "last-conv") in index
    if name == "data-efficiency":
        r2 = cli("tune-compare", str(out), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
        assert r2.returncode == 0, r2.stderr[-2000:]
        report = (tmp_path / "cmp" / "report.md").read_text()
        assert "## Data efficiency" in report and "resnet18 (val_acc)" in report
        assert (tmp_path / "cmp" / "fraction_curve.png").stat().st_size > 1000
