"""A trial that Ray's memory monitor kills for the node's (host) memory ends as ``oom`` and the study goes on.

For real, through the ``tune-run`` command: its Ray runtime starts with the memory monitor's threshold a
few GB above what the machine uses now (``RAY_memory_usage_threshold``, read when Ray starts), and the
test model ``test_host_memory_hog`` (``tests/host_memory/sitecustomize.py``, on PYTHONPATH for this
study's processes only) fills host memory in its first training step until the monitor kills it, as
Ray does to a trial whose batch is too large for the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import mlflow_runs, read_rows

pytestmark = pytest.mark.ray
HERE = Path(__file__).resolve().parent
GB = 2**30

SPEC = {
    "experiment": {"name": "hog"},
    "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 200},
    "model": {"name": "test_host_memory_hog"},
    "train": {"epochs": 1, "batch_size": 32},
    # The hog first, one trial at a time (each asks for the cluster's CPUs, fitted down to what it has):
    # the second trial runs after the kill, in the same Ray runtime.
    "space": {"model.hog": {"grid": [True, False]}},
    "search": {"algorithm": "grid"},
    # One retry, not the default three: the retried hog is killed again (each kill costs a trial's start and
    # several GB filled), and the trial still ends as oom after its retries ran out.
    "resources": {"cpu": 64, "max_failures": 1},
}


@pytest.mark.alone  # its threshold is set from the machine's memory in use: another test's would cross it
def test_trial_killed_by_rays_memory_monitor_is_oom_and_the_study_goes_on(tmp_path):
    (tmp_path / "hog.yaml").write_text(yaml.safe_dump(SPEC))
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    total, available = info["MemTotal"], info["MemAvailable"]
    # Room for Ray's services and two trial processes (about 2 GB) and what other processes on the machine
    # add meanwhile, so that only the hog crosses it.
    headroom = min(5 * GB, available // 2)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_memory_usage_threshold=f"{(total - available + headroom) / total:.3f}",
        RAY_memory_monitor_refresh_ms="100",
        PYTHONPATH=os.pathsep.join([str(HERE / "host_memory"), env.get("PYTHONPATH", ""), str(HERE.parent)]),
    )
    r = subprocess.run(
        [str(Path(sys.executable).parent / "tune-run"), "hog.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    (tmp_path / "out.txt").write_text(out)
    assert r.returncode == 0, out[-3000:]
    rows = {row["model.hog"]: row for row in read_rows(tmp_path / "runs" / "hog" / "trials.csv")}
    assert rows["False"]["status"] == "completed"  # the study went on after the kill
    killed = rows["True"]
    assert killed["status"] == "oom", killed
    assert killed["reason"] == (
        "out of host memory (Ray's memory monitor killed the trial) at batch_size=32, "
        "model=test_host_memory_hog, image_size=8: lower train.batch_size or data.image_size"
    )
    # One line per trial and a hint in the summary, not Ray's page of advice or a traceback.
    assert f"trial {killed['trial_id']} oom: out of host memory" in r.stdout
    assert "restarting it from its last checkpoint (failure 1 of 1 allowed)" in r.stdout  # retried, then oom
    assert "out of memory: 1 trial(s)" in r.stdout and "search.max_concurrent" in r.stdout
    assert "RAY_memory_usage_threshold" not in out and "Traceback" not in out
    _, runs = mlflow_runs(tmp_path / "mlflow.db", "hog")
    tags = {x.data.tags["trial_id"]: x.data.tags for x in runs if x.data.tags.get("role") == "trial"}
    assert tags[killed["trial_id"]]["status"] == "oom" and tags[killed["trial_id"]]["reason"] == killed["reason"]
