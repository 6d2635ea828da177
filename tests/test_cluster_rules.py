"""Rules for joining a cluster, on the numbers and structures Ray gives. What an autoscaling cluster can ever hold, read from the node types its autoscaler reports (Ray's
``autoscaler_pb2.ClusterConfig``, the structure ``ray._private.state.state.get_cluster_config()`` returns),
and the rule that refuses a trial request no node type holds. No Ray runtime: the structure is built here."""

from __future__ import annotations

import pytest

from search.run._cluster import node_type_limits, node_types, unsatisfiable


def cluster_config():
    from ray.core.generated import autoscaler_pb2

    group = autoscaler_pb2.NodeGroupConfig
    return autoscaler_pb2.ClusterConfig(
        node_group_configs=[
            group(name="head", resources={"CPU": 4, "memory": 16 << 30}, min_count=1, max_count=1),
            group(name="cpu", resources={"CPU": 32, "memory": 128 << 30}, min_count=0, max_count=10),
            group(name="gpu", resources={"CPU": 8, "GPU": 1, "memory": 64 << 30}, min_count=0, max_count=-1),
            group(name="disabled-8gpu", resources={"CPU": 96, "GPU": 8}, min_count=0, max_count=0),
        ]
    )


def test_node_types_are_read_from_rays_cluster_config():
    from ray.core.generated import autoscaler_pb2

    types = node_types(cluster_config())
    assert [t["name"] for t in types] == ["head", "cpu", "gpu", "disabled-8gpu"]
    assert types[2] == {
        "name": "gpu",
        "resources": {"CPU": 8, "GPU": 1, "memory": 64 << 30},
        "min_count": 0,
        "max_count": -1,
    }
    # A node type with max_count 0 never has a node: its 8 GPUs do not count.
    assert node_type_limits(types) == {"CPU": 32.0, "memory": float(128 << 30), "GPU": 1.0}
    # No autoscaler reported node types: no limits, the cluster is taken as it is.
    assert node_types(None) is None and node_types(autoscaler_pb2.ClusterConfig()) is None
    assert node_type_limits(None) is None


@pytest.mark.parametrize(
    "cpu, gpu, expected",
    [
        (1, 0, None),
        (32, 0, None),  # the largest node types, each on its own
        (8, 1, None),
        (1, 0.25, None),
        (
            16,
            1,
            (
                "resources",
                "cpu=16, gpu=1 on one node, but no node type of this cluster offers that (head: 4 CPU, "
                "0 GPU; cpu: 32 CPU, 0 GPU; gpu: 8 CPU, 1 GPU)",
            ),
        ),
        (1, 2, ("resources.gpu", "gpu=2 but no node type of this cluster offers more than 1 GPU")),
        (33, 0, ("resources.cpu", "cpu=33 but no node type of this cluster offers more than 32 CPUs")),
    ],
)
def test_a_request_no_node_type_holds_is_refused(cpu, gpu, expected):
    assert unsatisfiable({"cpu": cpu, "gpu": gpu}, node_types(cluster_config())) == expected


def test_a_cluster_of_cpu_node_types_refuses_any_gpu_request():
    types = [{"name": "cpu", "resources": {"CPU": 16}, "min_count": 0, "max_count": 5}]
    assert unsatisfiable({"cpu": 1, "gpu": 0.5}, types) == (
        "resources.gpu",
        "gpu=0.5 but no node type of this cluster offers more than 0 GPUs",
    )


@pytest.mark.parametrize(
    "url, address, shown",
    [
        ("10.0.0.5:8265", "10.0.0.5:6379", "10.0.0.5:8265"),  # the head's own address, as Ray reports it
        ("0.0.0.0:8265", "head.example:6379", "head.example:8265"),  # bound to every interface: the head's host
        ("0.0.0.0:8265", "ray://head.example:10001", "head.example:8265"),
        ("127.0.0.1:8265", "10.0.0.5:6379", "127.0.0.1:8265"),  # bound to the head's loopback: as it is
        ("0.0.0.0:8265", "auto", "127.0.0.1:8265"),  # auto: a cluster on this machine
    ],
)
def test_a_joined_clusters_dashboard_is_shown_at_an_address_this_machine_can_use(url, address, shown):
    from search.run._console import dashboard_line, joined_dashboard

    assert joined_dashboard(url, address) == shown
    assert dashboard_line(f"http://{shown}", joined=True).startswith(f"Ray dashboard: http://{shown}")


@pytest.mark.parametrize("storage, needs_root", [("stream", True), ("memory", False)])
def test_only_a_streamed_set_needs_its_root_on_every_node(tmp_path, storage, needs_root):
    """A streamed set is read by each trial on its node; a set in memory travels in Ray's object store."""
    import trainables
    from tests.conftest import make_image_tree, small_spec

    root = make_image_tree(tmp_path / "imgs", {"a": 4, "b": 4}, size=8)
    spec = small_spec(
        tmp_path,
        "paths",
        data={
            "dataset": "imagefolder",
            "root": str(root),
            "image_size": 8,
            "storage": storage,
            "num_classes": None,
            "num_samples": None,
        },
    )
    pools = trainables.prepare(spec)
    assert pools.streamed is needs_root
    assert trainables.node_paths(spec, pools) == ([str(root.resolve())] if needs_root else [])


def test_a_trial_resumes_from_its_newest_checkpoint_when_the_one_tunes_state_names_is_gone(tmp_path):
    """A killed driver's last uploaded experiment state can name a checkpoint Tune had already deleted
    (num_to_keep) for a newer one: the trial continues from that newer one, with the result Tune logged for it,
    or, when result.json lacks it, an iteration count grown by the checkpoints in between — never from a checkpoint
    whose upload the kill cut short (no state file), which failed a resumed trial in a rehearsal."""
    import json

    import pyarrow.fs
    from ray import tune
    from ray.train._internal.session import _TrainingResult

    from trainables.ray_adapter import _existing_checkpoint

    trial = tmp_path / "trial_x"
    (trial / "checkpoint_000002").mkdir(parents=True)
    (trial / "checkpoint_000002" / "state.pt").write_bytes(b"a whole checkpoint")
    # The next one, its upload cut short when the driver and the trial were killed: no state file (S3 had it so).
    (trial / "checkpoint_000003").mkdir()
    (trial / "checkpoint_000003" / ".metadata.json").write_text("{}")
    fs = pyarrow.fs.LocalFileSystem()
    stale = _TrainingResult(tune.Checkpoint(str(trial / "checkpoint_000000"), fs), {"training_iteration": 1})
    got = _existing_checkpoint(stale)
    assert got.checkpoint.path == str(trial / "checkpoint_000002") and got.metrics["training_iteration"] == 3
    rows = [{"training_iteration": i, "epoch": i, "checkpoint_dir_name": f"checkpoint_{i - 1:06d}"} for i in (1, 2, 3)]
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut sho')
    assert _existing_checkpoint(stale).metrics == rows[2]
    here = _TrainingResult(tune.Checkpoint(str(trial / "checkpoint_000002"), fs), {"training_iteration": 3})
    assert _existing_checkpoint(here) is here  # the checkpoint Tune names exists: used as it is
    torn = _TrainingResult(tune.Checkpoint(str(trial / "checkpoint_000003"), fs), {"training_iteration": 4})
    assert _existing_checkpoint(torn).checkpoint.path == str(trial / "checkpoint_000002")  # not the torn one


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_an_address_nothing_answers_at_is_one_line_within_seconds(tmp_path, how):
    """Ray retries a dead cluster address for many minutes; tune-run says so at once, before Ray starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from tests.servers import free_port

    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "experiment": {"name": "nowhere"},
                "data": {"dataset": "synthetic", "num_samples": 100, "image_size": 16},
                "model": {"name": "cnn"},
                "train": {"epochs": 1},
                "tracking": {"enabled": False},
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = ["--address", address] if how == "--address" else []
    r = subprocess.run(
        [str(Path(sys.executable).parent / "tune-run"), "s.yaml", *args],
        cwd=tmp_path,
        timeout=120,
        env={**env, "RAY_ADDRESS": address} if how == "RAY_ADDRESS" else env,
        capture_output=True,
        text=True,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"tune-run: error: s.yaml: --address: no Ray cluster answers at {address}"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written


def test_each_study_shows_its_warnings_once_even_after_another_in_the_same_process():
    """A warning is shown once per study (a search and its final training together), not once per process: a
    second ``run_study`` in one process (a notebook, a benchmark) shows it again."""
    import io

    from search.run._console import StudyConsole, new_study

    shown = []
    for _ in range(2):
        new_study()  # what run_study does as it starts
        for unit in ("trial", "seed"):  # the search, then its final training
            out = io.StringIO()
            console = StudyConsole("s", "val_acc", "max", 2, unit=unit, stream=out, live=False)
            console.warn("no GPU visible to the trials: training on CPU")
            console.warn("no GPU visible to the trials: training on CPU")
            shown.append(out.getvalue().count("no GPU visible"))
    assert shown == [1, 0, 1, 0]
