"""What tune-run may do to an existing folder: resume only with the study's own spec, delete only its own output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

TINY = {
    "experiment": {"name": "tiny"},
    "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 64},
    "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
    "train": {"epochs": 1, "batch_size": 32},
    "space": {"train.lr": {"choice": [1.0e-3]}},
    "tracking": {"enabled": False},
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(r) -> str:  # noqa: ANN001  (a process or tests.conftest.Ran)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("tune-run: error: tiny.yaml: "), r.stderr
    return lines[0]


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path / "tiny.yaml"


def test_overwrite_deletes_only_a_study_folder(spec_file, tmp_path, cli):
    mine = tmp_path / "runs" / "tiny" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes")
    for flags in ((), ("--overwrite",)):
        line = one_error_line(cli("tune-run", "tiny.yaml", *flags, cwd=tmp_path))
        assert "holds files that are not a study (no study.json)" in line
    assert mine.read_text() == "my notes" and len(list(mine.parent.iterdir())) == 1


def test_final_overwrite_deletes_only_a_final_models_folder(spec_file, tmp_path, cli):
    best = {**TINY, "space": {}}
    spec_file.write_text(yaml.safe_dump(best))
    mine = tmp_path / "runs" / "tiny" / "final" / "paper.tex"
    mine.parent.mkdir(parents=True)
    mine.write_text("draft")
    line = one_error_line(cli("tune-run", "tiny.yaml", "--final", "--overwrite", cwd=tmp_path))
    assert "--overwrite:" in line and "not final models (no metrics.json or seed folders)" in line
    assert mine.read_text() == "draft" and len(list(mine.parent.iterdir())) == 1


@pytest.mark.ray
def test_resume_uses_the_studys_own_spec(spec_file, tmp_path, cli, ray_session):
    r = cli("tune-run", "tiny.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    study = tmp_path / "runs" / "tiny"
    before = snapshot(study)
    # A changed --set (or file) is refused, naming the keys; nothing on disk moves.
    line = one_error_line(
        cli("tune-run", "tiny.yaml", "--resume", "--set", "train.epochs=3", "--set", "train.lr=0.1", cwd=tmp_path)
    )
    assert "--resume:" in line and "train.epochs (1 -> 3)" in line and "train.lr (0.001 -> 0.1)" in line
    spec_file.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "num_samples": 80}}))
    line = one_error_line(cli("tune-run", "tiny.yaml", "--resume", cwd=tmp_path))
    assert "data.num_samples (64 -> 80)" in line
    assert snapshot(study) == before
    # The spec it started with resumes (the finished trial is kept).
    spec_file.write_text(yaml.safe_dump(TINY))
    r = cli("tune-run", "tiny.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((study / "study.json").read_text())["trials"] == 1


def test_resume_names_a_study_file_without_its_spec(tmp_path):
    """A study.json that lost its spec is one line naming it, not a KeyError traceback."""
    from search import SpecError
    from search.run._resume import check_resumable as _check_resumable

    (tmp_path / "study.json").write_text('{"started": "2026-11-22"}')
    with pytest.raises(SpecError, match=r"study.json: spec: missing: not a study written by tune-run"):
        _check_resumable("s.yaml", tmp_path / "study.json", {"experiment": {"name": "s"}})
