"""Run a study: Ray runtime, Tuner (or its restore), MLflow parent run, exports and provenance."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ray.tune import Stopper

from .._contract import TrialSide
from ..report._importance import write_importance
from ..spec._budget import (
    Budget,
    concurrency,
    parse_budget,
    plan,
    probe_configs,
    search_epochs,
    search_scheduler,
    spent_search,
    totals,
    trial_length,
)
from ..spec._files import dump_spec, read_json, read_text
from ..spec._space import as_searched, flat_config, grid_points, searched_keys
from ..spec._spec import SpecError, spec_differences
from ..store import _storage as storage
from ..store._atomic import StorageFull, write_atomic
from ..store._export import best_row, trial_rows, write_best, write_csv
from ..store._paths import STUDY_ARTIFACTS, STUDY_FILE, check_storage, claim, holds_study, mlflow_uri, shown, study_dir
from ._algorithms import build_scheduler, build_searcher, first_points, first_points_line, param_space, rungs
from ._console import console_for, tune_verbosity
from ._lifecycle import (
    LastStep,
    StopWhenFull,
    callback,
    check_tracking,
    ended,
    failure_config,
    fit_to_cluster,
    fit_tuner,
    init_ray,
    new_tuner,
    now,
    open_tracking,
    provenance,
    sigterm_as_interrupt,
    tune_storage,
)

SKIPPED_FILE = "skipped_images.txt"  # every unreadable image left out of the data, one path a line
SKIPPED_SHOWN = 5  # of them, how many study.json names


@dataclass
class StudyResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    parent_run_id: str | None
    best_config: dict[str, Any]  # the best trial's flat config ({} when no trial scored)
    unfinished: int = 0  # trials an interruption (Ctrl-C, SIGTERM) left to --resume
    compute_budget: dict[str, Any] | None = None  # search.budget: planned and spent (study.json's record)
    search_started: float = 0.0  # time.monotonic() when the search began: a wall-clock budget's clock
    location: str = ""  # where the results are: out_dir, or the storage URI out_dir is a staging copy of
    importance: str = ""  # which settings mattered, in one line ("" when nothing was searched)


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
    target = study_dir(spec)
    given = copy.deepcopy(spec)  # as the file and --set say, before _fit_resources adapts it to the cluster
    check_storage(target, file, "experiment.output_dir")
    if resume:
        _check_resumable(file, storage.join(target, STUDY_FILE), given)
        replace = False
    else:
        replace = claim(
            target,
            holds_study,
            "a study",
            file=file,
            key="experiment.name",
            overwrite=overwrite,
            missing=f"no {STUDY_FILE}",
            hint="pass --resume to continue it, --overwrite to replace it, or --set experiment.name=…",
        )
    check_tracking(spec, file)
    # Load data before anything is written: a bad data.root leaves nothing half-done on disk.
    pools = backend.prepare(spec)
    folder = storage.folder(target)  # a URI's files are written in a staging folder, then uploaded
    out = folder.local
    state_file = out / STUDY_FILE

    log(f"data: {backend.describe(pools)}")
    skipped = backend.skipped_images(pools)
    dashboard = init_ray(address, log, verbose, file=file)
    import ray
    from ray import tune

    fit_to_cluster(spec, backend.node_paths(spec, pools), file, log)  # before it is recorded: study.json says what ran
    if replace:  # only now: a study the cluster refuses leaves the old one in place
        storage.remove(target)
    budget = parse_budget(spec["search"]["budget"], file) if spec["search"]["budget"] and not resume else None
    cb = plan_budget(spec, backend, pools, budget, ray.cluster_resources(), log) if budget else None
    exp = spec["experiment"]
    metric, mode = exp["metric"], exp["mode"]
    uri = mlflow_uri(spec)
    previous = read_json(storage.join(target, STUDY_FILE), "study file") if resume else {}
    search_side = _search_side(spec, backend, cb or previous.get("compute_budget"))
    parent, callbacks = open_tracking(
        spec,
        backend,
        run_name=exp["name"],
        role="study",
        child_role="trial",
        max_epochs=search_side["train"]["epochs"],
        child_spec=search_side,
        reopen=previous.get("mlflow_parent_run_id"),
        log=log,
        dataset=backend.dataset_info(spec, pools),
    )
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **previous,
        "spec": spec,
        "spec_given": given,
        "spec_file": file,
        "mlflow_uri": uri,
        "mlflow_parent_run_id": parent,
        "dashboard": dashboard,
        "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
        "provenance": provenance(),
        "started": previous.get("started") or now(),
        "resumed": resume,
        "skipped_images": {"count": len(skipped), "first": skipped[:SKIPPED_SHOWN], "all_in": SKIPPED_FILE},
    }
    if cb:
        record["compute_budget"] = cb
    if spec["search"]["recipe_first"] and not resume:
        points, why = first_points(spec)
        record["recipe_first"] = points[0] if points else {"not_applied": why}
        log(("search: " if points else "") + first_points_line(spec))
    try:
        write_atomic(state_file, json.dumps(record, indent=2, default=str))
        write_atomic(out / SKIPPED_FILE, "".join(f"{p}\n" for p in skipped))
        write_atomic(out / "spec.yaml", dump_spec(spec))
    except StorageFull as full:
        full.started = resume  # a new study not yet started: nothing to resume, it runs again
        raise
    folder.publish(STUDY_FILE, SKIPPED_FILE, "spec.yaml")

    trial_spec = search_side
    if spec["scheduler"]["fidelity"] == "data":  # rungs grow the training data too (the trial side's rule)
        trial_spec = backend.data_fidelity(search_side, rungs(search_side), int(search_side["scheduler"]["max_t"]))
    trainable = backend.make_trainable(trial_spec, pools, flat_config)
    # Ray is up, so the trainable's set is in Ray's object store now: the driver's decoded copy
    # would double the study's memory for as long as it runs.
    del pools
    stopper = (
        BudgetStopper(budget.unit, cb["planned"]["search"], spec["resources"]["gpu"], backend.gpu_hours)
        if budget and cb
        else None
    )
    if resume:
        path, fs = tune_storage(target)
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
    else:
        search = spec["search"]
        tuner = new_tuner(
            out,
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                search_alg=build_searcher(spec),
                scheduler=build_scheduler(search_side),
                num_samples=search["num_samples"],
                # The searcher holds the limit already (BasicVariantGenerator, ConcurrencyLimiter); Tune warns
                # when it is given twice.
                max_concurrent_trials=None,
                reuse_actors=search["reuse_actors"],
                trial_dirname_creator=trial_dirname,
                time_budget_s=cb["planned"]["search"] if budget and budget.unit == "seconds" else None,
            ),
            run_config=tune.RunConfig(
                name=exp["name"],
                **_tune_storage_args(storage.parent(target)),
                verbose=tune_verbosity(verbose),
                stop=stopper,
                callbacks=[
                    *callbacks,
                    console_for(
                        spec,
                        title=exp["name"],
                        max_epochs=search_side["train"]["epochs"],
                        unit="trial",
                        verbose=verbose,
                        oom_reason=partial(backend.oom_reason, spec),
                    ),
                    LastStep(),
                    StopWhenFull(str(out)),
                ],
                checkpoint_config=checkpoint_config(spec),
                failure_config=failure_config(spec),
            ),
        )
    search_started = time.monotonic()
    if stopper is not None:
        stopper.t0 = search_started
    with sigterm_as_interrupt():
        grid = fit_tuner(tuner, out)
    search_s = time.monotonic() - search_started
    collected = _collect(grid, spec["space"], ended(tuner))
    unfinished = sum(not t["finished"] for t in collected)
    keys = searched_keys(spec["space"])
    rows = trial_rows(collected, keys, metric, mode, search_side["train"]["epochs"], partial(backend.oom_reason, spec))
    write_csv(out / "trials.csv", rows)
    imp = write_importance(out, spec, rows)
    best = best_row(rows, metric, mode)
    chosen: dict[str, Any] = {}
    if best is not None:
        chosen = next(t["config"] for t in collected if t["trial_id"] == best["trial_id"])
        write_best(out / "best.yaml", spec, best, chosen, metric, backend, parent)
    record.update(
        finished=now(),
        trials=len(rows),
        interrupted=bool(unfinished),
        budget=_budget(rows, collected, spec["resources"]["gpu"], backend.gpu_hours),
        status_counts={s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
        best=best,
    )
    if cb:
        _spent(cb, budget, stopper, rows, record["budget"], search_s, search_started - started)
        log(
            f"budget: {cb['reason']}"
            if cb["ended_by_budget"]
            else f"budget: the search spent {budget.show(cb['spent']['search'])} of its {budget.show(cb['planned']['search'])}"
        )
    write_atomic(state_file, json.dumps(record, indent=2, default=str))
    full = callback(tuner, StopWhenFull)
    if full is not None and full.reason:  # what finished is written; the rest continues with --resume
        raise StorageFull(out, f"{full.reason} (a trial could not write its checkpoint)")
    folder.publish(*STUDY_ARTIFACTS)
    if parent:
        from ..store._tracking import finish_parent, log_budget

        if cb:
            log_budget(uri, parent, cb, planned=True)
        _end_tracking(
            out,
            uri,
            lambda: finish_parent(uri, parent, out, best, metric, rows, bool(unfinished)),
            tuner,
            resume,
            log,
            folder.location,
        )
    return StudyResult(
        out,
        rows,
        best,
        parent,
        chosen,
        unfinished,
        cb,
        search_started,
        folder.location,
        imp.line() if imp is not None else "",
    )


def _search_side(spec: dict[str, Any], backend: TrialSide, cb: dict[str, Any] | None) -> dict[str, Any]:
    """The spec the search's trials run: ``spec`` itself, or, under ``search.epochs``, a copy whose trials (and
    scheduler) are shorter; best.yaml and final training keep ``spec``'s own length."""
    epochs = search_epochs(spec, cb)
    if epochs >= int(spec["train"]["epochs"]):
        return spec
    return backend.shortened({**spec, "scheduler": search_scheduler(spec["scheduler"], epochs)}, epochs)


def plan_budget(
    spec: dict[str, Any], backend: TrialSide, pools: Any, budget: Budget, cluster: dict[str, float], log: Any
) -> dict[str, Any]:
    """Probe the configurations the search draws on this device, size what the spec leaves open
    (num_samples, final epochs) to the budget, and say so; returns study.json's ``compute_budget``."""
    probes, note = probe_configs(spec, backend, pools)
    space = as_searched(spec["space"], spec["search"]["algorithm"])
    parallel = concurrency(spec, cluster.get("CPU", 1), cluster.get("GPU", 0))
    cb = plan(spec, budget, probes, grid_points(space), parallel, backend.gpu_hours, spec["search"]["num_samples"])
    spec["search"]["num_samples"] = cb["num_samples"]
    cb["probe"], cb["probe_note"] = probes, note
    final = f", final training {cb['final_epochs']} epochs x {cb['final_seeds']} seeds" if "final_epochs" in cb else ""
    log(
        f"budget: {budget.text} · search {budget.show(cb['planned']['search'])}: {cb['trials']} trials of "
        f"{trial_length(cb)}, {cb['trial_epochs_expected']:g} on average under the scheduler ({min(p['train_images_per_s'] for p in probes):,.0f} images/s measured)"
        f"{final}" + (f" ({note})" if note else "")
    )
    return cb


def _spent(
    cb: dict[str, Any],
    budget: Budget,
    stopper: Any,
    rows: list[dict[str, Any]],
    search_budget: dict[str, float],
    search_s: float,
    startup_s: float,
) -> None:
    """The search's spend against its share, and whether the budget ended it."""
    cb["startup_s"] = startup_s
    cb["spent"] = {"search": spent_search(budget.unit, rows, search_budget, search_s)}
    cb["spent_seconds"] = {"search": search_s}
    cut = stopper.exhausted or (budget.unit == "seconds" and search_s >= cb["planned"]["search"] - 1.0)
    cb["ended_by_budget"] = bool(cut)
    cb["reason"] = (
        f"the search's share of the budget ({budget.show(cb['planned']['search'])}) was spent; trials "
        f"still running were stopped"
        if cut
        else ""
    )
    totals(cb)


class BudgetStopper(Stopper):
    """Ends the search when its share is spent: epochs reported (summed over trials), GPU-hours (each trial's
    time weighted by its GPU share, by the trial side's rule), or wall-clock seconds since the search began
    (Tune's ``time_budget_s`` as well). Trials it cuts are ``stopped`` by the one status rule.

    Epochs already being trained when the share runs out are not interrupted mid-way by Tune, so an epoch
    budget can be passed by at most one epoch per other running trial; final training takes what is left.
    """

    def __init__(
        self, unit: str, limit: float, gpu: float = 0.0, gpu_hours: Callable[..., float] | None = None
    ) -> None:
        self.unit, self.limit, self.gpu, self.gpu_hours = unit, float(limit), float(gpu), gpu_hours
        self.epochs: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.exhausted = False

    def spent(self) -> float:
        if self.unit == "epochs":
            return float(sum(self.epochs.values()))
        if self.unit == "gpu_hours":
            return sum(self.gpu_hours(s, self.gpu, self.gpu > 0) for s in self.seconds.values())  # type: ignore[misc]
        return time.monotonic() - self.t0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.epochs[trial_id] = int(result.get("epoch", 0) or 0)
        self.seconds[trial_id] = float(result.get("time_total_s", 0) or 0)
        return self.stop_all()

    def stop_all(self) -> bool:
        self.exhausted = self.exhausted or self.spent() >= self.limit
        return self.exhausted


def _check_resumable(file: str, state_file: str, spec: dict[str, Any]) -> None:
    """A study resumes with the spec it started with: any change from the file or --set is refused, named."""
    if not storage.is_file(state_file):
        raise SpecError(
            file, "--resume", f"no study to resume at {storage.parent(state_file)} (it has no {STUDY_FILE})"
        )
    stored = read_json(state_file, "study file")
    # Studies recorded before spec_given kept only the spec fitted to the cluster.
    before = stored.get("spec_given") or stored.get("spec")
    if not isinstance(before, dict):
        raise SpecError(str(state_file), "spec", "missing: not a study written by tune-run, cannot resume it")
    now = json.loads(json.dumps(spec, default=str))  # as study.json holds it
    diffs = spec_differences(before, now)
    if diffs and now != stored.get("spec"):  # the study's own spec.yaml (fitted to the cluster) resumes too
        shown = ", ".join(diffs[:5]) + (f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise SpecError(
            file,
            "--resume",
            f"a study resumes with the spec it started with ({state_file}); "
            f"these keys differ: {shown}. Drop the changes to resume, or start a "
            f"new study (--set experiment.name=…)",
        )
    _check_tune_state(file, storage.parent(state_file))


def _check_tune_state(file: str, folder: str) -> None:
    """Tune's own record of the study must be whole: Tune (Ray 2.60) rewrites it in place, so a disk that filled
    up during a write could leave it cut short (studies written before ``tune_storage``, or written by Tune
    directly), and Tune would then silently start a new study instead."""
    names = sorted(
        n
        for n, is_dir in storage.entries(folder).items()
        if not is_dir and n.startswith("experiment_state-") and n.endswith(".json")
    )
    if not names:
        return
    newest = storage.join(folder, names[-1])  # what Tune restores from (its names sort by time)
    try:
        json.loads(read_text(newest, "Ray Tune state file"))
    except ValueError as exc:  # JSONDecodeError; read_text's own problems are SpecErrors already
        raise SpecError(
            newest,
            "",
            f"Ray Tune's record of the study is cut short ({exc}; written while the disk "
            f"was full?), so it cannot be resumed; start the study again with "
            f"tune-run {file} --overwrite",
        ) from None


def _tune_storage_args(location: str) -> dict[str, Any]:
    path, fs = tune_storage(location)
    return {"storage_path": path, "storage_filesystem": fs}


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


def _end_tracking(
    out: Path, uri: str, finish: Callable[[], None], tuner: Any, resume: bool, log: Any, location: str = ""
) -> None:
    """The parent run's summary. When MLflow writes failed during the study (or it resumed), what MLflow
    lacks is filled in from the study folder (``location``: where the study is, a URI when ``out`` is only
    its staging copy without Tune's trial folders); what still cannot be written is named, with the command
    that fills it in later. The study's own results are on disk either way."""
    from ..store._sync import sync_study
    from ..store._tracking import MlflowTrials

    tracker = callback(tuner, MlflowTrials)
    down = tracker.down if tracker is not None else None
    try:
        if down or resume:
            sync_study(location or out, log=log if down else (lambda *_: None))
        else:
            finish()
    except Exception as err:  # noqa: BLE001  (whatever the store raises, the study's results stand)
        trials = sorted(tracker.incomplete) if tracker is not None else []
        runs = (
            f"the runs of {len(trials)} trial(s) ({', '.join(trials[:5])}{', …' if len(trials) > 5 else ''}) and "
            if trials
            else ""
        )
        first = (str(err).strip().splitlines() or [""])[0][:200]
        log(
            f"warning: MLflow writes failed{' from ' + down if down else ''}: {runs}the study's parent run are "
            f"incomplete in {uri} ({type(err).__name__}: {first}); every result is in {shown(location or out)}. "
            f"When the store is back, fill them in with: tune-run --sync-mlflow {shown(location or out)}"
        )
