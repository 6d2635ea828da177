"""Results users can defend, on a real Ray runtime and MLflow store: statuses, infeasible trials, PBT."""

from __future__ import annotations

from pathlib import Path

import pytest

import trainables
from search import run_study
from tests.conftest import mlflow_runs, read_rows, small_spec

pytestmark = pytest.mark.ray


def trial_runs(db: Path, experiment: str) -> list:
    return [r for r in mlflow_runs(db, experiment)[1] if r.data.tags.get("role") == "trial"]


def test_trials_csv_and_mlflow_agree_on_each_trials_status(tmp_path, ray_session):
    # short: its own train.epochs (1) is its full length, though the spec says 3: completed.
    # flat: lr 1e-30 leaves the weights (and val_loss) unchanged, so early stopping (patience 1) ends it
    # after epoch 2 of 3: early_stopped (by the engine), not stopped (by the scheduler).
    space = {
        "recipe": {
            "grid": [
                {"name": "short", "train.epochs": 1},
                {"name": "flat", "train.lr": 1.0e-30, "train.early_stopping": 1},
                {"name": "full", "train.seed": 0},
            ]
        }
    }
    spec = small_spec(tmp_path, "statuses", space=space)
    res = run_study(spec, trainables, file="statuses.yaml", log=lambda *_: None)
    rows = read_rows(res.out_dir / "trials.csv")
    csv_status = {r["trial_id"]: r["status"] for r in rows}
    assert {r["recipe"]: (r["status"], r["epochs"]) for r in rows} == {
        "short": ("completed", "1"),
        "flat": ("early_stopped", "2"),
        "full": ("completed", "3"),
    }
    mlflow_status = {
        r.data.tags["trial_id"]: r.data.tags["status"] for r in trial_runs(tmp_path / "mlflow.db", "statuses")
    }
    assert mlflow_status == csv_status


def test_infeasible_trials_do_not_blunt_asha(tmp_path, ray_session):
    # Digits are 8 px: patch sizes 3, 5 and 6 do not divide them, so about three trials in four are infeasible.
    spec = small_spec(
        tmp_path,
        "asha-infeasible",
        data={"dataset": "digits"},
        model={"name": "vit", "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        train={"epochs": 9, "batch_size": 128},
        space={"model.patch_size": {"choice": [3, 5, 6, 4]}, "train.lr": {"loguniform": [1e-4, 1e-2]}},
        # One trial at a time: ASHA's decisions then depend on the (seeded, CPU-deterministic)
        # scores alone, not on which trials happen to reach a rung together.
        search={"num_samples": 20, "seed": 0, "max_concurrent": 1, "reuse_actors": True},
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 3},
    )
    res = run_study(spec, trainables, file="asha.yaml", log=lambda *_: None)
    feasible = [r for r in res.rows if r["status"] != "infeasible"]
    stopped = [r for r in feasible if r["status"] == "stopped"]
    # Seen (Ray 2.60, CPU): 6 of 20 trials feasible; 3 of them stopped early (all at epoch 1), 3
    # completed. With the infeasible trials' -inf in ASHA's rungs, 2 of 6 were stopped, both at epoch 3: the
    # first rung, where 14 -inf scores sat, had a nan or -inf cutoff and stopped none.
    print(f"feasible={len(feasible)} stopped={[(r['trial_id'], r['epochs']) for r in stopped]}")
    assert len(feasible) >= 3 and len(res.rows) - len(feasible) >= 10
    assert all(r["status"] in ("completed", "stopped") for r in feasible)
    assert 2 * len(stopped) >= len(feasible), [(r["status"], r["epochs"]) for r in feasible]
    assert any(r["epochs"] == 1 for r in stopped)  # the first rung, beside the infeasible trials, stops too
    # Infeasible trials stay visible with their reason, in trials.csv and MLflow.
    infeasible = [r for r in res.rows if r["status"] == "infeasible"]
    assert all("patch_size must divide image_size" in r["reason"] for r in infeasible)
    tags = {r.data.tags["trial_id"]: r.data.tags for r in trial_runs(tmp_path / "mlflow.db", "asha-infeasible")}
    assert all(
        tags[r["trial_id"]]["status"] == "infeasible" and "patch_size" in tags[r["trial_id"]]["reason"]
        for r in infeasible
    )


def test_pbt_exploit_trains_with_the_perturbed_lr_and_best_yaml_is_a_schedule(tmp_path, ray_session, cli):
    import json
    import warnings

    from mlflow.tracking import MlflowClient

    spec = small_spec(
        tmp_path,
        "pbt",
        train={"epochs": 4, "schedule": "none"},
        space={"train.lr": {"loguniform": [1e-5, 1e-1]}},
        search={"num_samples": 4, "seed": 0},
        scheduler={"name": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.25},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_study(spec, trainables, file="pbt.yaml", log=lambda *_: None)
    assert not [w for w in caught if "num_to_keep" in str(w.message)]  # Ray's PBT checkpoint warning
    # Ray logs a trial's exploits in pbt_policy_<trial id>.txt, its latest last (earlier lines are inherited
    # from the trial it cloned): [target, clone, target iteration, clone iteration, clone's config, new config].
    latest = {
        p.stem[len("pbt_policy_") :]: json.loads(p.read_text().splitlines()[-1])
        for p in res.out_dir.glob("pbt_policy_*.txt")
    }
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.data.tags["trial_id"]: r.info.run_id for r in trial_runs(tmp_path / "mlflow.db", "pbt")}
    checked = 0
    for tid, (_target, _clone, _t_iter, clone_iter, old, new) in latest.items():
        if clone_iter >= 4:  # cloned at the last epoch: nothing left to train
            continue
        # The epoch after the exploit ran with the new config's lr (schedule none: exactly), not the clone's.
        lrs = [m.value for m in c.get_metric_history(runs[tid], "lr") if m.step == clone_iter + 1]
        assert any(v == pytest.approx(new["train.lr"], rel=1e-6) for v in lrs), (tid, old, new, lrs)
        assert new["train.lr"] != pytest.approx(old["train.lr"])
        checked += 1
    assert checked >= 1, latest
    # best.yaml says it is a schedule; tune-run refuses to retrain its last values as a recipe.
    best = res.out_dir / "best.yaml"
    assert "A schedule, not a recipe" in best.read_text()
    r = cli("tune-run", str(best), "--final", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"tune-run: error: {best}: scheduler.name: "), r.stderr
    assert "no fixed recipe" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (res.out_dir.parent / "pbt-best").exists()


def test_a_diverging_trial_is_recorded_as_diverged_and_the_study_goes_on(tmp_path, ray_session):
    # lr 1e6 makes the training loss NaN in its first epoch; the other trial trains normally.
    spec = small_spec(tmp_path, "diverging", train={"epochs": 2}, space={"train.lr": {"grid": [3e-3, 1.0e6]}})
    res = run_study(spec, trainables, file="diverging.yaml", log=lambda *_: None)
    rows = {float(r["train.lr"]): r for r in read_rows(res.out_dir / "trials.csv")}
    assert (rows[3e-3]["status"], rows[3e-3]["epochs"]) == ("completed", "2")
    assert (rows[1e6]["status"], rows[1e6]["epochs"]) == ("diverged", "1")
    assert rows[1e6]["reason"] == "training loss became nan at epoch 1"
    tags = {r.data.tags["trial_id"]: r.data.tags for r in trial_runs(tmp_path / "mlflow.db", "diverging")}
    assert tags[rows[1e6]["trial_id"]]["status"] == "diverged"
    assert tags[rows[1e6]["trial_id"]]["reason"] == "training loss became nan at epoch 1"
    assert res.best["trial_id"] == rows[3e-3]["trial_id"]
    assert "lr: 0.003" in (res.out_dir / "best.yaml").read_text()


def test_a_study_whose_trials_stay_paused_ends_and_says_how_to_resume(tmp_path, ray_session, cli, monkeypatch):
    """A scheduler that pauses trials and never resumes them (Tune's scheduler contract allows it) would keep the
    study waiting for ever: after search.stall_timeout_s it ends with one line naming the paused trials, exit 1,
    what finished exported, and the --resume command."""
    import yaml
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class PausesForEver(FIFOScheduler):  # the first trial runs to its end, the others pause after one epoch
        first: str | None = None

        def on_trial_result(self, tune_controller, trial, result):  # noqa: ANN001, ANN201
            PausesForEver.first = PausesForEver.first or trial.trial_id
            return TrialScheduler.CONTINUE if trial.trial_id == PausesForEver.first else TrialScheduler.PAUSE

        def choose_trial_to_run(self, tune_controller):  # noqa: ANN001, ANN201
            return next((t for t in tune_controller.get_trials() if t.status == "PENDING"), None)

    monkeypatch.setattr("search.run._runner.build_scheduler", lambda side: PausesForEver())
    spec = {
        "experiment": {"name": "stuck"},
        "data": {"dataset": "synthetic", "image_size": 8, "num_classes": 2, "num_samples": 64},
        "model": {"name": "cnn", "conv1": 4, "conv2": 4, "conv3": 4, "hidden": 8},
        "train": {"epochs": 2, "batch_size": 32},
        "space": {"train.lr": {"grid": [1e-3, 2e-3, 3e-3]}},
        "search": {"algorithm": "grid", "max_concurrent": 1, "stall_timeout_s": 3},
        "tracking": {"enabled": False},
    }
    (tmp_path / "stuck.yaml").write_text(yaml.safe_dump(spec))
    r = cli("tune-run", "stuck.yaml", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {row["trial_id"]: row for row in read_rows(tmp_path / "runs" / "stuck" / "trials.csv")}
    paused = sorted(tid for tid, row in rows.items() if row["status"] == "unfinished")
    # One at a time: the paused trial holds the concurrency slot, so the third is never drawn.
    assert rows[PausesForEver.first]["status"] == "completed" and paused == sorted(set(rows) - {PausesForEver.first})
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"tune-run: error: stuck.yaml: search.stall_timeout_s: trials {', '.join(paused)} were ")
    assert line.endswith("Continue with: tune-run stuck.yaml --resume")
    assert (tmp_path / "runs" / "stuck" / "best.yaml").is_file()  # the finished trial, exported
