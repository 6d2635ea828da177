"""A study whose output storage fills up: one line naming what could not be written and how to go on (exit 1),
no traceback, no half-written file; ``--resume`` continues it once there is space.

The full disk is real: a 4 MiB tmpfs mounted in a mount namespace of its own (``unshare -m``; as root, which CI
is), seen from here through ``/proc/<pid>/root``. Where mounting is not permitted the test skips, saying why.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUNE_RUN = str(Path(sys.executable).parent / "tune-run")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_a_write_refused_for_space_leaves_the_previous_file(tmp_path):
    """write_atomic on storage that refuses the bytes (here the process's file-size limit, EFBIG: Python
    ignores SIGXFSZ): StorageFull naming the file, the old content intact, no temporary file left."""
    target = tmp_path / "study.json"
    target.write_text('{"old": true}')
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from search.store._atomic import StorageFull, write_atomic\n"
        "try:\n"
        f"    write_atomic({str(target)!r}, '{{\"new\": \"' + 'x' * 100000 + '\"}}')\n"
        "except StorageFull as err:\n"
        "    print(err)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{target}: file too large (file system or ulimit -f limit)"
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs in a mount namespace of its own: (the command prefix that enters it, the mount point as
    commands there see it, the same folder as this process sees it)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    for unshare, enter in ((["unshare", "-m"], []), (["unshare", "-r", "-m"], ["-U", "--preserve-credentials"])):  # noqa: B007  (read after the loop breaks)
        holder = subprocess.Popen(
            [*unshare, "sh", "-c", f"mount -t tmpfs -o size=4m tmpfs {mnt} && echo mounted && exec sleep 3600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if holder.stdout.readline().strip() == "mounted":
            break
        holder.wait()
        why = holder.stderr.read().strip()
    else:
        pytest.skip(f"cannot mount a tmpfs in a mount namespace here (needs root or user namespaces): {why}")
    try:
        yield ["nsenter", "-t", str(holder.pid), "-m", *enter, "--"], mnt, Path(f"/proc/{holder.pid}/root{mnt}")
    finally:
        holder.kill()
        holder.wait()


def _fill(folder: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of ``folder``'s file system, as another program filling the disk would. The
    study writes meanwhile (a checkpoint between statvfs and the last chunk): a write that finds the disk full has
    done what was wanted."""
    st = os.statvfs(folder)
    left, chunk = max(0, st.f_bavail * st.f_frsize - leave), b"\0" * 2**20
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while left > 0:
                left -= f.write(chunk[: min(left, len(chunk))])
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    return filler


@pytest.mark.ray
def test_a_full_disk_ends_the_study_in_one_line_then_resume_continues_it(tiny_disk, tmp_path):
    enter, mnt, seen = tiny_disk
    study = "full"
    cmd = [
        TUNE_RUN,
        str(REPO / "spaces" / "quickstart.yaml"),
        "--set",
        f"experiment.output_dir={mnt}/runs",
        "--set",
        f"experiment.name={study}",
        "--set",
        "tracking.enabled=false",
        "--set",
        "search.num_samples=2",
        "--set",
        "train.epochs=6",
        "--set",
        "scheduler.name=fifo",
    ]
    proc = subprocess.Popen(
        [*enter, *cmd], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    folder = seen / "runs" / study
    deadline = time.monotonic() + 240
    # A trial's newest checkpoint, whichever: Tune keeps one (num_to_keep=1), so checkpoint_000000 may come and
    # go between two looks on a loaded machine (CI missed it, and the study ended before the disk filled).
    while not list(folder.glob("trial_*/checkpoint_*/state.pt")):  # an epoch is safe on disk
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    filler = _fill(seen, leave=0)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    m = re.fullmatch(
        rf"tune-run: error: {re.escape(str(mnt))}/runs/{study}(/\S+)?: no space left on device"
        rf"(?: \(.*\))?; free space, then (tune-run .* --resume)",
        line,
    )
    assert m, err[-3000:]
    print(line)
    # Nothing half-written: what the study wrote parses, nothing of ours is truncated or left as a temporary.
    assert json.loads((folder / "study.json").read_text())["spec"]["experiment"]["name"] == study
    assert not list(folder.rglob(".*.tmp")), "no temporary file of ours or of Tune's left behind"
    for state in folder.glob("experiment_state-*.json"):  # Tune's own record: whole
        json.loads(state.read_text())
    for name in ("trials.csv", "best.yaml"):  # whole if written at all
        assert not (folder / name).exists() or (folder / name).read_text().endswith("\n")

    filler.unlink()
    resume = shlex.split(m.group(2))  # the command the line says, with this environment's tune-run
    r = subprocess.run(
        [*enter, TUNE_RUN, *resume[1:]], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    # Tune writes its experiment state and checkpoints through a file system whose files appear whole
    # (search/_tune_fs.py): whenever the disk filled, the last complete state is there and the study continues.
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    errors = [f"{p}: {p.read_text()[-1500:]}" for p in folder.rglob("error.txt")]  # what a trial raised, if any
    assert [(row["status"], row["epochs"]) for row in rows] == [("completed", "6")] * 2, (
        rows,
        errors,
        r.stderr[-3000:],
    )
    assert (folder / "best.yaml").is_file()

    # Final training on the full disk: one line with the command that retrains, no seed folder half-written.
    final = [TUNE_RUN, f"{mnt}/runs/{study}/best.yaml", "--final", "--set", "final.seeds=[0]"]
    filler = _fill(seen, leave=0)
    r = subprocess.run([*enter, *final], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.fullmatch(
        rf"tune-run: error: {re.escape(str(mnt))}/runs/{study}\S*: no space left on device"
        rf"(?: \(.*\))?; free space, then (tune-run .* --final .*--overwrite)",
        r.stderr.strip().splitlines()[-1],
    )
    assert m, r.stderr[-3000:]
    seeds = folder / "final"

    def seed_folders() -> list[str]:  # a seed's folder, or a partial one (hidden); not Tune's own ray/
        return sorted(p.name for p in seeds.iterdir() if p.is_dir() and p.name != "ray") if seeds.exists() else []

    assert seed_folders() == [], "no seed folder, whole or partial"
    filler.unlink()
    r = subprocess.run(
        [*enter, TUNE_RUN, *shlex.split(m.group(1))[1:]],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((seeds / "0" / "metrics.json").read_text())["seed"] == 0
    assert seed_folders() == ["0"]


def test_a_full_disk_stops_tune_compare_in_one_line_with_nothing_half_written(tiny_disk, tmp_path):
    from tests.test_bad_result_files import study_folder

    enter, mnt, seen = tiny_disk
    study = study_folder(tmp_path, "final/metrics.json")
    filler = _fill(seen, leave=0)
    r = subprocess.run(
        [
            *enter,
            str(Path(sys.executable).parent / "tune-compare"),
            str(study),
            "--out",
            f"{mnt}/compare",
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    assert re.fullmatch(
        rf"tune-compare: error: {re.escape(str(mnt))}/compare/\S+: no space left on device"
        rf"(?: \(.*\))?; free space, then run tune-compare again",
        line,
    ), line
    written = [p.name for p in (seen / "compare").rglob("*")] if (seen / "compare").exists() else []
    assert "report.md" not in written and not [n for n in written if n.endswith(".tmp")], written
    filler.unlink()


def test_resume_refuses_a_tune_state_cut_short_by_a_full_disk(tmp_path, backend):
    """Tune rewrites its experiment state in place: cut short by a full disk, Tune's restore would silently
    start a new study. --resume names the file in one line instead (before Ray starts)."""
    from search import resolve
    from search.run._resume import check_resumable as _check_resumable
    from search.spec._schema import SpecError

    spec = resolve(
        {
            "experiment": {"name": "s", "output_dir": str(tmp_path)},
            "data": {"dataset": "digits"},
            "model": {"name": "cnn"},
            "train": {"epochs": 1},
        },
        backend,
    )
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"spec": spec, "spec_given": spec}, default=str))
    state = study / "experiment_state-2026-11-22_09-00-00.json"
    state.write_text('{"trial_data": [["{\\"status\\": \\"RUN')
    with pytest.raises(SpecError) as err:
        _check_resumable("spec.yaml", str(study / "study.json"), spec)
    assert str(err.value).startswith(f"{state}: Ray Tune's record of the study is cut short")
    assert str(err.value).endswith("start the study again with tune-run spec.yaml --overwrite")
    assert "\n" not in str(err.value)
    state.write_text('{"trial_data": []}')
    _check_resumable("spec.yaml", str(study / "study.json"), spec)  # whole: resumable


def test_atomic_writes_keep_the_usual_file_mode(tmp_path):
    # mkstemp makes 0600 files; results on a shared cluster file system must stay readable by the team.
    from search.store._atomic import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "study.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "study.json").stat().st_mode & 0o777 == 0o644


def test_tunes_own_snapshot_race_is_not_shown_but_other_sync_errors_are():
    """Tune's upload of a state snapshot can list its searcher's temporary file just before Tune renames it
    (FileNotFoundError, logged with a traceback; the next snapshot uploads it all again): hidden. A file
    missing for any other reason is still shown."""
    import io
    import logging

    from search.store._atomic import HideSnapshotRaceLogs

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(HideSnapshotRaceLogs())
    log = logging.getLogger("ray.tune.execution.experiment_state.test")
    log.addHandler(handler)
    try:
        for gone in (".3bc4-tmp-searcher-state-2026-12-02_06-22-04.pkl", "trial_00000/result.json"):
            try:
                raise FileNotFoundError(f"[Errno 2] Failed to open local file '/tmp/ray/driver_artifacts/{gone}'")
            except FileNotFoundError:
                log.error("Saving experiment state to storage at '/tmp/runs/x' failed with exception: ", exc_info=True)
    finally:
        log.removeHandler(handler)
    shown = out.getvalue()
    assert "-tmp-searcher-state" not in shown
    assert shown.count("Saving experiment state") == 1 and "trial_00000/result.json" in shown
