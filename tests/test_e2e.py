"""End to end on a real Ray runtime and a real MLflow store (SQLite), on real (built-in or shared) images."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pandas as pd
import pytest
import yaml

import trainables
from search import resolve, run_study
from search.store._tune_snapshot import restore_snapshot
from tests.conftest import README, console_env, mlflow_runs, read_rows, small_spec

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def tune_run(*args, cwd, timeout=600, python_flags=(), **kw):
    """``tune-run ARGS`` as a user runs it: the console script, in ``cwd`` (``python_flags``: run by this
    interpreter with those flags, e.g. ``-X importtime``, which the Ray processes it starts do not inherit); without
    what this process's in-process studies set in its environment (console_env)."""
    env = console_env()
    script = str(Path(sys.executable).parent / "tune-run")
    return subprocess.run(
        [*([sys.executable, *python_flags] if python_flags else []), script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def test_infeasible_and_failing_trials_are_recorded_and_the_study_goes_on(tmp_path, ray_session):
    spec = small_spec(
        tmp_path,
        "feasibility",
        space={"model.num_heads": {"grid": [2, 3]}, "train.lr": {"grid": [3e-3, 1.0e9]}},
        train={"epochs": 2, "grad_clip": 0.0},
    )
    # num_heads=3 does not divide embed 16 (infeasible); lr=1e9 diverges to NaN loss, which is still a result.
    res = run_study(spec, trainables, file="feasibility.yaml", log=lambda *_: None)
    rows = {(r["model.num_heads"], r["train.lr"]): r for r in res.rows}
    assert rows[(3, 3e-3)]["status"] == "infeasible"
    assert "embed_dim must be divisible by num_heads" in rows[(3, 3e-3)]["reason"]
    assert rows[(2, 3e-3)]["status"] == "completed"
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "feasibility")
    tags = [x.data.tags for x in runs if x.data.tags.get("role") == "trial"]
    assert sum(t["status"] == "infeasible" for t in tags) == 2
    assert all("reason" in t for t in tags if t["status"] == "infeasible")

    # A trial that raises (missing weight file) is recorded as an error with its reason; the others finish.
    spec2 = small_spec(
        tmp_path,
        "failing",
        model={"name": "resnet18", "stem": "cifar"},
        space={"model.pretrained": {"grid": [False, str(tmp_path / "missing.pth")]}},
        train={"epochs": 1},
    )
    res2 = run_study(spec2, trainables, file="failing.yaml", log=lambda *_: None)
    by = {r["model.pretrained"]: r for r in res2.rows}
    assert by[False]["status"] == "completed"
    err = by[str(tmp_path / "missing.pth")]
    assert err["status"] == "error" and "does not exist" in err["reason"]
    # Ended as a result, not retried (resources.max_failures, default 3, is for lost nodes): Tune saw no failure.
    assert not list(res2.out_dir.glob("trial_*/error.txt"))
    _, runs2 = mlflow_runs(tmp_path / "mlflow.db", "failing")
    assert sorted(x.info.status for x in runs2 if x.data.tags.get("role") == "trial") == ["FAILED", "FINISHED"]


def test_a_study_where_no_trial_produced_the_metric_ends_in_one_line_with_status_1(tmp_path, ray_session, cli):
    """Every trial infeasible (num_heads 3 does not divide embed 16): the study's files are written, each trial with
    its reason, but there is no best configuration, so no best.yaml and no final training; it was 0 and silent."""
    spec = {
        "experiment": {"name": "hopeless", "output_dir": "runs"},
        "data": {"dataset": "synthetic", "image_size": 16, "num_classes": 4, "num_samples": 400},
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        "train": {"epochs": 2, "batch_size": 64},
        "space": {"model.num_heads": {"grid": [3, 5]}},
        "tracking": {"enabled": False},
    }
    (tmp_path / "hopeless.yaml").write_text(yaml.safe_dump(spec))
    r = cli("tune-run", "hopeless.yaml", cwd=tmp_path)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.strip().splitlines()[-1] == (
        "tune-run: error: hopeless.yaml: no trial produced val_acc (2 infeasible), so there is no best configuration "
        "to export or train; each trial's reason is in runs/hopeless/trials.csv"
    ), r.stderr[-2000:]
    assert "  best:        none (no trial produced a metric)" in r.stdout
    out = tmp_path / "runs" / "hopeless"
    rows = read_rows(out / "trials.csv")
    assert [row["status"] for row in rows] == ["infeasible"] * 2
    assert all("embed_dim must be divisible by num_heads" in row["reason"] for row in rows)
    assert not (out / "best.yaml").exists() and not (out / "final").exists()


def test_hyperband_pauses_and_resumes_from_checkpoint(tmp_path, ray_session):
    spec = small_spec(
        tmp_path,
        "hb",
        train={"epochs": 9},
        space={"train.lr": {"loguniform": [1e-4, 1e-2]}},
        search={"num_samples": 6, "seed": 1},
        scheduler={"name": "hyperband", "reduction_factor": 3},
    )
    res = run_study(spec, trainables, file="hb.yaml", log=lambda *_: None)
    restored = 0
    for trial_dir in res.out_dir.glob("trial_*"):
        df = pd.read_csv(trial_dir / "progress.csv")
        # The epoch count never restarts: epochs run 1, 2, … without repeats across pauses.
        assert list(df["epoch"]) == list(range(1, len(df) + 1))
        restored += int((df["iterations_since_restore"] < df["training_iteration"]).any())
    assert restored >= 1, "no trial was paused and resumed"
    assert any(r["epochs"] == 9 for r in res.rows)


BRANCH = {
    "choice": [
        {
            "name": "vit",
            "model.name": "vit",
            "model.patch_size": 4,
            "model.embed_dim": 16,
            "model.depth": 1,
            "model.num_heads": 2,
            "model.mlp_dim": {"choice": [16, 32]},
        },
        {
            "name": "cnn",
            "model.name": "cnn",
            "model.conv1": {"choice": [4, 8]},
            "model.conv2": 8,
            "model.conv3": 8,
            "model.hidden": 16,
        },
    ]
}


@pytest.mark.parametrize("algorithm", ["random", "optuna", "bohb"])
def test_conditional_space_samples_only_the_chosen_familys_keys(tmp_path, ray_session, algorithm):
    """Each searcher on a space of two model families, with the scheduler it pairs with: BOHB with Hyperband, Optuna's
    TPE with ASHA, two trials at a time."""
    sched = {"bohb": {"name": "hyperband"}, "optuna": {"name": "asha", "grace_period": 1}}.get(
        algorithm, {"name": "fifo"}
    )
    search = {
        "algorithm": algorithm,
        "num_samples": 8,
        "seed": 3,
        **({"max_concurrent": 2} if algorithm == "optuna" else {}),
    }
    spec = small_spec(
        tmp_path,
        f"cond-{algorithm}",
        train={"epochs": 1},
        space={"family": BRANCH, "train.lr": {"loguniform": [1e-4, 1e-2]}},
        search=search,
        scheduler=sched,
    )
    res = run_study(spec, trainables, file="cond.yaml", log=lambda *_: None)
    assert len(res.rows) == 8 and all(r["status"] == "completed" for r in res.rows), res.rows
    assert all(1e-4 <= r["train.lr"] <= 1e-2 for r in res.rows)
    fams = {r["family"] for r in res.rows}
    assert fams == {"vit", "cnn"}, fams
    for r in res.rows:
        if r["family"] == "vit":
            assert r["model.mlp_dim"] in (16, 32) and r["model.conv1"] == ""
        else:
            assert r["model.conv1"] in (4, 8) and r["model.mlp_dim"] == "" and r["model.name"] == "cnn"
    # MLflow child runs hold the flat view: the chosen family's keys, not the other family's.
    _, runs = mlflow_runs(tmp_path / "mlflow.db", f"cond-{algorithm}")
    params = [x.data.params for x in runs if x.data.tags.get("role") == "trial"]
    assert len(params) == 8 and all(("model.conv1" in p) == (p["family"] == "cnn") for p in params)
    best = yaml.safe_load((res.out_dir / "best.yaml").read_text())
    assert best["model"]["name"] == res.best["family"] and best["space"] == {}
    assert ("conv1" in best["model"]) == (best["model"]["name"] == "cnn")


KILLME = {
    "experiment": {"name": "killme"},
    # 1,500 images (was 3,000): a trial still spans seconds of epochs, so the signals land with trials running
    # and pending (two at a time, six in all), at half the training.
    "data": {"dataset": "synthetic", "image_size": 24, "num_classes": 4, "num_samples": 1500},
    "model": {"name": "cnn", "conv1": 16, "conv2": 32, "conv3": 32, "hidden": 32},
    "train": {"epochs": 4, "batch_size": 32},
    "space": {"train.lr": {"grid": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3]}},
    "search": {"algorithm": "grid"},
}


def start_until_finished(
    tmp_path: Path, *args: str, count: int, before: frozenset[str] = frozenset()
) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start ``tune-run ARGS`` on the 6-trial killme study (the console script); return once ``count`` of its
    trials have finished in this run (not among ``before``; their MLflow run ids by trial id, ``before``'s too)."""
    if not (tmp_path / "killme.yaml").exists():
        (tmp_path / "killme.yaml").write_text(yaml.safe_dump(KILLME))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tune-run"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    db = tmp_path / "mlflow.db"
    deadline = time.time() + 600  # generous: a loaded CI machine; the loop ends as soon as they finish
    while time.time() < deadline:
        time.sleep(1)
        if proc.poll() is not None:
            raise AssertionError(f"study ended before it could be stopped: {proc.stdout.read()[-3000:]}")
        # Read MLflow's store only once tune-run has created it (study.json comes after): two processes
        # creating one SQLite schema at once can fail either of them.
        if db.exists() and (tmp_path / "runs" / "killme" / "study.json").exists():
            try:
                _, runs = mlflow_runs(db, "killme")
            except Exception:  # the store is being created
                continue
            done = {
                x.data.tags["trial_id"]: x.info.run_id
                for x in runs
                if x.data.tags.get("role") == "trial" and x.info.status == "FINISHED"
            }
            if len(done.keys() - before) >= count:
                return proc, done
    raise AssertionError(f"no {count} trials finished in time")


def assert_resumed_whole(tmp_path: Path, finished_before: dict[str, str]) -> None:
    r = tune_run("killme.yaml", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "runs" / "killme" / "trials.csv")
    assert len(rows) == 6 and all(row["status"] == "completed" for row in rows), rows
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "killme")
    children = [x for x in runs if x.data.tags.get("role") == "trial"]
    assert len(children) == 6, "a resumed study must not add duplicate MLflow runs"
    assert len({x.data.tags["trial_id"] for x in children}) == 6
    assert len([x for x in runs if x.data.tags.get("role") == "study"]) == 1
    for run_id in finished_before.values():
        # Finished trials are kept as they were, not run again.
        assert [m.step for m in c.get_metric_history(run_id, "val_acc")] == [1, 2, 3, 4]
    # Tune's last checkpoint has its snapshot (what a resume after a kill mid-upload restores), and agrees with it.
    study = tmp_path / "runs" / "killme"
    sessions = sorted(p.name.removeprefix("experiment_state-") for p in study.glob("experiment_state-*.json"))
    assert len(sessions) == 3 and (study / f"study-state-{sessions[-1]}").is_file()
    assert restore_snapshot(str(study)) == []


@pytest.mark.timeout(600)  # three starts of the console script on a loaded CI machine, each with its own Ray
def test_sigterm_then_a_killed_driver_each_resume_without_losing_or_duplicating(tmp_path):
    """A job scheduler's SIGTERM (or `timeout`) stops the study as Ctrl-C does: the finished trials are
    in trials.csv, best.yaml and study.json, the rest are `unfinished`. Its --resume is then killed outright
    (SIGKILL to the driver and the Ray processes it started) after one more trial finished, and a second --resume
    completes the study: no finished trial is run again, no MLflow run is added twice."""
    proc, finished_before = start_until_finished(tmp_path, "killme.yaml", count=2)
    proc.send_signal(signal.SIGTERM)  # the driver only, as a scheduler would
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    assert "Continue with: tune-run killme.yaml --resume" in out and "Traceback" not in out, out[-3000:]
    study = tmp_path / "runs" / "killme"
    rows = {row["trial_id"]: row for row in read_rows(study / "trials.csv")}
    # Every trial Tune had created: on a loaded host (the other worker's tests beside it) the grid's 6th may not
    # have been yet, and the resumes below create it (assert_resumed_whole: all 6, each once).
    assert len(rows) <= 6
    assert all(rows[tid]["status"] == "completed" and rows[tid]["epochs"] == "4" for tid in finished_before)
    assert {row["status"] for row in rows.values()} <= {"completed", "unfinished"}
    assert any(row["status"] == "unfinished" for row in rows.values())
    assert (study / "best.yaml").is_file() and json.loads((study / "study.json").read_text())["interrupted"]
    if _alive(proc.pid):  # Ray's processes, if any are left
        os.killpg(proc.pid, signal.SIGKILL)

    # What finished before the resume, by MLflow (a trial may have finished while SIGTERM stopped the study):
    # the resumed run is killed once a trial not among them finished.
    _, runs = mlflow_runs(tmp_path / "mlflow.db", "killme")
    before = frozenset(
        x.data.tags["trial_id"] for x in runs if x.data.tags.get("role") == "trial" and x.info.status == "FINISHED"
    )
    assert set(finished_before) <= before and len(before) < 6
    proc, finished = start_until_finished(tmp_path, "killme.yaml", "--resume", count=1, before=before)
    assert finished_before.items() <= finished.items()  # the trials finished before kept their runs
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    time.sleep(2)
    assert_resumed_whole(tmp_path, finished)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.timeout(600)  # a real 32 px ViT's smoke search and final training, tested on 1,000 CIFAR test images
def test_vit_smoke_on_shared_cifar10(cifar_root, tmp_path, ray_session, cli):
    r = cli("tune-run", str(REPO / "spaces" / "vit.yaml"), "--smoke", "--set", f"data.root={cifar_root}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "runs" / "vit-smoke" / "trials.csv")
    # vit.yaml sizes its trials from a budget (none here: one sample); with two, ASHA may stop the second at
    # epoch 1 when it reports below the first. Every trial ends by the rules, one trains the smoke's 2 epochs.
    assert 1 <= len(rows) <= 2 and {row["status"] for row in rows} <= {"completed", "stopped"}, rows
    assert all(row["epochs"] == ("2" if row["status"] == "completed" else "1") for row in rows), rows
    assert any(row["status"] == "completed" for row in rows)
    assert max(float(row["best_val_acc"]) for row in rows) > 0.1  # above chance on 10 classes
    assert "resources.gpu=0.25 but the cluster has no GPU" in r.stdout
    # vit.yaml has a final section: its smoke trains one seed on at most 64 images per class and tests it.
    final = json.loads((tmp_path / "runs" / "vit-smoke" / "final" / "metrics.json").read_text())
    assert final["seeds"] == [0] and 0.0 <= final["per_seed"][0]["accuracy"] <= 1.0


PARETO_SMOKE = "tune-run spaces/cnn-vs-vit-pareto.yaml --smoke --set data.root=/tmp/cifar10"
PARETO_FINAL = "tune-run runs/cnn-vs-vit-pareto-smoke/best.yaml --final"
PARETO_PICK = "tune-run --pick 'latency_ms<=10' runs/cnn-vs-vit-pareto-smoke"


@pytest.mark.timeout(600)  # two real CIFAR trials (a CNN or a ViT each), then three final seeds tested on 1,000 images
def test_readme_multi_objective_study_on_shared_cifar10(cifar_root, tmp_path, ray_session, cli):
    """README's multi-objective commands, in a fresh folder (the spec copied in: spaces/ relative to it), with the
    CIFAR-10 tree where this session extracted it: a front, its plot and hypervolume, best.yaml the picked point,
    and --final on it."""
    assert PARETO_SMOKE in README and PARETO_FINAL in README and PARETO_PICK in README
    (tmp_path / "spaces").mkdir()
    shutil.copy(REPO / "spaces" / "cnn-vs-vit-pareto.yaml", tmp_path / "spaces")
    args = shlex.split(PARETO_SMOKE.replace("/tmp/cifar10", str(cifar_root)))[1:]
    r = cli("tune-run", *args, cwd=tmp_path)
    out = tmp_path / "runs" / "cnn-vs-vit-pareto-smoke"
    all_rows = read_rows(out / "trials.csv")
    # A trial whose one-image latency crosses the spec's 50 ms limit trains nothing: the constraint doing its job.
    # With nothing else running the spec's models take 1.5-4 ms here (BENCHMARKS.md); in a full suite run, with the
    # other xdist worker's trials on the same 2 cores, two smoke ViTs measured 11.6 and 59.7 ms (each of a
    # forward's small ops waits for a core). Such a row must say so, with its value.
    over = [row for row in all_rows if row["status"] == "infeasible"]
    assert all(
        re.fullmatch(r"over experiment\.constraints: latency_ms (\S+) > 50", row["reason"])
        and float(row["reason"].split()[-3]) > 50
        for row in over
    ), over
    rows = [row for row in all_rows if row not in over]
    assert len(all_rows) == 2 and all(row["status"] == "completed" for row in rows), all_rows
    if not rows:  # both over the limit: no trial produced the metric, one line and exit status 1
        assert r.returncode == 1 and "no trial produced val_acc (2 infeasible)" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(float(row["latency_ms"]) > 0 and int(row["params"]) > 0 for row in rows)
    assert "1" in {row["pareto"] for row in rows} and (out / "pareto.png").stat().st_size > 1000
    front = json.loads((out / "study.json").read_text())["pareto"]
    assert front["objectives"] == {"val_acc": "max", "latency_ms": "min"} and front["hypervolume"] >= 0
    assert "pareto front (val_acc vs latency_ms): " in r.stdout
    study = r
    r = cli("tune-run", *shlex.split(PARETO_PICK)[1:], cwd=tmp_path)
    within = [row for row in rows if float(row["latency_ms"]) <= 10]
    if within:  # the most accurate of them, as a spec that runs as is
        assert r.returncode == 0 and "  spec:  runs/cnn-vs-vit-pareto-smoke/pick-latency_ms-le-10.yaml" in r.stdout
        picked = yaml.safe_load((out / "pick-latency_ms-le-10.yaml").read_text())
        top = max(within, key=lambda row: float(row["final_val_acc"]))
        assert picked["model"]["name"] == top["model.name"] and picked["space"] == {}
    else:  # this machine ran both slower: nothing written, and the line says so
        assert r.returncode == 1 and "has latency_ms <= 10: nothing written" in r.stderr
    fast = [row for row in rows if float(row["latency_ms"]) <= 5]
    if not fast:  # a slow machine: nothing within the pick's 5 ms, so no best.yaml, and the log says why
        assert "experiment.pick: no compared trial has latency_ms<=5: no best.yaml" in study.stdout
        assert "no compared trial meets experiment.pick (latency_ms<=5), so there is no best.yaml" in study.stdout
        assert not (out / "best.yaml").exists()
        return
    best = yaml.safe_load((out / "best.yaml").read_text())
    winner = max(fast, key=lambda row: float(row["final_val_acc"]))
    assert best["model"]["name"] == winner["model.name"]
    r = cli("tune-run", *shlex.split(PARETO_FINAL)[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((out / "final" / "metrics.json").read_text())
    # A smoke study's best.yaml keeps the smoke's one final seed (spaces/cnn-vs-vit-pareto.yaml names three).
    assert final["seeds"] == [0] and 0.0 <= final["per_seed"][0]["accuracy"] <= 1.0


def test_a_console_studys_driver_never_imports_torch_and_writes_no_tensorboard_files(tmp_path):
    """The driver of ``tune-run`` searches and exports without torch (the trial processes train): Tune's default
    TensorBoard logger, which imports tensorboardX and torch with it, is not added; each trial keeps the result
    files Tune's results and trials.csv are read from. With ``--verbose`` (which adds only Ray's own output), Ray's
    tables come back beside the console's lines."""
    spec = {
        "experiment": {"name": "light"},
        "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 128},
        "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
        "train": {"epochs": 2},
        "space": {"train.lr": {"grid": [1e-3, 3e-3]}},
        "search": {"algorithm": "grid"},
        "tracking": {"enabled": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = tune_run("s.yaml", "--verbose", cwd=tmp_path, python_flags=("-X", "importtime"))  # the driver's imports only
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {x.split("|")[-1].strip() for x in r.stderr.splitlines() if x.startswith("import time:")}
    assert "ray.tune" in imported and not imported & {"torch", "tensorboardX"}, sorted(imported & {"torch"})
    assert "Trial status" in r.stdout and "Configuration for experiment" in r.stdout
    assert "trial " in r.stdout and "Study 'light': 2 trials" in r.stdout  # the console's lines stay
    trials = list((tmp_path / "runs" / "light").glob("trial_*"))
    assert (
        len(trials) == 2
        and [row["status"] for row in read_rows(tmp_path / "runs" / "light" / "trials.csv")] == ["completed"] * 2
    )
    for trial in trials:
        assert (trial / "result.json").stat().st_size > 0 and (trial / "progress.csv").stat().st_size > 0
        assert not list(trial.glob("events.out.tfevents*")), list(trial.iterdir())


def test_search_final_compare_end_to_end(tmp_path, ray_session):
    """Two model families: search (one selecting on val_f1_macro), final training with seeds, then one
    comparison table, report and verdict."""
    from search.compare import main as compare_main
    from search.run._final import run_final

    for name, model, metric in (
        ("cnnfam", {"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16}, "val_f1_macro"),
        (
            "vitfam",
            {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
            "val_acc",
        ),
    ):
        spec = small_spec(
            tmp_path,
            name,
            model=model,
            space={"train.lr": {"grid": [1e-3, 3e-3]}},
            train={"epochs": 2},
            final={"seeds": [0, 1], "bootstrap": 100},
            experiment={"metric": metric},
        )
        res = run_study(spec, trainables, file=f"{name}.yaml", log=lambda *_: None)
        # The study selects on its metric: best.yaml is the finished trials.csv row with the highest final_<metric>.
        rows = read_rows(res.out_dir / "trials.csv")
        top = max((r for r in rows if r["status"] == "completed"), key=lambda r: float(r[f"final_{metric}"]))
        text = (res.out_dir / "best.yaml").read_text()
        head = text.splitlines()
        assert f"trial {top['trial_id']}, {metric}={float(top[f'final_{metric}']):.4f} at its last epoch" in head[0]
        assert head[1] == f"# Picked by final {metric} among the 2 trial(s) that ran their whole schedule."
        best = resolve(yaml.safe_load(text), trainables)
        assert best["experiment"]["metric"] == metric
        assert best["train"]["lr"] == float(top["train.lr"])
        summary = run_final(best, trainables, file=str(res.out_dir / "best.yaml"), log=lambda *_: None)
        assert Path(summary["out_dir"]) == res.out_dir / "final"
        assert summary["search_budget"]["epochs"] == 4
        assert all((res.out_dir / "final" / str(seed) / "predictions.npz").is_file() for seed in (0, 1))
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "cnnfam")
    trial = next(r for r in runs if r.data.tags.get("role") == "trial")
    assert len(c.get_metric_history(trial.info.run_id, "val_f1_macro")) == 2  # per epoch, as val_acc
    final = next(r for r in runs if r.data.tags.get("role") == "final")
    assert "final/1/predictions.npz" in [f.path for f in c.list_artifacts(final.info.run_id, "final/1")]
    out = tmp_path / "cmp"
    rc = compare_main([str(tmp_path / "runs" / "cnnfam"), str(tmp_path / "runs" / "vitfam"), "--out", str(out)])
    assert rc == 0
    md = (out / "report.md").read_text()
    assert "cnnfam" in md and "vitfam" in md and "test acc (95% CI)" in md and "MFLOPs/img" in md
    verdict = md[md.index("## Verdict") :]
    assert "- cnnfam-best vs vitfam-best: " in verdict and "80 test images, 2 and 2 seeds" in verdict
    assert "  - macro F1 (selection metric val_f1_macro, higher is better): " in verdict
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html
    for png in ("curves.png", "pareto.png", "confusion.png"):
        assert (out / png).stat().st_size > 1000
    # MLflow experiment names work as sources too, predictions included.
    rc = compare_main(
        ["cnnfam", "vitfam", "--out", str(tmp_path / "cmp2"), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    )
    md2 = (tmp_path / "cmp2" / "report.md").read_text()
    assert rc == 0 and "cnnfam" in md2 and verdict.splitlines()[2] in md2  # the same verdict line
    assert compare_main([str(tmp_path / "nowhere")]) == 2


def test_streamed_dataset_search_and_final(tmp_path, ray_session):
    """A set read from disk every epoch (data.storage: stream): trials decode with loader workers inside
    Ray's workers, and the final model is tested on the streamed test split."""
    from search.run._final import run_final
    from tests.conftest import make_image_tree

    make_image_tree(tmp_path / "tree", {"a": 40, "b": 40, "c": 40}, size=12, split="train")
    make_image_tree(tmp_path / "tree", {"a": 10, "b": 10, "c": 10}, size=12, split="test", seed=1)
    spec = small_spec(
        tmp_path,
        "streamed",
        model={"name": "cnn", "conv1": 8, "conv2": 8, "conv3": 8, "hidden": 16},
        data={
            "dataset": "imagefolder",
            "root": str(tmp_path / "tree"),
            "image_size": 12,
            "storage": "stream",
            "workers": 2,
            "augment": {"hflip": 0.5},
        },
        space={"train.lr": {"grid": [3e-3, 1e-2]}},
        train={"epochs": 3, "batch_size": 16},
        resources={"cpu": 1},
        final={"seeds": [0], "bootstrap": 50},
    )
    lines: list[str] = []
    res = run_study(spec, trainables, file="streamed.yaml", log=lambda *a: lines.append(" ".join(map(str, a))))
    sizes = [re.match(r"data: imagefolder, (\d+) train \+ (\d+) val \+ 30 test images, ", line) for line in lines]
    assert any(m and int(m[1]) + int(m[2]) == 120 and "streamed from disk" in m.string for m in sizes), lines
    assert [r["status"] for r in res.rows] == ["completed", "completed"]
    assert max(float(r["best_val_acc"]) for r in res.rows) > 0.6  # 3 colour-coded classes: well above chance
    best = resolve(yaml.safe_load((res.out_dir / "best.yaml").read_text()), trainables)
    assert best["data"]["storage"] == "stream"
    summary = run_final(best, trainables, file=str(res.out_dir / "best.yaml"), log=lambda *_: None)
    assert not summary["errors"] and summary["summary"]["accuracy"]["mean"] > 0.6
    seed0 = json.loads((Path(summary["out_dir"]) / "0" / "metrics.json").read_text())
    assert seed0["test"]["n"] == 30  # the test/ folder, read from disk


class WatchedBackend:
    """The real trial backend, keeping only a weak reference to the set the driver decoded."""

    def __init__(self) -> None:
        self.ref = None

    def prepare(self, spec):
        pools = trainables.prepare(spec)
        self.ref = weakref.ref(pools.train_x)
        return pools

    def __getattr__(self, name):
        return getattr(trainables, name)


def driver_copy_alive_while_trials_run(out: Path, backend: WatchedBackend, run) -> bool:
    """Whether the driver still held its decoded set once a trial had reported (so while trials ran)."""
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not seen and not done.is_set():
            if any(p.stat().st_size > 0 for p in out.glob("**/progress.csv")):
                seen.append(backend.ref() is not None)
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()
    assert seen, "no trial reported while the study ran"
    return seen[0]


def test_driver_frees_its_copy_of_the_data_while_trials_run(tmp_path, ray_session):
    # A study's memory is one copy of the set (in Ray's object store), not that plus the driver's.
    from search.run._final import run_final

    spec = small_spec(
        tmp_path,
        "memory",
        train={"epochs": 4},
        final={"seeds": [0], "epochs": 4},
        model={"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
    )
    backend = WatchedBackend()
    study = lambda: run_study(spec, backend, file="memory.yaml", log=lambda *_: None)  # noqa: E731
    assert driver_copy_alive_while_trials_run(tmp_path / "runs", backend, study) is False
    final = lambda: run_final(spec, backend, file="memory.yaml", out=tmp_path / "final", log=lambda *_: None)  # noqa: E731
    assert driver_copy_alive_while_trials_run(tmp_path / "final", backend, final) is False


def test_a_diverged_final_seed_is_an_error_and_not_retried(tmp_path, ray_session):
    """Divergence repeats on any node: the seed ends as an error with its reason (a result it reports), not as
    an exception Tune would retry resources.max_failures times."""
    from search.run._final import run_final

    spec = small_spec(
        tmp_path,
        "nanfinal",
        train={"epochs": 1, "lr": 1.0e9, "grad_clip": 0.0},
        final={"seeds": [0], "epochs": 1},
        model={"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
    )
    summary = run_final(spec, trainables, file="nanfinal.yaml", out=tmp_path / "final", log=lambda *_: None)
    assert summary["seeds"] == [] and len(summary["errors"]) == 1
    assert summary["failed_seeds"] == [0] and summary["seeds_planned"] == [0]  # read as: failed 1 time in 1
    assert "final seed 0: training loss became" in summary["errors"][0]
    assert not list((tmp_path / "final").glob("ray/*/error.txt"))  # Tune saw no failure: nothing retried
    _, runs = mlflow_runs(tmp_path / "mlflow.db", "nanfinal")
    seeds = [r for r in runs if r.data.tags.get("role") == "final-seed"]
    assert len(seeds) == 1 and seeds[0].info.status == "FAILED" and seeds[0].data.tags["status"] == "error"


def test_final_seeds_the_budget_left_no_time_are_reported_not_trained_not_failed(tmp_path, ray_session, capsys):
    """A wall-clock budget's seeds that can start only after most of their share has passed (a slower machine
    than the probe said) do not train one epoch to be averaged in with their siblings: each is recorded as not
    trained, with why, and is neither a final model nor a failure of the recipe. Here the deadline has passed
    before any seed starts (8 s left is what follows training)."""
    from search.report._verdict import failed_line
    from search.run._final import run_final
    from search.run._summary import final_summary

    spec = small_spec(
        tmp_path,
        "late",
        train={"epochs": 2},
        final={"seeds": [0, 1]},
        model={"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
    )
    left = {"budget": "60s", "available": 60.0, "deadline": time.monotonic() + 8.0}
    summary = run_final(spec, trainables, file="late.yaml", out=tmp_path / "final", log=lambda *_: None, budget=left)
    assert (summary["seeds"], summary["failed_seeds"], summary["errors"]) == ([], [], [])
    assert summary["not_trained_seeds"] == [0, 1] and summary["seeds_planned"] == [0, 1]
    assert (
        summary["not_trained_reason"].startswith("final seed ")
        and "share were left before" in summary["not_trained_reason"]
    )
    assert not (tmp_path / "final" / "0").exists() and not (tmp_path / "final" / "1").exists()
    capsys.readouterr()
    final_summary(summary, "late.yaml")
    assert "seeds [0, 1] of 2 not in these numbers: final seed " in capsys.readouterr().out
    assert (
        failed_line(summary)
        == "late: 2 of 2 not trained for want of time (seeds 0, 1); the comparison is of the 0 that trained"
    )
    _, runs = mlflow_runs(tmp_path / "mlflow.db", "late")
    seeds = [r for r in runs if r.data.tags.get("role") == "final-seed"]
    assert sorted(r.data.tags["status"] for r in seeds) == ["not_trained"] * 2
    assert all(r.info.status == "FINISHED" for r in seeds)


def test_final_overwrite_keeps_each_old_model_until_its_replacement_is_complete(tmp_path, ray_session):
    """--overwrite retrains: a seed whose new model fails keeps its old one (reported, not in the numbers); once a
    retrain runs to its end, the folder holds exactly its own seeds."""
    from search.run._final import run_final

    def final(seeds, **train):
        spec = small_spec(
            tmp_path,
            "again",
            train={"epochs": 1, **train},
            final={"seeds": seeds, "epochs": 1, "bootstrap": 0},
            model={"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
        )
        return run_final(spec, trainables, file="again.yaml", out=out, overwrite=True, log=lambda *_: None)

    out = tmp_path / "final"
    assert final([0, 1])["seeds"] == [0, 1]
    models = {s: (out / str(s) / "model.safetensors").read_bytes() for s in (0, 1)}
    failed = final([0, 1], lr=1.0e9, grad_clip=0.0)  # every new seed diverges
    assert failed["seeds"] == [] and len(failed["errors"]) == 2 and failed["previous_models"] == [0, 1]
    assert {s: (out / str(s) / "model.safetensors").read_bytes() for s in (0, 1)} == models
    redone = final([0], lr=3e-2)
    assert redone["seeds"] == [0] and redone["previous_models"] == []
    assert (out / "0" / "model.safetensors").read_bytes() != models[0] and not (out / "1").exists()


def test_sigint_during_final_training_keeps_finished_seeds_and_reports_the_rest(tmp_path):
    """Ctrl-C while `tune-run --final` trains its seeds one after another (each asks for the whole cluster):
    the seed that finished is a final model in the summary, the others are reported unfinished, exit 130,
    and the last line says how to train them again."""
    spec = {
        **{k: v for k, v in KILLME.items() if k not in ("space", "search")},
        "experiment": {"name": "final-int"},
        "train": {"epochs": 3, "batch_size": 32},
        "resources": {"cpu": 64},
        "final": {"seeds": [0, 1, 2], "bootstrap": 0},
    }
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tune-run"), "f.yaml", "--final"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    final = tmp_path / "runs" / "final-int" / "final"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 600
    while not any(ln.startswith("seed 0 completed") for ln in list(lines)):  # Tune has ended seed 0
        assert proc.poll() is None and time.time() < deadline, "final training ended before it could be stopped"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    reader.join(timeout=60)
    out = "".join(lines)
    if _alive(proc.pid):  # Ray's processes, if any are left
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "Ray dashboard: off (TUNE_RUN_DASHBOARD=0)" in out  # the test session's setting (conftest), obeyed
    summary = json.loads((final / "metrics.json").read_text())
    assert 0 in summary["seeds"] and summary["unfinished"] and 0 not in summary["unfinished"], summary["unfinished"]
    assert set(summary["seeds"]) | set(summary["unfinished"]) == {0, 1, 2}
    assert (final / "0" / "model.safetensors").is_file()
    assert f"Interrupted: seeds {summary['unfinished']} unfinished" in out and "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1].endswith("Train them again with: tune-run f.yaml --final --overwrite")
