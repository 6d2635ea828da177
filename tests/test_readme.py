"""README.md's commands, verbatim, in a fresh folder: the quickstart, its final training, tune-eval, tune-compare.

Each command is checked to appear in README.md as written, and runs as the installed console script
with default settings and relative paths, as a user types it after the quickstart. The study and its final
training are the session's shared ``quickstart`` (conftest), which other tests read too.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import mlflow_runs, readme

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("quickstart")]


def test_readme_quickstart_final_eval_compare(quickstart):
    tmp_path, r = quickstart.folder, quickstart.study
    assert "Ray dashboard: http://127.0.0.1:" in r.stdout
    # The splits as the trials use them: digits has no test split, so 20 % of it is held out as one.
    assert (
        "data: digits, 1,151 train + 287 val + 359 test images (held out of the train pool), 10 classes, 1x8x8, "
        "decoded in memory" in r.stdout
    )
    # The summary README shows, paths as the user would type them.
    assert "  results:     runs/quickstart (trials.csv, study.json)" in r.stdout
    assert "  best config: runs/quickstart/best.yaml" in r.stdout
    out = tmp_path / "runs" / "quickstart"
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    statuses = [row["status"] for row in rows]
    assert "stopped" in statuses and "completed" in statuses  # ASHA stopped some early
    assert all(int(row["epochs"]) < 12 for row in rows if row["status"] == "stopped")
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "quickstart")
    parents = [x for x in runs if x.data.tags.get("role") == "study"]
    children = [x for x in runs if x.data.tags.get("role") == "trial"]
    assert len(parents) == 1 and len(children) == 12
    assert {x.data.tags["mlflow.parentRunId"] for x in children} == {parents[0].info.run_id}
    child = next(x for x in children if x.data.tags["status"] == "completed")
    assert [m.step for m in c.get_metric_history(child.info.run_id, "val_acc")] == list(range(1, 13))
    assert "train.lr" in child.data.params and child.data.tags["dataset"] == "digits"
    assert child.data.tags["device"].startswith("cpu") and rows[0]["device"].startswith("cpu")
    # What each trial computed in, timed on this machine (train.precision: auto): one choice for the study.
    assert child.data.tags["arithmetic"] in {"fp32", "bf16", "fp32+channels_last", "bf16+channels_last"}
    assert {row["arithmetic"] for row in rows} == {child.data.tags["arithmetic"]}
    # Artifacts sit beside the store, at an absolute location.
    artifacts = c.get_experiment_by_name("quickstart").artifact_location
    assert Path(artifacts).is_absolute() and Path(artifacts).parent == tmp_path / "mlruns"
    study = json.loads((out / "study.json").read_text())
    assert study["provenance"]["packages"]["torch"] and "git_commit" in study["provenance"]
    best = max(float(row["best_val_acc"]) for row in rows)
    assert best > 0.9
    # Which settings mattered: one line in the summary, importance.json beside trials.csv, in MLflow too.
    # At one fidelity: each trial's value at the latest epoch that at least half of the 12 reached.
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("  settings that mattered (val_acc"))
    assert re.fullmatch(
        r"  settings that mattered \(val_acc variance explained, fANOVA over (\d+) trials\): .+ "
        r"\(at epoch \d+, reached by \1 of 12 scored trials\) \(runs/quickstart/importance.json\)",
        line,
    ), line
    shares = json.loads((out / "importance.json").read_text())["shares"]
    assert set(shares) == {"train.lr", "train.weight_decay", "model.dropout", "model.hidden"}
    assert sum(shares.values()) == pytest.approx(1.0)
    logged = {a.path for a in c.list_artifacts(parents[0].info.run_id)}
    assert {"importance.json", "parallel_coordinates.png", "trials.csv"} <= logged

    # best.yaml runs as is, with the winning values fixed.
    r = readme("tune-run runs/quickstart/best.yaml --dry-run", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# grid points: 1; trials: 1" in r.stdout
    fixed = yaml.safe_load((out / "best.yaml").read_text())
    # The trial the summary names (picked by its rule: final val_acc among the trials that ran their whole
    # schedule), not the highest best_val_acc: two trials tie there, or a stopped one peaked higher.
    named = re.search(r"^  best:        trial (\S+), ", quickstart.study.stdout, re.M)
    assert named, quickstart.study.stdout[-2000:]
    winner = next(row for row in rows if row["trial_id"] == named.group(1))
    assert fixed["train"]["lr"] == pytest.approx(float(winner["train.lr"]))
    assert fixed["space"] == {} and fixed["experiment"]["name"] == "quickstart-best"
    # A second run of the same study refuses to clobber it.
    r = readme("tune-run spaces/quickstart.yaml", tmp_path)
    assert r.returncode == 2 and "--resume" in r.stderr

    # Final training of the winner: the default three seeds, evaluated on the held-out test split.
    r = quickstart.final  # readme("tune-run runs/quickstart/best.yaml --final", tmp_path)
    assert "test accuracy" in r.stdout and "95% CI" in r.stdout
    assert "models and metrics: runs/quickstart/final" in r.stdout
    final = out / "final"  # beside the study it came from
    summary = json.loads((final / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and not summary["errors"]
    acc = summary["summary"]["accuracy"]
    assert acc["n"] == 3 and acc["ci_low"] <= acc["mean"] <= acc["ci_high"] and acc["mean"] > 0.9
    assert summary["search_budget"]["epochs"] == sum(int(row["epochs"]) for row in rows)
    assert summary["provenance"]["packages"]["ray"]
    c, runs = mlflow_runs(tmp_path / "mlflow.db", "quickstart")
    final_parent = next(x for x in runs if x.data.tags.get("role") == "final")
    assert final_parent.data.tags["mlflow.parentRunId"] == parents[0].info.run_id  # under the study's run
    seeds = [x for x in runs if x.data.tags.get("role") == "final-seed"]
    assert len(seeds) == 3 and {x.data.tags["mlflow.parentRunId"] for x in seeds} == {final_parent.info.run_id}
    assert "test_accuracy_mean" in c.get_run(final_parent.info.run_id).data.metrics
    logged = Path(final_parent.info.artifact_uri.removeprefix("file://")) / "final" / "metrics.json"
    assert json.loads(logged.read_text())["seeds"] == [0, 1, 2]

    # Anyone can re-check a number: tune-eval on a saved model gives the same metrics.
    r = readme("tune-eval runs/quickstart/final/0", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    seed0 = json.loads((final / "0" / "metrics.json").read_text())["test"]
    assert json.loads(r.stdout)["accuracy"] == seed0["accuracy"]

    r = readme("tune-compare runs/quickstart", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "runs" / "compare" / "report.md").read_text()
    assert "quickstart-best" in md and "test acc (95% CI)" in md and f"{acc['mean']:.4f}" in md
    assert "## Which settings mattered" in md and "**quickstart**: settings that mattered" in md
    assert (tmp_path / "runs" / "compare" / "parallel_quickstart.png").stat().st_size > 10_000
    assert (tmp_path / "runs" / "compare" / "report.html").is_file()
