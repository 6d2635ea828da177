"""GPU pinning without a GPU: a Ray head started with two logical GPUs (``ray start --num-gpus 2`` on this CPU
machine) hands each trial of ``resources.gpu: 0.5`` a GPU id and sets CUDA_VISIBLE_DEVICES to it; four trials run
at once, two per GPU, each records its id (trials.csv, MLflow), and training falls back to CPU with one warning."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections import Counter

import pytest
import yaml

from tests.conftest import mlflow_runs
from tests.test_ray_address import BIN, ray_env, ray_start, stop

pytestmark = pytest.mark.ray
SPEC = {
    "experiment": {"name": "pinned"},
    "data": {"dataset": "synthetic", "image_size": 24, "num_classes": 4, "num_samples": 3000},
    "model": {"name": "cnn", "conv1": 8, "conv2": 16, "conv3": 16, "hidden": 16},
    # Long enough for the four to overlap: measured alone, the four started within 0.6 s of each other and each
    # ran 6.5-8 s to its first epoch's end (worker start and setup included), 1-2 s an epoch after it.
    "train": {"epochs": 2, "batch_size": 32},
    "space": {"train.lr": {"grid": [1e-3, 2e-3, 3e-3, 4e-3]}},
    "search": {"algorithm": "grid", "max_concurrent": 4},
    "resources": {"cpu": 1, "gpu": 0.5},
}


@pytest.mark.alone  # four trials must overlap in time on 2 cores
def test_trials_share_logical_gpus_record_their_ids_and_train_on_cpu(tmp_path):
    temp, env = ray_env()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    proc, address = ray_start(env, temp, "--num-cpus=4", "--num-gpus=2", "--object-store-memory=200000000")
    try:
        r = subprocess.run(
            [str(BIN / "tune-run"), "spec.yaml", "--address", address],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert r.stdout.count("no GPU visible to the trials: training on CPU") == 1, r.stdout[-3000:]  # once a study
    out = tmp_path / "runs" / "pinned"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [row["status"] for row in rows] == ["completed"] * 4, rows
    assert all(row["device"].startswith("cpu") for row in rows)  # CUDA_VISIBLE_DEVICES names no real GPU here
    assert Counter(row["gpu"] for row in rows) == {"0": 2, "1": 2}, rows  # 0.5 each: two trials per GPU, no more
    # The four ran at once: each trial's first epoch began before any trial's last epoch ended.
    spans = []
    for row in rows:
        results = [json.loads(line) for line in (out / f"trial_{row['trial_id']}" / "result.json").open()]
        spans.append((results[0]["timestamp"] - results[0]["time_this_iter_s"], results[-1]["timestamp"]))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    _, runs = mlflow_runs(tmp_path / "mlflow.db", "pinned")
    tagged = {x.data.tags["trial_id"]: x.data.tags.get("gpu") for x in runs if x.data.tags.get("role") == "trial"}
    assert tagged == {row["trial_id"]: row["gpu"] for row in rows}
