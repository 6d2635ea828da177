"""A real multi-node Ray cluster on one host (``ray.cluster_utils.Cluster``): a head with no CPUs, so every
trial runs on a 1-CPU worker node; the study's storage is a local folder, which every node of one host sees
(a shared filesystem, as NFS is for a real cluster)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

import trainables
from search import SpecError, run_study
from tests.conftest import continued_epochs, mlflow_runs, ray_lock, read_rows, small_spec

pytestmark = pytest.mark.ray
MB = 1024 * 1024
EPOCHS = 6


def start_cluster():
    """Head (0 CPUs, dashboard) + two 1-CPU workers; node deaths noticed within seconds. The test session's shared
    local Ray (``ray_session``) is shut down first: a driver already connected would ignore the cluster's address."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()

    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": 100 * MB,
            "dashboard_port": 0,
            "_system_config": {
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 4,
                "health_check_initial_delay_ms": 0,
            },
        },
    )
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=100 * MB)
    c.wait_for_nodes()
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    with ray_lock(tmp_path_factory):  # no cluster starts beside an alone test
        c = start_cluster()
    yield c
    ray.shutdown()
    c.shutdown()


def node_of(cluster, pid: int):
    """The worker node whose raylet started process ``pid`` (all nodes share this host's process table)."""
    import psutil
    from ray._private import ray_constants

    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    return next(
        n
        for n in cluster.worker_nodes
        if n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid in ancestors
    )


def kill_node_after(cluster, out: Path, epochs: int, killed: list, stop: threading.Event) -> None:
    """Once the trial has reported ``epochs`` epochs, kill the node it runs on without a graceful shutdown,
    as a machine that dies; the other worker node is where Tune can restart it."""
    import pandas as pd

    while not stop.is_set():
        progress = list(out.glob("trial_*/progress.csv"))
        if progress and len(progress[0].read_text().strip().splitlines()) > epochs:  # header + epochs
            df = pd.read_csv(progress[0])
            cluster.remove_node(node_of(cluster, int(df["pid"].iloc[-1])), allow_graceful=False)
            killed.append(int(df["epoch"].iloc[-1]))
            return
        time.sleep(0.05)


def test_a_trial_whose_node_dies_continues_from_its_checkpoint_on_another_node(tmp_path, cluster, capsys):
    import pandas as pd

    spec = small_spec(
        tmp_path,
        "nodeloss",
        train={"epochs": EPOCHS},
        data={"num_samples": 6000},
        resources={"cpu": 1, "max_failures": 2},  # a trial on a node of 1 CPU
    )
    out = tmp_path / "runs" / "nodeloss"
    lines: list[str] = []
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_node_after, args=(cluster, out, 2, killed, stop), daemon=True)
    watcher.start()
    try:
        res = run_study(spec, trainables, file="nodeloss.yaml", address=cluster.address, log=lines.append)
    finally:
        stop.set()
        watcher.join()
    assert killed, "the trial ended before its node could be killed"
    assert killed[0] < EPOCHS, f"the node died only after the trial's last epoch ({killed[0]})"
    out_text = capsys.readouterr().out
    assert re.search(
        r"^trial \S+ lost its process or node after epoch [2-5]: restarting it from its last "
        r"checkpoint \(failure 1 of 2 allowed\)$",
        out_text,
        re.M,
    ), out_text[-2000:]

    # One trial, completed with all its epochs, in trials.csv and the result alike.
    rows = read_rows(out / "trials.csv")
    assert len(rows) == 1 and rows[0]["status"] == "completed" and int(rows[0]["epochs"]) == EPOCHS
    assert [r["status"] for r in res.rows] == ["completed"]

    # It went on from its checkpoint (past epoch 1) in a second process, to the last epoch.
    df = pd.read_csv(next(out.glob("trial_*/progress.csv")))
    c = continued_epochs(df.to_dict("records"), EPOCHS)
    restarted = df[df["iterations_since_restore"] < df["training_iteration"]]
    assert int(restarted["epoch"].iloc[0]) - int(restarted["iterations_since_restore"].iloc[0]) == c
    assert df["node_ip"].nunique() == 1 and df["pid"].nunique() == 2  # same host, two trial processes

    # MLflow: one run for the trial (no duplicate after the failure), each epoch's metric logged once.
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "nodeloss")
    trial_runs = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert len(trial_runs) == 1
    run = trial_runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
    assert sorted(m.step for m in c.get_metric_history(run.info.run_id, "val_acc")) == list(range(1, EPOCHS + 1))

    # The joined cluster's own dashboard is printed (its head's, not a local one).
    import ray

    url = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert any(ln.startswith(f"Ray dashboard: http://{url}") for ln in lines), lines[:3]


def test_a_data_root_is_checked_on_every_node(tmp_path, cluster):
    """Each alive node lists the folder in a task pinned to it. On one host every node sees the same files,
    so a folder one node cannot see while another can is not made here: a missing folder stands for it."""
    import ray

    from search.run._cluster import alive_nodes, check_paths_on_nodes, unseen_on_nodes

    ray.init(address=cluster.address, ignore_reinit_error=True)
    nodes = alive_nodes()
    assert len(nodes) >= 2
    seen = tmp_path / "data"
    (seen / "a").mkdir(parents=True)
    assert unseen_on_nodes([str(seen)], nodes) == []
    check_paths_on_nodes([str(seen)], "s.yaml")
    gone = tmp_path / "gone"
    blind = unseen_on_nodes([str(gone)], nodes)
    assert sorted(n["NodeID"] for n, _ in blind) == sorted(n["NodeID"] for n in nodes)
    from search.run._ray_runtime import fit_to_cluster

    with pytest.raises(SpecError) as err:  # as tune-run checks a streamed set's root before any trial runs
        fit_to_cluster(small_spec(tmp_path, "s"), [str(gone)], "s.yaml", print)
    msg = str(err.value)
    assert msg.startswith(f"s.yaml: data.root: {gone} is not visible on node ")
    assert any(f"(node id {n['NodeID'][:12]})" in msg for n in nodes) and "more nodes" in msg


def test_an_autoscaling_cluster_refuses_a_request_no_node_type_holds(tmp_path, cluster):
    """The node types as the autoscaler reports them to the GCS (its ClusterConfig in the GCS key-value
    store, where ``ray._private.state`` reads it): a GPU request above every type's is a spec error."""
    import ray
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    from search.run._ray_runtime import fit_to_cluster

    ray.init(address=cluster.address, ignore_reinit_error=True)
    config = autoscaler_pb2.ClusterConfig(
        node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="head", resources={"CPU": 0}, min_count=1, max_count=1),
            autoscaler_pb2.NodeGroupConfig(name="gpu-worker", resources={"CPU": 8, "GPU": 1}, min_count=0, max_count=4),
        ]
    )
    key = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode()
    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    internal_kv._internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=namespace)
    try:
        spec = small_spec(tmp_path, "big", resources={"gpu": 2, "cpu": 4})
        with pytest.raises(
            SpecError,
            match=r"^big.yaml: resources.gpu: gpu=2 but no node type of this cluster "
            r"offers more than 1 GPU$",
        ):
            fit_to_cluster(spec, [], "big.yaml", print)
        fits = small_spec(tmp_path, "fits", resources={"gpu": 1, "cpu": 8})
        fit_to_cluster(fits, [], "fits.yaml", print)  # more than the cluster has now: the autoscaler adds it
        assert fits["resources"]["gpu"] == 1 and fits["resources"]["cpu"] == 8
    finally:
        internal_kv._internal_kv_del(key, namespace=namespace)
    # Without a node-type list, today's rule: fitted to the cluster with a warning.
    warned: list[str] = []
    plain = small_spec(tmp_path, "plain", resources={"gpu": 2, "cpu": 4})
    fit_to_cluster(plain, [], "plain.yaml", warned.append)
    assert plain["resources"]["gpu"] == 0 and plain["resources"]["cpu"] == ray.cluster_resources()["CPU"] < 4
    assert any("resources.gpu=2.0 but the cluster has no GPU" in w for w in warned)
