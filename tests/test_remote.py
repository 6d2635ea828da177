"""A study in S3 (moto's server mode) tracked by an MLflow server on PostgreSQL with S3 artifacts: every
command writes to and reads from the bucket, as a user runs them, from a working directory left empty."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.servers import BUCKET

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "spaces" / "quickstart.yaml")
RUNS = f"s3://{BUCKET}/runs"
STUDY = f"{RUNS}/quickstart-smoke"


def cmd(name: str, *args: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """A console script (tune-run, tune-eval, tune-compare) as a user runs it, in ``cwd``."""
    return subprocess.run(
        [str(Path(sys.executable).parent / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(r: subprocess.CompletedProcess, *parts: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert all(p in lines[0] for p in parts), lines[0]


def test_bad_storage_is_one_line_before_anything_starts(s3, tmp_path):
    quick = ("--smoke", "--set", "tracking.enabled=false")
    r = cmd(
        "tune-run",
        QUICKSTART,
        *quick,
        "--set",
        "experiment.output_dir=s3://no-such-bucket/runs",
        cwd=tmp_path,
        env=s3.env,
    )
    assert_one_line_error(
        r,
        "experiment.output_dir",
        "s3://no-such-bucket/runs/quickstart-smoke",
        "bucket 'no-such-bucket' does not exist",
    )
    r = cmd(
        "tune-run",
        QUICKSTART,
        *quick,
        "--set",
        f"experiment.output_dir={RUNS}",
        cwd=tmp_path,
        env={**s3.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )
    assert_one_line_error(r, "experiment.output_dir", "cannot be used", "connect", "http://127.0.0.1:9")
    r = cmd(
        "tune-run",
        QUICKSTART,
        *quick,
        "--set",
        f"experiment.output_dir=s3://key:secret@{BUCKET}/runs",
        cwd=tmp_path,
        env=s3.env,
    )
    assert_one_line_error(r, "credentials do not belong in a spec")
    assert "secret" not in r.stderr.replace("AWS_SECRET_ACCESS_KEY", "")
    r = cmd("tune-eval", f"{STUDY}-missing/final/0", cwd=tmp_path, env=s3.env)
    assert_one_line_error(r, "not a final model folder")
    assert list(tmp_path.iterdir()) == [] and not s3.keys("runs/quickstart-smoke-missing")


def test_compare_names_a_damaged_file_in_s3_by_its_uri(s3, tmp_path):
    """tune-compare reads a study in S3 from a temporary copy; a damaged file is named as the user gave it."""
    from tests.test_bad_result_files import study_folder

    cases = [
        ("final/metrics.json", b'{"summary": {', "invalid JSON"),
        ("final/0/metrics.json", b'{"test": {"confusion_matrix": [[1', "invalid JSON"),
        ("study.json", b"[]", "expected a JSON object, got list"),
        ("trials.csv", b"trial_id,status\nt1,completed\n", "has no column 'best_val_acc'"),
    ]
    for i, (name, content, words) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        local = study_folder(tmp_path / str(i), name)
        (local / name).write_bytes(content)
        for f in (p for p in local.rglob("*") if p.is_file()):
            s3.client().upload_file(str(f), BUCKET, f"damaged/{i}/s/{f.relative_to(local).as_posix()}")
        r = cmd(
            "tune-compare",
            f"s3://{BUCKET}/damaged/{i}/s",
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
            cwd=tmp_path,
            env=s3.env,
        )
        assert_one_line_error(r, f"tune-compare: error: s3://{BUCKET}/damaged/{i}/s/{name}: ", words)
        assert not s3.keys(f"damaged/{i}/compare"), "nothing half-written"


@pytest.mark.ray
def test_study_final_eval_compare_in_s3_tracked_by_a_server(s3, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    remote = ("--set", f"experiment.output_dir={RUNS}", "--set", f"tracking.mlflow_uri={mlflow_server}")
    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, cwd=work, env=s3.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"best config: {STUDY}/best.yaml" in r.stdout, r.stdout[-2000:]
    keys = s3.keys("runs/quickstart-smoke/")
    names = {k.removeprefix("runs/quickstart-smoke/") for k in keys}
    assert {"study.json", "trials.csv", "best.yaml", "spec.yaml"} <= names, names
    assert any(n.startswith("experiment_state") for n in names), names  # Tune's own state, for --resume
    assert any(n.startswith("trial_") and "/checkpoint_" in n and n.endswith("state.pt") for n in names), names

    # --resume reads the study back from S3: a changed spec is refused, the same one resumes (nothing to run).
    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, "--set", "train.lr=0.5", "--resume", cwd=work, env=s3.env)
    assert_one_line_error(r, "--resume", f"{STUDY}/study.json", "train.lr")
    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, cwd=work, env=s3.env)
    assert_one_line_error(r, "experiment.name", f"{STUDY} already holds a study")
    r = cmd("tune-run", QUICKSTART, "--smoke", *remote, "--resume", cwd=work, env=s3.env)
    assert r.returncode == 0, r.stderr[-3000:]

    # A trial's run the server lost is filled in from the study in S3: its reports are read from the bucket.
    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("quickstart-smoke")
    c.delete_run(c.search_runs([exp.experiment_id], "tags.role = 'trial'")[0].info.run_id)
    r = cmd("tune-run", "--sync-mlflow", STUDY, cwd=work, env=s3.env)
    assert r.returncode == 0 and f"filled in from {STUDY}: 1 run(s) created" in r.stdout, r.stdout + r.stderr
    r = cmd("tune-run", "--sync-mlflow", STUDY, cwd=work, env=s3.env)
    assert r.returncode == 0 and f"filled in from {STUDY}: nothing was missing" in r.stdout, r.stdout + r.stderr

    # Final training from best.yaml in S3: the models go beside it, to <study>/final.
    r = cmd(
        "tune-run",
        f"{STUDY}/best.yaml",
        "--final",
        "--set",
        "final.seeds=[0]",
        "--set",
        "final.epochs=1",
        cwd=work,
        env=s3.env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"models and metrics: {STUDY}/final" in r.stdout, r.stdout[-2000:]
    final = set(s3.keys("runs/quickstart-smoke/final/"))
    for name in (
        "metrics.json",
        "spec.yaml",
        "0/model.safetensors",
        "0/meta.json",
        "0/spec.yaml",
        "0/metrics.json",
        "0/confusion.png",
    ):
        assert f"runs/quickstart-smoke/final/{name}" in final, final

    r = cmd("tune-eval", f"{STUDY}/final/0", cwd=work, env=s3.env)
    assert r.returncode == 0, r.stderr[-3000:]
    stored = json.loads(
        s3.client().get_object(Bucket=BUCKET, Key="runs/quickstart-smoke/final/0/metrics.json")["Body"].read()
    )
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(stored["test"]["accuracy"])

    r = cmd("tune-compare", STUDY, cwd=work, env=s3.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quickstart-smoke" in r.stdout and f"report: {RUNS}/compare/report.md" in r.stdout
    assert {"runs/compare/report.md", "runs/compare/report.html"} <= set(s3.keys("runs/compare/"))
    assert list(work.iterdir()) == [], "a study in S3 tracked by a server writes nothing where it runs"

    # The tracking server: one parent run, one run per trial (params, per-epoch metrics; the filled-in one too),
    # no duplicate after --resume; the final run's artifacts and models, stored in the bucket.
    runs = c.search_runs([exp.experiment_id], max_results=100)
    roles = sorted(x.data.tags.get("role", "") for x in runs)
    assert roles == ["final", "final-seed", "study", "trial", "trial"], roles
    study = next(x for x in runs if x.data.tags["role"] == "study")
    for trial in (x for x in runs if x.data.tags["role"] == "trial"):
        assert trial.data.tags["mlflow.parentRunId"] == study.info.run_id
        assert "train.lr" in trial.data.params and "model.name" in trial.data.params
        steps = [m.step for m in c.get_metric_history(trial.info.run_id, "val_acc")]
        assert steps == list(range(1, int(trial.data.tags["epochs"]) + 1)), steps
    final_run = next(x for x in runs if x.data.tags["role"] == "final")
    assert final_run.data.tags["mlflow.parentRunId"] == study.info.run_id
    logged = {f.path for f in c.list_artifacts(final_run.info.run_id, "final/0")}
    assert {"final/0/model.safetensors", "final/0/confusion.png", "final/0/curves.png"} <= logged, logged
    artifacts = s3.keys("mlflow/")
    assert any(k.endswith("final/0/model.safetensors") for k in artifacts), artifacts
    assert any(k.endswith("final/0/confusion.png") for k in artifacts), artifacts
    assert any(k.endswith("trials.csv") for k in artifacts), artifacts
    assert any("model-seed0" in k or k.endswith("data/model.pth") or "/models/" in k for k in artifacts), artifacts


# Three trials of three epochs, two at a time: long enough (seconds per epoch) to be caught mid-way.
KILLED = {
    "experiment": {"name": "s3-killed", "output_dir": RUNS},
    "data": {"dataset": "synthetic", "image_size": 24, "num_classes": 4, "num_samples": 2000},
    "model": {"name": "cnn", "conv1": 16, "conv2": 32, "conv3": 32, "hidden": 32},
    "train": {"epochs": 3, "batch_size": 32},
    "space": {"train.lr": {"grid": [1e-3, 2e-3, 3e-3]}},
    "search": {"algorithm": "grid", "max_concurrent": 2},
}


def finished_trial_runs(client, experiment: str) -> dict[str, str]:
    """{trial id: run id} of the trial runs MLflow has as finished."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'") if exp else []
    return {x.data.tags["trial_id"]: x.info.run_id for x in runs if x.info.status == "FINISHED"}


@pytest.mark.ray
def test_killed_driver_resumes_from_s3_without_losing_or_duplicating(s3, mlflow_server, tmp_path):
    """The driver and its Ray are killed (SIGKILL) mid-study; `tune-run SPEC --resume` finds the study in S3 and
    completes it: each trial once in trials.csv, one MLflow run per trial with each epoch logged once."""
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    spec = tmp_path / "killed.yaml"
    spec.write_text(yaml.safe_dump({**KILLED, "tracking": {"mlflow_uri": mlflow_server}}))
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tune-run"), str(spec)],
        cwd=work,
        env=s3.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    c, deadline, before = MlflowClient(mlflow_server), time.time() + 600, {}
    while not before:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise AssertionError(f"study ended before it could be killed: {proc.stdout.read()[-3000:]}")
        assert time.time() < deadline, "no trial finished in time"
        before = finished_trial_runs(c, "s3-killed")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-way through the other trials
    proc.wait()
    assert not s3.keys("runs/s3-killed/trials.csv")  # the study had not ended

    r = cmd("tune-run", str(spec), "--resume", cwd=work, env=s3.env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    table = s3.client().get_object(Bucket=BUCKET, Key="runs/s3-killed/trials.csv")["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == 3 and len({row["trial_id"] for row in rows}) == 3, table
    assert all(row["status"] == "completed" and row["epochs"] == "3" for row in rows), table
    record = json.loads(s3.client().get_object(Bucket=BUCKET, Key="runs/s3-killed/study.json")["Body"].read())
    assert record["resumed"] is True and record["interrupted"] is False and record["trials"] == 3
    assert set(before) <= {row["trial_id"] for row in rows}
    exp = c.get_experiment_by_name("s3-killed")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    assert sorted(x.data.tags.get("role", "") for x in runs) == ["study", *["trial"] * 3], "no duplicate runs"
    for x in runs:
        if x.data.tags["role"] == "trial":  # finished trials kept, the others continued: each epoch once
            assert x.info.status == "FINISHED" and x.data.tags["status"] == "completed"
            assert [m.step for m in c.get_metric_history(x.info.run_id, "val_acc")] == [1, 2, 3], x.data.tags
    assert list(work.iterdir()) == []
