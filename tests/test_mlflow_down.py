"""A tracking server that goes away in the middle of a study: the trials go on, every result lands in
``runs/``, the study's end names the MLflow writes that failed, and ``tune-run --sync-mlflow`` fills them
in once the server is back, adding nothing twice. A real ``mlflow server`` (SQLite behind it) on a free
port, killed after the first trial finishes and started again on the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import read_rows
from tests.servers import free_port

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent

SPEC = {
    "experiment": {"name": "mlflow-down"},
    "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 1500},
    "model": {"name": "cnn", "conv1": 8, "conv2": 16, "conv3": 16, "hidden": 16},
    "train": {"epochs": 2, "batch_size": 32},
    "space": {"train.lr": {"grid": [1e-3, 2e-3, 3e-3]}},
    "search": {"algorithm": "grid", "max_concurrent": 1},
    "resources": {"cpu": 1},
}


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    log = open(tmp_path / "server.log", "a")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    raise AssertionError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def trial_runs(uri: str) -> tuple:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("mlflow-down")
    runs = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return (
        c,
        [r for r in runs if r.data.tags.get("role") == "trial"],
        [r for r in runs if r.data.tags.get("role") == "study"],
    )


def test_server_lost_mid_study_is_filled_in_by_sync_mlflow(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SPEC, "tracking": {"mlflow_uri": uri}}))
    server = start_server(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    study = subprocess.Popen(
        [str(BIN / "tune-run"), "s.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:  # until the first trial has finished in MLflow
            assert study.poll() is None, study.stdout.read()[-3000:]
            _, children, _ = trial_runs(uri)
            if any(r.info.status == "FINISHED" for r in children):
                break
            time.sleep(0.5)
        stop_server(server)
        out, _ = study.communicate(timeout=600)
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
    assert study.returncode == 0, out[-3000:]
    rows = read_rows(tmp_path / "runs" / "mlflow-down" / "trials.csv")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows), rows  # the trials went on
    assert "MLflow writes failed from" in out and "Traceback" not in out, out[-3000:]
    assert "When the store is back, fill them in with: tune-run --sync-mlflow runs/mlflow-down" in out, out[-3000:]

    server = start_server(tmp_path, port)
    try:
        sync = subprocess.run(
            [str(BIN / "tune-run"), "--sync-mlflow", "runs/mlflow-down"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sync.returncode == 0 and "filled in from runs/mlflow-down" in sync.stdout, sync.stdout + sync.stderr
        c, children, parents = trial_runs(uri)
        assert sorted(r.data.tags["trial_id"] for r in children) == sorted(r["trial_id"] for r in rows)
        for r in children:
            assert r.info.status == "FINISHED" and r.data.tags["status"] == "completed"
            assert r.data.params["train.lr"] and r.data.params["model.name"] == "cnn"
            for key in ("val_acc", "train_loss"):
                assert [m.step for m in c.get_metric_history(r.info.run_id, key)] == [1, 2], (key, r.data.tags)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].data.metrics["trials"] == 3
        # Run again: nothing is missing, nothing is added.
        again = subprocess.run(
            [str(BIN / "tune-run"), "--sync-mlflow", "runs/mlflow-down"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0 and "nothing was missing" in again.stdout, again.stdout + again.stderr
        c, children2, _ = trial_runs(uri)
        assert len(children2) == 3
        assert all([m.step for m in c.get_metric_history(r.info.run_id, "val_acc")] == [1, 2] for r in children2)
    finally:
        stop_server(server)
