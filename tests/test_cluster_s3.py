"""The scale-out path end to end on one host, with real parts: a multi-node Ray cluster (a head without CPUs, two
1-CPU worker nodes), the study in S3 (moto's server), MLflow on a tracking server (PostgreSQL, artifacts in S3).
The node running the trial is killed mid-way; the trial continues from its checkpoint in S3 on the other node.
Final training, tune-eval and tune-compare read a study back from S3 in tests/test_remote.py."""

from __future__ import annotations

import csv
import io
import json
import threading
import time

import pytest
import yaml

import trainables
from search import resolve, run_study
from tests.conftest import continued_epochs, small_spec
from tests.servers import BUCKET
from tests.test_cluster import start_cluster
from trainables.ray_adapter import CKPT_FILE

pytestmark = pytest.mark.ray
EPOCHS = 6
STUDY_KEY = "cluster-runs/nodeloss-s3/"
STATE = f"/{CKPT_FILE}"  # the file a checkpoint resumes from


def trial_node(cluster):
    """The worker node of ``cluster`` whose raylet started the running trial (its actor's process title), or None."""
    import psutil
    from ray._private import ray_constants

    for node in cluster.worker_nodes:
        raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
        for p in raylet.children(recursive=True):
            try:
                if any("ResourceTrainable" in part for part in p.cmdline()):
                    return node
            except psutil.Error:
                continue
    return None


def kill_after(cluster, s3, epochs: int, killed: list, stop: threading.Event) -> None:
    """Once the trial's checkpoint in S3 (what it resumes from; the latest alone is kept, checkpoint_00000N after
    epoch N + 1) holds ``epochs`` epochs, kill the node its process runs on. Read from S3, not from the tracking
    server, whose metrics may lag the trial by more than its last epochs."""
    while not stop.is_set():
        saved = [int(k.split("/checkpoint_")[1][:6]) + 1 for k in s3.keys(STUDY_KEY) if k.endswith(STATE)]
        node = trial_node(cluster) if max(saved, default=0) >= epochs else None
        if node is not None:
            cluster.remove_node(node, allow_graceful=False)
            killed.append(max(saved))
            return
        time.sleep(0.1)


def test_a_node_dies_mid_trial_of_a_study_in_s3_tracked_by_a_server(
    s3,
    mlflow_server,
    tmp_path,
    monkeypatch,
):
    import ray
    from mlflow.tracking import MlflowClient

    for key, value in s3.env.items():  # the nodes started below inherit the standard AWS settings
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    cluster = start_cluster()
    spec = small_spec(
        tmp_path,
        "nodeloss-s3",
        train={"epochs": EPOCHS},
        # ~4 s an epoch on 2 loaded cores: the node is killed between epoch 2 and the trial's end, which the
        # watcher (polling the tracking server) must see in time; at 6,000 images the 6 epochs took 13 s and it
        # once found the trial already done
        data={"num_samples": 12000},
        resources={"cpu": 1, "max_failures": 2},  # a trial on a node of 1 CPU
        experiment={"output_dir": f"s3://{BUCKET}/cluster-runs"},
        tracking={"mlflow_uri": mlflow_server},
    )
    client = MlflowClient(mlflow_server)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_after, args=(cluster, s3, 2, killed, stop), daemon=True)
    watcher.start()
    try:
        res = run_study(spec, trainables, file="nodeloss-s3.yaml", address=cluster.address, log=lambda *_: None)
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
        cluster.shutdown()
    assert killed and killed[0] < EPOCHS, (
        f"the node was not killed mid-trial ({killed}) {[k for k in s3.keys(STUDY_KEY) if 'checkpoint' in k][:20]}"
    )

    # Everything the study wrote is in S3: the trial completed all its epochs, continuing from its checkpoint.
    get = lambda key: s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()  # noqa: E731
    rows = list(csv.DictReader(io.StringIO(get("cluster-runs/nodeloss-s3/trials.csv"))))
    assert [(r["status"], int(r["epochs"])) for r in rows] == [("completed", EPOCHS)], rows
    assert [r["status"] for r in res.rows] == ["completed"]
    assert json.loads(get("cluster-runs/nodeloss-s3/study.json"))["trials"] == 1
    assert "best.yaml" in {k.rsplit("/", 1)[-1] for k in s3.keys("cluster-runs/nodeloss-s3/")}
    tid = rows[0]["trial_id"]
    results = [json.loads(line) for line in get(f"cluster-runs/nodeloss-s3/trial_{tid}/result.json").splitlines()]
    continued_epochs(results, EPOCHS)
    assert len({r["pid"] for r in results}) == 2 and results[-1]["iterations_since_restore"] < EPOCHS

    # The tracking server: exactly one run for the trial, each epoch logged once.
    exp = client.get_experiment_by_name("nodeloss-s3")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    assert len(runs) == 1 and runs[0].data.tags["status"] == "completed"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_acc")] == list(range(1, EPOCHS + 1))

    # The best.yaml the cluster's study wrote to S3 is a spec final training reads: final training, tune-eval and
    # tune-compare from S3 tracked by the server run in test_remote (the same commands, storage and server).
    resolve(yaml.safe_load(get("cluster-runs/nodeloss-s3/best.yaml")), trainables)
