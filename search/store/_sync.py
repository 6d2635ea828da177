"""Fill in a study's MLflow runs from its folder: what a tracking store that went away mid-study missed.

The study folder holds everything a trial reported (Ray's ``trial_*/params.json`` and ``result.json``)
and how each ended (``trials.csv``), so its runs can be completed at any time. Runs are found by their
``trial_id`` tag under the study's parent run, and only what MLflow lacks is written (a metric's
missing steps, absent params, changed tags): running it twice adds nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spec._files import read_json
from ..spec._schema import SpecError
from ..spec._space import branches, flat_config
from . import _storage as storage
from ._export import FAILED
from ._paths import IMPORTANCE_FILE, PARALLEL_FILE, STUDY_FILE, shown

# Of a study folder in storage, what filling in MLflow reads: the study's files and each trial's reports.
_STUDY_FILES = (STUDY_FILE, "trials.csv", "best.yaml", IMPORTANCE_FILE, PARALLEL_FILE)
_TRIAL_FILES = ("params.json", "result.json")


def _sync_files(rel: str) -> bool:
    parts = rel.split("/")
    return (len(parts) == 1 and parts[0] in _STUDY_FILES) or (
        len(parts) == 2 and parts[0].startswith("trial_") and parts[1] in _TRIAL_FILES
    )


def sync_study(location: str | Path, log: Callable[[str], None] = print) -> dict[str, int]:
    """Complete the MLflow runs of the study at ``location`` (a folder, or a URI: its study files and trial
    reports are read from a downloaded copy); returns what was added (runs, metric values, tags)."""
    from ._tracking import check_store, client_for, finish_parent, flat_params, log_budget

    out = storage.local_copy(location, _sync_files)
    state = out / STUDY_FILE
    if not state.is_file():
        raise SpecError(str(out), "--sync-mlflow", f"not a study folder (it has no {STUDY_FILE})")
    record = read_json(state, "study file")
    spec, uri, parent = record.get("spec"), record.get("mlflow_uri"), record.get("mlflow_parent_run_id")
    if not isinstance(spec, dict) or not uri or not parent:
        raise SpecError(
            str(state),
            "mlflow_parent_run_id",
            "the study has no MLflow run to fill in (tracking was off, or it was not written by tune-run)",
        )
    problem = check_store(uri)
    if problem:
        raise SpecError(str(state), "mlflow_uri", problem)
    rows = _read_rows(out / "trials.csv")
    c = client_for(uri)
    parent_run = c.get_run(parent)
    exp_id = parent_run.info.experiment_id
    study_tags = {k: v for k, v in parent_run.data.tags.items() if not k.startswith("mlflow.") and k != "role"}
    base, space = flat_params(spec), spec.get("space") or {}
    added = {"runs": 0, "metrics": 0, "tags": 0}
    for row in rows:
        _sync_trial(c, out, exp_id, parent, study_tags, base, space, row, added)
    best, metric = record.get("best"), spec["experiment"]["metric"]
    finish_parent(uri, parent, out, best, metric, rows, interrupted=bool(record.get("interrupted")))
    cb = record.get("compute_budget")
    budget_keys = {"planned", "planned_seconds", "spent", "spent_seconds"}
    if isinstance(cb, dict) and budget_keys <= set(cb) and "budget.unit" not in parent_run.data.params:
        log_budget(uri, parent, cb, planned=True)  # the study's end could not write it
        added["metrics"] += len(cb["spent"]) + len(cb["spent_seconds"])
    what = (
        f"{added['runs']} run(s) created, {added['metrics']} metric value(s) and {added['tags']} tag(s) added"
        if any(added.values())
        else "nothing was missing"
    )
    log(f"MLflow: {uri} filled in from {shown(location)}: {what}")
    return added


def _sync_trial(
    c: Any,
    out: Path,
    exp_id: str,
    parent: str,
    study_tags: dict[str, str],
    base: dict[str, Any],
    space: dict[str, Any],
    row: dict[str, str],
    added: dict[str, int],
) -> None:
    """Fill in one trial's MLflow run (created when missing): params, metrics, tags, and its end; counts what it
    added in ``added``."""
    from mlflow.entities import Metric, RunTag

    from ._tracking import log_params, run_params

    tid = row["trial_id"]
    config, results = _trial_files(out, tid)
    flat = flat_config(config, space) if branches(space) else dict(config)
    found = c.search_runs([exp_id], filter_string=f"tags.trial_id = '{tid}' and tags.`mlflow.parentRunId` = '{parent}'")
    if found:
        run = found[0]
        rid, have_params, have_tags = run.info.run_id, run.data.params, run.data.tags
    else:
        rid = c.create_run(
            exp_id,
            run_name=f"trial_{tid}",
            tags={**study_tags, "role": "trial", "mlflow.parentRunId": parent, "trial_id": tid},
        ).info.run_id
        have_params, have_tags = {}, {}
        added["runs"] += 1
    params = {k: v for k, v in run_params(base, flat).items() if k not in have_params}
    if params:
        log_params(c, rid, params)
    metrics = _missing_metrics(c, rid, results, Metric)
    for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        c.log_batch(rid, metrics=metrics[i : i + 1000])
    added["metrics"] += len(metrics)
    tags = {
        "status": row["status"],
        "epochs": row["epochs"],
        **({"reason": row["reason"][:5000]} if row["reason"] else {}),
    }
    for key in ("device", "arithmetic"):  # what the trial trained on, and with which precision and layout
        value = next((r[key] for r in reversed(results) if isinstance(r.get(key), str)), None)
        if value:
            tags[key] = value
    if row.get("gpu"):  # trials.csv's record of the GPU(s) Ray pinned the trial to
        tags["gpu"] = row["gpu"]
    changed = [RunTag(k, str(v)) for k, v in tags.items() if have_tags.get(k) != str(v)]
    if changed:
        c.log_batch(rid, tags=changed)
        added["tags"] += len(changed)
    if row["status"] != "unfinished":  # a resumed study continues the run of an unfinished trial
        raised = row["status"] in FAILED and not any(r.get(row["status"]) for r in results[-1:])
        end = "FAILED" if raised else "FINISHED"
        if c.get_run(rid).info.status != end:
            c.set_terminated(rid, status=end)


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SpecError(
            str(path.parent),
            "--sync-mlflow",
            "the study has no trials.csv yet: it has not ended (resume it with --resume, which fills MLflow in too)",
        )
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _trial_files(out: Path, trial_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, every result) of a trial, as Ray wrote them in its folder; ({}, []) for what is missing."""
    folder = out / f"trial_{trial_id}"
    try:
        config = json.loads((folder / "params.json").read_text())
    except (OSError, ValueError):
        config = {}
    results = []
    try:
        lines = (folder / "result.json").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            results.append(json.loads(line))
        except ValueError:  # a line cut short by a killed driver
            continue
    return config, results


def _missing_metrics(c: Any, rid: str, results: list[dict[str, Any]], metric_cls: Any) -> list[Any]:
    """The per-epoch metric values of ``results`` whose step the run lacks, stamped as live logging stamps them."""
    from ._tracking import metric_time_ms, numeric_metrics  # Ray-importing: loaded when a sync needs it

    wanted: dict[str, dict[int, tuple[float, int]]] = {}
    for r in results:
        if r.get("infeasible"):
            continue
        step = int(r.get("epoch", r.get("training_iteration", 0)))
        stamp = metric_time_ms(r)
        for key, value in numeric_metrics(r).items():
            wanted.setdefault(key, {})[step] = (value, stamp)
    out = []
    for key, steps in wanted.items():
        have = {m.step for m in c.get_metric_history(rid, key)}
        out += [metric_cls(key, v, stamp, step) for step, (v, stamp) in sorted(steps.items()) if step not in have]
    return out
