"""Which Ray a study runs on: its own, unless told to join one (``--address`` or ``RAY_ADDRESS``), even when a
``ray start`` left a cluster on the host that Ray's own default (``ray.init()`` without an address) would join."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent
MEMORY = 3 * 1024**3 + 4096  # the stranger's `--memory`: no Ray started here measures exactly this
SPEC = {
    "experiment": {"name": "own"},
    "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 200},
    "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
    "train": {"epochs": 1, "batch_size": 64},
    "tracking": {"enabled": False},
}


def ray_env() -> tuple[Path, dict[str, str]]:
    """(a fresh RAY_TMPDIR, the environment of commands that use the Ray started there). RAY_AUTH_MODE set:
    whether `ray start` asks for a token must not depend on a ~/.ray/auth_token of this host (Ray sends one only
    to a cluster it found itself, never to a given address)."""
    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    return temp, {
        **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        "RAY_TMPDIR": str(temp),
        "RAY_AUTH_MODE": "disabled",
        # `ray start`'s node drains for up to 30 s on SIGTERM (Ray 2.60, for Kubernetes' preemptions) before it
        # stops its processes: our stop() waited the 30 s out after every study (gpu_pinning: 30 of its 59 s).
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }


def start_stranger(env: dict[str, str], temp: Path) -> tuple[subprocess.Popen, str]:
    """``ray start --head`` as another user of the host would leave it; (its process, its address from the file
    Ray's ``ray.init()`` reads without an address)."""
    return ray_start(env, temp, "--num-cpus=1", f"--memory={MEMORY}", "--object-store-memory=100000000")


def ray_start(env: dict[str, str], temp: Path, *resources: str, tries: int = 2) -> tuple[subprocess.Popen, str]:
    """``ray start --head --block`` with ``resources``; (its process, its address). On a loaded 2-core host Ray's
    own wait for its new node (its GCS answering within Ray's deadline) can run out: that start is tried again."""
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            *resources,
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    current = temp / "ray" / "ray_current_cluster"  # $RAY_TMPDIR/ray/: this test's, not the host's /tmp/ray
    deadline = time.time() + 180
    while not (current.is_file() and current.read_text().strip()):
        if proc.poll() is not None or time.time() > deadline:
            stop(proc)
            out = proc.stdout.read()[-3000:] if proc.stdout else ""
            if tries > 1 and "timed out during startup" in out:
                return ray_start(env, temp, *resources, tries=tries - 1)
            raise AssertionError(f"ray start did not start: {out}")
        time.sleep(0.5)
    return proc, current.read_text().strip()


def stop(proc: subprocess.Popen) -> None:
    """End the stranger: its process group, which holds every Ray process it started (never `ray stop`, which
    stops every Ray on the host)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, 0)  # children left in the group?
        except ProcessLookupError:
            return


def cluster_memory(cwd: Path, name: str, env: dict[str, str], *args: str) -> float:
    """Run the tiny study ``name`` with ``args``; the memory of the cluster it ran on (its study.json)."""
    r = subprocess.run(
        [str(BIN / "tune-run"), "spec.yaml", "--set", f"experiment.name={name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return float(json.loads((cwd / "runs" / name / "study.json").read_text())["cluster"]["memory"])


def test_a_study_joins_a_cluster_on_the_host_only_when_told(tmp_path):
    temp, env = ray_env()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    proc, address = start_stranger(env, temp)
    try:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "from ray._private.services import canonicalize_bootstrap_address as c; print(c(None))",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.stdout.strip() == address, probe  # what Ray's own default would join
        assert cluster_memory(tmp_path, "own", env) != pytest.approx(MEMORY)
        assert cluster_memory(tmp_path, "joined", env, "--address", address) == pytest.approx(MEMORY)
        assert cluster_memory(tmp_path, "joined-env", {**env, "RAY_ADDRESS": address}) == pytest.approx(MEMORY)
    finally:
        stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
