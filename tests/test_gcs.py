"""A study in Google Cloud Storage (gcp-storage-emulator's JSON API, reached through STORAGE_EMULATOR_HOST as
Google's client libraries reach one): every command writes to and reads from the bucket, as a user runs them."""

from __future__ import annotations

import json

import pytest

from tests.test_remote import QUICKSTART, assert_one_line_error, cmd

RUNS = "gs://bucket/runs"
STUDY = f"{RUNS}/quickstart-smoke"


def test_a_missing_bucket_is_one_line(gcs, tmp_path):
    r = cmd(
        "tune-run",
        QUICKSTART,
        "--smoke",
        "--set",
        "tracking.enabled=false",
        "--set",
        "experiment.output_dir=gs://no-such-bucket/runs",
        cwd=tmp_path,
        env=gcs.env,
    )
    assert_one_line_error(
        r,
        "experiment.output_dir",
        "gs://no-such-bucket/runs/quickstart-smoke",
        "bucket 'no-such-bucket' does not exist",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ray
def test_study_resume_final_eval_compare_in_gcs(gcs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    remote = ("--set", f"experiment.output_dir={RUNS}", "--set", f"tracking.mlflow_uri=sqlite:///{tmp_path / 'm.db'}")
    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, cwd=work, env=gcs.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"best config: {STUDY}/best.yaml" in r.stdout, r.stdout[-2000:]
    names = {k.removeprefix("runs/quickstart-smoke/") for k in gcs.keys("runs/quickstart-smoke")}
    assert {"study.json", "trials.csv", "best.yaml", "spec.yaml"} <= names, names
    assert any(n.startswith("experiment_state") for n in names), names  # Tune's own state, in the bucket
    assert any(n.startswith("trial_") and "/checkpoint_" in n and n.endswith("state.pt") for n in names), names

    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, "--resume", cwd=work, env=gcs.env)
    assert r.returncode == 0, r.stderr[-3000:]

    r = cmd(
        "tune-run",
        f"{STUDY}/best.yaml",
        "--final",
        "--set",
        "final.seeds=[0]",
        "--set",
        "final.epochs=1",
        cwd=work,
        env=gcs.env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"models and metrics: {STUDY}/final" in r.stdout, r.stdout[-2000:]
    final = set(gcs.keys("runs/quickstart-smoke/final"))
    for name in ("metrics.json", "0/model.safetensors", "0/meta.json", "0/metrics.json"):
        assert f"runs/quickstart-smoke/final/{name}" in final, final

    r = cmd("tune-eval", f"{STUDY}/final/0", cwd=work, env=gcs.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 0.0 <= json.loads(r.stdout)["accuracy"] <= 1.0

    r = cmd("tune-compare", STUDY, cwd=work, env=gcs.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {RUNS}/compare/report.md" in r.stdout
    assert {"runs/compare/report.md", "runs/compare/report.html"} <= set(gcs.keys("runs/compare"))
    assert list(work.iterdir()) == [], "a study in GCS writes nothing where it runs"
