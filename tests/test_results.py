"""Results users can defend, on a real Ray runtime and MLflow store: statuses, infeasible trials, PBT."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import trainables
from search import resolve, run_study

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


def small_spec(tmp_path: Path, name: str, **sections):
    spec = {
        "experiment": {"name": name, "output_dir": str(tmp_path / "runs")},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 400},
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
        "tracking": {"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    for k, v in sections.items():
        spec[k] = v if k == "model" else {**spec.get(k, {}), **v}
    return resolve(spec, trainables)


def trial_runs(db: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    return [r for r in c.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("role") == "trial"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_trials_csv_and_mlflow_agree_on_each_trials_status(tmp_path, ray_session):
    # short: its own train.epochs (1) is its full length, though the spec says 3: completed.
    # flat: lr 1e-30 leaves the weights (and val_loss) unchanged, so early stopping (patience 1) ends it
    # after epoch 2 of 3: early_stopped (by the engine), not stopped (by the scheduler).
    space = {"recipe": {"grid": [{"name": "short", "train.epochs": 1},
                                 {"name": "flat", "train.lr": 1.0e-30, "train.early_stopping": 1},
                                 {"name": "full", "train.seed": 0}]}}
    spec = small_spec(tmp_path, "statuses", space=space)
    res = run_study(spec, trainables, file="statuses.yaml", log=lambda *_: None)
    rows = read_rows(res.out_dir / "trials.csv")
    csv_status = {r["trial_id"]: r["status"] for r in rows}
    assert {r["recipe"]: (r["status"], r["epochs"]) for r in rows} == {
        "short": ("completed", "1"), "flat": ("early_stopped", "2"), "full": ("completed", "3")}
    mlflow_status = {r.data.tags["trial_id"]: r.data.tags["status"] for r in trial_runs(tmp_path / "mlflow.db",
                                                                                         "statuses")}
    assert mlflow_status == csv_status
