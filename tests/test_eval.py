"""``tune-eval MODEL --set data.root=DIR``: new labelled images re-check a saved model, without its training data."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trainables
from search import resolve
from tests.conftest import make_image_tree
from trainables.final import train_final

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def console(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A console script as installed beside this interpreter, run as a user would."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(Path(sys.executable).parent / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_cifar10_batches(folder: Path, per_batch: int = 20) -> Path:
    """A tiny copy of the CIFAR-10 python layout torchvision downloads (random pixels)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                    "labels": [i % 10 for i in range(per_batch)],
                },
                f,
            )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10}, f)
    return folder


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory) -> Path:
    """A saved CIFAR-10 final model folder (one epoch of a tiny CNN; its training data then removed)."""
    tmp = tmp_path_factory.mktemp("model")
    spec = resolve(
        {
            "experiment": {"name": "c"},
            "data": {
                "dataset": "cifar10",
                "root": str(write_cifar10_batches(tmp / "cifar-10-batches-py")),
                "download": False,
            },
            "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
            "train": {"epochs": 1, "batch_size": 32, "device": "cpu"},
            "final": {"bootstrap": 20, "timing_s": 0.2},
        },
        trainables,
    )
    train_final(spec, trainables.prepare(spec), 0, tmp / "final" / "0")
    for f in (tmp / "cifar-10-batches-py").iterdir():  # re-checking must not need the training data
        f.unlink()
    return tmp / "final" / "0"


def test_a_test_only_tree_is_evaluated_whole(cifar_model, tmp_path):
    make_image_tree(tmp_path / "new", {c: 2 for c in CIFAR10}, size=24, split="test")  # 24 px: resized to 32
    r = console(
        "tune-eval", str(cifar_model), "--set", f"data.root={tmp_path / 'new'}", "--split", "test", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["n"] == 20 and out["classes"] == CIFAR10
    assert sum(map(sum, out["confusion_matrix"])) == 20


def test_a_plain_class_tree_is_evaluated_whole(cifar_model, tmp_path):
    make_image_tree(tmp_path / "plain", {c: 2 for c in CIFAR10}, size=40)
    r = console("tune-eval", str(cifar_model), "--set", "data.root=plain", cwd=tmp_path)  # relative, default split
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["n"] == 20  # all of them, not a test_fraction carved out


def test_classes_that_differ_from_the_models_are_named(cifar_model, tmp_path):
    make_image_tree(tmp_path / "other", {c: 1 for c in CIFAR10[:9] + ["kitten"]}, size=32, split="test")
    r = console("tune-eval", str(cifar_model), "--set", f"data.root={tmp_path / 'other'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tune-eval: error: "), r.stderr
    assert "not in the model ['kitten']" in lines[0] and "missing ['truck']" in lines[0]


def test_a_model_folder_whose_spec_holds_its_runs_own_limits_is_evaluated(cifar_model, tmp_path, capsys):
    """Model folders written before final training left its run-only keys (the time limit and schedule a budget
    set for that run) out of spec.yaml: tune-eval re-checks them all the same, as the settings they hold."""
    import shutil

    import yaml

    from search.cli import eval_main

    old = tmp_path / "old"
    shutil.copytree(cifar_model, old)
    spec = yaml.safe_load((old / "spec.yaml").read_text())
    spec["train"].update({"_time_limit_s": 30.0, "_schedule_base": {"epochs": 1, "warmup_epochs": 0, "milestones": []}})
    (old / "spec.yaml").write_text(yaml.safe_dump(spec))
    make_image_tree(tmp_path / "new", {c: 1 for c in CIFAR10}, size=32, split="test")
    assert eval_main([str(old), "--set", f"data.root={tmp_path / 'new'}"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["n"] == 10
