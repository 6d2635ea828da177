"""Damaged files beside a model (spec.yaml, meta.json, weights) and in a study (study.json, metrics.json,
trials.csv) through tune-eval's and tune-compare's ``main``: exit status 2, one line naming the file, no traceback.
(The console scripts themselves run in test_readme.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import trainables
from tests.conftest import Ran, small_spec
from trainables.final import train_final

LATIN1 = '{"classes": "caf\xe9"}\n'.encode("latin-1")
# (file, content, words the one line must hold): not UTF-8, truncated, a list, missing keys, empty
EVAL_CASES = [
    ("meta.json", LATIN1, "is not UTF-8 text"),
    ("meta.json", b'{"classes": ["c0", "c1"', "invalid JSON"),
    ("meta.json", b'["c0", "c1"]', "expected a JSON object, got list"),
    ("meta.json", b'{"classes": ["c0", "c1", "c2", "c3"]}', "mean: missing or not a list"),
    ("meta.json", b"", "line 1 column 1: invalid JSON"),
    ("spec.yaml", "model: {name: caf\xe9}\n".encode("latin-1"), "is not UTF-8 text"),
    ("spec.yaml", b"model: {name: vit, depth: [1", "invalid YAML"),
    ("spec.yaml", b"- model\n- train\n", "expected a mapping of sections"),
    ("spec.yaml", b"", "is empty"),
    ("model.safetensors", b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":', "cannot be loaded"),
]


def one_error_line(r: Ran, prog: str, file: str, words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    # the file as given, or (a seed's metrics.json, read where the summary says) its full path
    assert lines[0].startswith(f"{prog}: error: ") and f"{file}: " in lines[0] and words in lines[0], lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved final model folder (one epoch of the tiny ViT on synthetic images)."""
    tmp = tmp_path_factory.mktemp("model")
    spec = small_spec(tmp, "bad-files", train={"epochs": 1, "device": "cpu"}, final={"bootstrap": 20, "timing_s": 0.2})
    train_final(spec, trainables.prepare(spec), 0, tmp / "final" / "0")
    return tmp / "final" / "0"


@pytest.mark.parametrize("name,content,words", EVAL_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(EVAL_CASES)])
def test_tune_eval_names_a_damaged_file_in_one_line(model_dir, tmp_path, cli, name, content, words):
    shutil.copytree(model_dir, tmp_path / "m")
    (tmp_path / "m" / name).write_bytes(content)
    one_error_line(cli("tune-eval", "m", cwd=tmp_path), "tune-eval", f"m/{name}", words)


SUMMARY = {
    "experiment": "s",
    "model": "vit",
    "seeds": [0],
    "summary": {"accuracy": {"mean": 0.8, "std": 0.01, "ci_low": 0.78, "ci_high": 0.82, "n": 1}},
}
STUDY = {
    "spec": {
        "experiment": {"name": "s", "metric": "val_acc"},
        "model": {"name": "vit"},
        "space": {"data.train_fraction": {"grid": [0.5, 1.0]}},
    },
    "report_axes": {
        "model": ["model.name", "vit"],
        "fraction": ["data.train_fraction", 1.0],
        "seed": ["train.seed", 0],
    },
}
TRIALS = b"trial_id,status,data.train_fraction,best_val_acc,seconds\nt1,completed,0.5,0.7,3\n"
# (file in the study folder, content, words); the study's other files are sound
COMPARE_CASES = [
    ("final/metrics.json", LATIN1, "is not UTF-8 text"),
    ("final/metrics.json", b'{"summary": {', "invalid JSON"),
    ("final/metrics.json", b"[1, 2]", "expected a JSON object, got list"),
    ("final/metrics.json", b'{"summary": {}}', "experiment: missing or not a str"),
    ("final/metrics.json", b"", "line 1 column 1: invalid JSON"),
    ("final/0/metrics.json", b'{"test": {"confusion_matrix": [[1', "invalid JSON"),
    ("study.json", LATIN1, "is not UTF-8 text"),
    ("study.json", b'{"spec": {"space"', "invalid JSON"),
    ("study.json", b"[]", "expected a JSON object, got list"),
    ("study.json", b'{"spec": {"space": {}}}', "experiment.name: missing or not a str"),
    ("study.json", b"", "line 1 column 1: invalid JSON"),
    ("trials.csv", b"", "not a trials table"),
    ("trials.csv", b"trial_id,status\nt1,completed\n", "has no column 'best_val_acc'"),
]


def study_folder(root: Path, damaged: str) -> Path:
    """A study folder: a final summary (or, when the case damages study.json/trials.csv, a fraction study)."""
    s = root / "s"
    if damaged.startswith("final/"):
        (s / "final" / "0").mkdir(parents=True)
        (s / "final" / "metrics.json").write_text(json.dumps(SUMMARY))
        (s / "final" / "0" / "metrics.json").write_text(json.dumps({"test": {"confusion_matrix": [[1, 0], [0, 1]]}}))
    else:
        s.mkdir()
        (s / "study.json").write_text(json.dumps(STUDY))
        (s / "trials.csv").write_bytes(TRIALS)
    return s


@pytest.mark.parametrize("name,content,words", COMPARE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(COMPARE_CASES)])
def test_tune_compare_names_a_damaged_file_in_one_line(tmp_path, cli, name, content, words):
    (study_folder(tmp_path, name) / name).write_bytes(content)
    r = cli("tune-compare", "s", "--out", "report", "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    one_error_line(r, "tune-compare", f"s/{name}", words)
    assert not (tmp_path / "report").exists()  # nothing half-written
