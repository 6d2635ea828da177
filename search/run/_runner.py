"""Run a study: its search through the shared lifecycle (``_lifecycle``), with what only a search has — the
searcher, the scheduler, the budget, resume — and its exports: trials.csv, best.yaml, study.json."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .._contract import TrialSide
from ..report._importance import write_importance
from ..report._pareto import front_line, front_points, write_front
from ..spec._budget import Budget, parse_budget
from ..spec._files import dump_spec, read_json
from ..spec._objectives import objectives, over_limits, parse_conditions
from ..spec._sizes import retake_size
from ..spec._space import branches, flat_config, searched_keys
from ..store import _storage as storage
from ..store._atomic import StorageFull, write_atomic
from ..store._export import (
    best_text,
    compared,
    extra_columns,
    objective_columns,
    select_best,
    trial_rows,
    write_trials,
)
from ..store._paths import STUDY_ARTIFACTS, STUDY_FILE, holds_study, mlflow_uri, study_dir
from ._algorithms import build_scheduler, build_searcher, first_points, first_points_line, param_space, rungs
from ._console import new_study
from ._lifecycle import Lifecycle, now, provenance
from ._no_search import recipe_only
from ._result import StudyResult
from ._resume import check_resumable
from ._study_budget import BudgetStopper, plan_budget, search_side, seconds_before, spent
from ._study_tracking import track_study
from ._tune_parts import Stalled

SKIPPED_FILE = "skipped_images.txt"  # every unreadable image left out of the data, one path a line
SKIPPED_SHOWN = 5  # of them, how many study.json names


def run_study(
    spec: dict[str, Any],
    backend: TrialSide,
    *,
    file: str,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    log: Any = print,
    verbose: bool = False,
    started: float | None = None,
) -> StudyResult:
    """``started``: time.monotonic() when the command began (study.json's ``startup_s`` counts from it)."""
    started = time.monotonic() if started is None else started
    new_study()  # its warnings are shown once, whatever studies ran before in this process
    given = copy.deepcopy(spec)  # as the file and --set say, before the cluster fit adapts it
    run = Lifecycle(
        spec,
        backend,
        study_dir(spec),
        file=file,
        key="experiment.output_dir",
        address=address,
        log=log,
        verbose=verbose,
    )
    _claim(run, given, resume, overwrite)
    pools = run.prepare()  # before anything is written: a bad data.root leaves nothing half-done on disk
    log(f"data: {backend.describe(pools, spec['data'])}")
    skipped = backend.skipped_images(pools)
    cluster = run.start_ray(pools)  # before it is recorded: study.json says what ran
    budget = parse_budget(spec["search"]["budget"], file) if spec["search"]["budget"] else None
    previous = read_json(storage.join(run.target, STUDY_FILE), "study file") if resume else {}
    cb = previous.get("compute_budget") if resume else None  # a resumed study keeps the plan it started with
    if resume and cb:
        spec["search"]["num_samples"] = cb["num_samples"]
        retake_size(spec, cb.get("size"), backend)
    elif budget and not resume:
        cb = plan_budget(spec, backend, pools, budget, cluster, log)
    if cb and cb.get("search") == "skipped":  # no room for the search to pay: the budget goes to the recipe
        run.track(**_tracking(spec, spec, backend, pools, previous))
        return recipe_only(run, _start_record(run, given, previous, cluster, skipped, cb, resume), cb, started)
    side = search_side(spec, backend, cb)
    run.track(**_tracking(spec, side, backend, pools, previous))
    if cb and not resume:
        cb["search_started_unix"] = time.time()  # a killed driver's --resume counts the search's time from it
    record = _start_record(run, given, previous, cluster, skipped, cb, resume)
    stopper = (
        BudgetStopper(budget.unit, cb["planned"]["search"], spec["resources"]["gpu"], backend.gpu_hours)
        if budget and cb and not resume  # a resumed study runs the stopper Tune restores (_carry_on)
        else None
    )
    stopper = _study_tuner(run, side, pools, stopper, cb, budget, resume)
    # Ray is up, so the trainable's set is in Ray's object store now: the driver's decoded copy
    # would double the study's memory for as long as it runs.
    del pools
    search_started = time.monotonic()
    if stopper is not None:
        stopper.start(search_started)
    grid = run.fit()
    search_s = stopper.elapsed() if stopper is not None else time.monotonic() - search_started
    return _finish(run, grid, record, side, cb, budget, stopper, search_s, search_started, started, resume)


def _tracking(
    spec: dict[str, Any], side: dict[str, Any], backend: TrialSide, pools: Any, previous: dict[str, Any]
) -> dict[str, Any]:
    """The study's MLflow parent run: its trials run ``side``; a resumed study reopens its run."""
    return {
        "run_name": spec["experiment"]["name"],
        "role": "study",
        "child_role": "trial",
        "max_epochs": side["train"]["epochs"],
        "child_spec": side,
        "reopen": previous.get("mlflow_parent_run_id"),
        "dataset": backend.dataset_info(spec, pools),
    }


def _claim(run: Lifecycle, given: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """The study folder is this study's: a resumed one's spec matches the one it started with; a new one finds
    the folder free (or --overwrite)."""
    if resume:
        check_resumable(run.file, storage.join(run.target, STUDY_FILE), given, run.log)
        return
    run.claim(
        holds_study,
        "a study",
        overwrite=overwrite,
        missing=f"no {STUDY_FILE}",
        hint="pass --resume to continue it, --overwrite to replace it, or --set experiment.name=…",
    )


def _start_record(
    run: Lifecycle,
    given: dict[str, Any],
    previous: dict[str, Any],
    cluster: dict[str, float],
    skipped: list[str],
    cb: dict[str, Any] | None,
    resume: bool,
) -> dict[str, Any]:
    """study.json as the search starts (with the skipped images' list and spec.yaml), written and published."""
    spec, out = run.spec, run.out
    record = {
        **previous,
        "spec": spec,
        "spec_given": given,
        "spec_file": run.file,
        "mlflow_uri": mlflow_uri(spec),
        "mlflow_parent_run_id": run.parent,
        "dashboard": run.dashboard,
        "cluster": {k: v for k, v in cluster.items() if k in ("CPU", "GPU", "memory")},
        "report_axes": run.backend.report_axes(spec),  # the keys tune-compare plots against
        "provenance": provenance(),
        "started": previous.get("started") or now(),
        "resumed": resume,
        "skipped_images": {"count": len(skipped), "first": skipped[:SKIPPED_SHOWN], "all_in": SKIPPED_FILE},
    }
    if cb:
        record["compute_budget"] = cb
    if spec["search"]["recipe_first"] and not resume and not (cb and cb.get("search") == "skipped"):
        points, why = first_points(spec)
        record["recipe_first"] = points[0] if points else {"not_applied": why}
        run.log(("search: " if points else "") + first_points_line(spec))
    try:
        write_atomic(out / STUDY_FILE, json.dumps(record, indent=2, default=str))
        write_atomic(out / SKIPPED_FILE, "".join(f"{p}\n" for p in skipped))
        write_atomic(out / "spec.yaml", dump_spec(spec))
    except StorageFull as full:
        full.started = resume  # a new study not yet started: nothing to resume, it runs again
        raise
    run.folder.publish(STUDY_FILE, SKIPPED_FILE, "spec.yaml")
    return record


def _study_tuner(
    run: Lifecycle,
    side: dict[str, Any],
    pools: Any,
    stopper: BudgetStopper | None,
    cb: dict[str, Any] | None,
    budget: Budget | None,
    resume: bool,
) -> BudgetStopper | None:
    """The search's Tuner (a resumed study's restored one): searcher, scheduler, samples, stopper. Returns the
    budget's stopper the Tuner runs with."""
    from ray import tune

    spec, backend = run.spec, run.backend
    trial_spec = side
    if spec["scheduler"]["fidelity"] == "data":  # rungs grow the training data too (the trial side's rule)
        trial_spec = backend.data_fidelity(side, rungs(side), int(side["scheduler"]["max_t"]))
    limits = spec["experiment"].get("constraints")
    trainable = backend.make_trainable(trial_spec, pools, flat_config, partial(over_limits, limits) if limits else None)
    if resume:
        run.restore(trainable)
        return _carry_on(run, cb)
    exp, search = spec["experiment"], spec["search"]
    run.tuner(
        trainable,
        name=exp["name"],
        location=storage.parent(run.target),
        title=exp["name"],
        unit="trial",
        max_epochs=side["train"]["epochs"],
        stop=stopper,
        checkpoint_config=checkpoint_config(spec),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=exp["metric"],
            mode=exp["mode"],
            search_alg=build_searcher(spec),
            scheduler=build_scheduler(side),
            num_samples=search["num_samples"],
            # The searcher holds the limit already (BasicVariantGenerator, ConcurrencyLimiter); Tune warns
            # when it is given twice.
            max_concurrent_trials=None,
            reuse_actors=search["reuse_actors"],
            trial_dirname_creator=trial_dirname,
            time_budget_s=cb["planned"]["search"] if cb and budget and budget.unit == "seconds" else None,
        ),
    )
    return stopper


def _carry_on(run: Lifecycle, cb: dict[str, Any] | None) -> BudgetStopper | None:
    """A resumed study's budget goes on from what the interrupted run spent (study.json says so at once, in
    case this run is interrupted too)."""
    stopper, last = run.restored_state()
    if not isinstance(stopper, BudgetStopper) or cb is None:
        return None
    before = seconds_before(cb, last)
    stopper.carry_on(before, last)
    cb["search_started_unix"] = time.time() - before  # the time between the runs is not the search's
    record = read_json(run.out / STUDY_FILE, "study file")
    write_atomic(run.out / STUDY_FILE, json.dumps({**record, "compute_budget": cb}, indent=2, default=str))
    run.folder.publish(STUDY_FILE)
    return stopper


def _finish(
    run: Lifecycle,
    grid: Any,
    record: dict[str, Any],
    side: dict[str, Any],
    cb: dict[str, Any] | None,
    budget: Budget | None,
    stopper: BudgetStopper | None,
    search_s: float,
    search_started: float,
    started: float,
    resume: bool,
) -> StudyResult:
    """The study's results from Tune's: trials.csv, importance, best.yaml, study.json; published and tracked."""
    spec, backend, out, log = run.spec, run.backend, run.out, run.log
    metric, mode = spec["experiment"]["metric"], spec["experiment"]["mode"]
    oom = partial(backend.oom_reason, spec)
    collected = _collect(grid, spec["space"], run.ended)
    unfinished = sum(not t["finished"] for t in collected)
    watch = run.callback(Stalled)
    stalled = list(watch.paused) if watch is not None else []
    keys = searched_keys(spec["space"])
    goals, costs = objectives(spec["experiment"]), list(backend.COST_METRICS)
    rows = trial_rows(collected, keys, metric, mode, side["train"]["epochs"], oom, goals, costs)
    columns = objective_columns(goals, costs)
    group = next(iter(branches(spec["space"])), None)  # a branch's label (the model family) colours the front's plot
    pool = compared(rows, metric)[0]
    front = write_front(out, spec["experiment"], rows, pool, columns, group) if len(goals) > 1 else None
    write_trials(out / "trials.csv", rows, keys, metric, extra_columns(goals, costs))
    imp = write_importance(out, spec, rows)
    pick = parse_conditions(spec["experiment"]["pick"]) if spec["experiment"].get("pick") else []
    best, rule = select_best(rows, metric, mode, pick, columns) or (None, "")
    if front is not None:
        front["points"] = front_points(rows, columns, metric, {t["trial_id"]: t["config"] for t in collected})
        log(front_line(front))
    if best is None and pick:
        log(f"experiment.pick: no compared trial has {spec['experiment']['pick']}: no best.yaml")
    chosen: dict[str, Any] = {}
    if best is not None:
        chosen = next(t["config"] for t in collected if t["trial_id"] == best["trial_id"])
        path = out / "best.yaml"
        write_atomic(path, best_text(path, spec, best, chosen, metric, backend, run.parent, rule))
    record.update(
        finished=now(),
        trials=len(rows),
        interrupted=bool(unfinished),
        stalled=stalled,
        budget=_budget(rows, collected, spec["resources"]["gpu"], backend.gpu_hours),
        status_counts={s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
        best=best,
        best_rule=rule,
        **({"pareto": front} if front is not None else {}),
    )
    if cb and budget:
        spent(cb, budget, stopper, rows, record["budget"], search_s, search_started - started)
        log(
            f"budget: {cb['reason']}"
            if cb["ended_by_budget"]
            else f"budget: the search spent {budget.show(cb['spent']['search'])} of its {budget.show(cb['planned']['search'])}"
        )
    write_atomic(out / STUDY_FILE, json.dumps(record, indent=2, default=str))
    run.publish(*STUDY_ARTIFACTS, writer="a trial could not write its checkpoint")
    if run.parent:
        track_study(run, cb, best, rows, bool(unfinished), resume)
    line = imp.line() if imp is not None else ""
    return StudyResult(
        out, rows, best, run.parent, chosen, unfinished, cb, search_started, run.folder.location, line, stalled, rule
    )


def checkpoint_config(spec: dict[str, Any]) -> Any:
    """A trial resumes from its latest checkpoint; PBT also restores other trials' recent ones, which Ray
    warns may be deleted too early with num_to_keep <= 2: keep 4 there (as Ray's PBT examples do)."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=4 if spec["scheduler"]["name"] == "pbt" else 1)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names: Ray's default spells out the config and hits path-length limits."""
    return f"trial_{trial.trial_id}"


def _budget(rows: list[dict[str, Any]], trials: list[dict[str, Any]], gpu: float, gpu_hours: Any) -> dict[str, float]:
    """What the search spent: epochs, trial wall time, and GPU-hours by the trial side's rule (final
    training counts its own by the same one)."""
    seconds = sum(float(t.get("seconds") or 0) for t in trials)
    return {
        "epochs": sum(int(r["epochs"]) for r in rows),
        "trial_seconds": seconds,
        "gpu_hours": gpu_hours(seconds, gpu, gpu > 0),
    }


def _collect(grid: Any, space: dict[str, Any], ended: Callable[[str], bool]) -> list[dict[str, Any]]:
    trials = []
    # Tune's own record of each trial, in the grid's order: its id, also for one that never reported.
    tune_trials = list(getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or [None] * len(grid))
    for r, tt in zip(grid, tune_trials):
        hist = r.metrics_dataframe.to_dict("records") if r.metrics_dataframe is not None else []
        last = r.metrics or {}
        err = ""
        if r.error is not None:  # its whole text: the status rule reads more than its last line
            err = str(r.error).strip() or type(r.error).__name__
        tid = last.get("trial_id") or getattr(tt, "trial_id", None) or Path(r.path).name
        try:  # a trial stopped before its first report has no result config: Tune's trial record has it
            config = flat_config(r.config or getattr(tt, "config", None) or {}, space)
        except (KeyError, TypeError):  # a trial that never got a config (errored before its first report)
            config = {}
        trials.append(
            {
                "trial_id": tid,
                "config": config,
                "last": last,
                "history": hist,
                "error": err,
                "seconds": last.get("time_total_s"),
                "finished": ended(getattr(tt, "trial_id", tid)),
            }
        )
    return sorted(trials, key=lambda t: t["trial_id"])
