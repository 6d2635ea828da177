"""Final training: K seeds of one configuration as parallel Ray trials, then mean, std and 95 % intervals."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from .._contract import TrialSide
from ..report._stats import t_interval
from ..spec._budget import (
    FINAL_AFTER_S,
    concurrency,
    evaluation_s,
    final_plan,
    final_round_s,
    parse_budget,
    probed_cpus,
)
from ..spec._files import dump_spec, read_json
from ..store import _storage as storage
from ..store._atomic import write_atomic
from ..store._export import OUT_OF_TIME, error_reason
from ..store._paths import final_paths, holds_final, location, mlflow_uri, seed_folder
from ._lifecycle import Lifecycle, now, provenance

# Test metrics summarised over seeds (each seed's metrics.json has them all).
SUMMARY = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "mcc",
    "auc_roc",
    "precision",
    "recall",
    "f1",
)  # the last three: binary tasks' positive class (paper 000)


def summarise(per_seed: list[dict[str, Any]], topk: int) -> dict[str, Any]:
    keys = list(SUMMARY) + [f"top{topk}_accuracy"]
    out = {
        k: t_interval([m["test"].get(k) for m in per_seed])
        for k in keys
        if per_seed and any(m["test"].get(k) is not None for m in per_seed)
    }
    cost_keys = (
        "params",
        "flops_per_image",
        "macs_per_image",
        "throughput_images_per_s",
        "latency_ms",
        "train_seconds",
        "gpu_hours",
    )
    out["cost"] = {
        k: sum(m["cost"][k] for m in per_seed) / len(per_seed)
        for k in cost_keys
        if per_seed and all(k in m["cost"] for m in per_seed)
    }
    if per_seed:  # none finished (an interruption): no cost to report, and the summary prints none
        out["cost"]["train_seconds_total"] = sum(m["cost"]["train_seconds"] for m in per_seed)
    return out


def run_final(
    spec: dict[str, Any],
    backend: TrialSide,
    *,
    file: str,
    overwrite: bool = False,
    address: str | None = None,
    log: Any = print,
    study_file: str | Path | None = None,
    out: str | Path | None = None,
    verbose: bool = False,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``spec`` once per ``final.seeds`` on the full training data and evaluate each on the test split.

    ``study_file`` is the search's study.json (default: beside the spec, as for runs/<study>/best.yaml),
    whose budget is reported next to the final numbers. Models go to ``out``: by default
    ``runs/<study>/final`` for a study's best.yaml, else ``<output_dir>/<name>/final`` (paths or URIs).
    ``budget``: the study's compute budget left for final training (``size_final``).
    """
    study_file, default_out = final_paths(spec, file, study_file)
    target = location(out) if out else default_out
    run = Lifecycle(spec, backend, target, file=file, key="--final", address=address, log=log, verbose=verbose)
    run.claim(
        holds_final,
        "final models",
        overwrite=overwrite,
        missing="no metrics.json or seed folders",
        hint="pass --overwrite to replace them",
        keep=seed_folder,  # each old model stays until its seed's new one is complete (trainables' whole_folder)
    )
    pools = run.prepare()  # before anything is written
    cluster = run.start_ray(pools)
    sized = size_final(spec, backend, pools, budget, cluster, log) if budget else None
    name, max_epochs = spec["experiment"]["name"], backend.final_epochs(spec)
    run.track(
        run_name=f"{name}/final",
        role="final",
        child_role="final-seed",
        max_epochs=max_epochs,
        dataset=backend.dataset_info(spec, pools),
    )
    # Trials write their model folders into a local (or shared) out; to a URI they return them as checkpoints.
    trainable = backend.make_final_trainable(
        spec, pools, None if run.folder.remote else str(run.out), sized.get("ends_by") if sized else None
    )
    del pools  # in Ray's object store now; the driver's copy would double the memory while seeds train
    from ray import tune

    run.tuner(
        trainable,
        name="ray",
        location=run.folder.location,
        title=f"{name} final training",
        unit="seed",
        max_epochs=max_epochs,
        param_space={"seed": tune.grid_search(list(spec["final"]["seeds"]))},
        # A seed after the first ones starts in a finished seed's process: no interpreter, torch and data to load
        # again (5 of the quickstart's 38 s); search.reuse_actors turns it off for both.
        tune_config=tune.TuneConfig(reuse_actors=spec["search"]["reuse_actors"]),
    )
    summary = _summary(run, run.fit(), study_file, sized)
    run.publish("metrics.json", "spec.yaml", writer="a seed could not write its model folder")
    _drop_dropped_seeds(run, summary)
    _track_models(run, summary)
    return summary


def _track_models(run: Lifecycle, summary: dict[str, Any]) -> None:
    """Each final model as an MLflow model of the final run (through the trial side), and the summary's metrics."""
    if not run.parent:
        return
    from ..store._models import log_final_models

    uri = mlflow_uri(run.spec)
    log_final_models(uri, run.parent, run.out, summary["seeds"], run.backend, run.log)
    _log_final(uri, run.parent, run.out, summary)


def _summary(run: Lifecycle, grid: Any, study_file: str, sized: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json (and spec.yaml) from the seeds that finished: per seed, summarised over seeds, and errors."""
    spec, backend, out, folder = run.spec, run.backend, run.out, run.folder
    errors = [error_reason(str(r.error), {}, partial(backend.oom_reason, spec)) for r in grid if r.error is not None]
    # A seed that ended itself on a user error or divergence reported it (not raised: Tune would retry it).
    errors += [str(r.metrics["reason"]) for r in grid if r.error is None and (r.metrics or {}).get("error")]
    # Interrupted (Ctrl-C, SIGTERM): seeds Tune had not ended are not final models, whatever they wrote.
    unfinished = sorted(int(tt.config["seed"]) for tt in grid._experiment_analysis.trials if not run.ended(tt.trial_id))
    if folder.remote:
        _fetch_models(grid, unfinished, folder)
    # A seed that raised (a full disk among the causes) is no final model, whatever it left in its folder.
    # So is one that reported an error: its folder may still hold the model it replaces (--overwrite).
    failed = {
        int((r.config or {}).get("seed", -1)) for r in grid if r.error is not None or (r.metrics or {}).get("error")
    }
    # A seed the budget's deadline left too little time did not train: its folder may hold a previous model.
    late = {
        int(r.config["seed"]): str(r.metrics.get("reason", ""))
        for r in grid
        if r.error is None and (r.metrics or {}).get(OUT_OF_TIME)
    }
    per_seed = [
        json.loads((out / str(s) / "metrics.json").read_text())
        for s in spec["final"]["seeds"]
        if s not in unfinished and s not in failed and s not in late and (out / str(s) / "metrics.json").is_file()
    ]
    search_budget = read_json(study_file, "study file").get("budget") if storage.is_file(study_file) else None
    seeds, retrained = list(spec["final"]["seeds"]), {m["seed"] for m in per_seed}
    summary = {
        "experiment": spec["experiment"]["name"],
        **backend.tags(spec),
        "report_axes": backend.report_axes(spec),
        "seeds": [m["seed"] for m in per_seed],
        "errors": errors,
        # A recipe that fails one time in three must read as such: the seeds it was trained with, those that failed.
        "seeds_planned": seeds,
        "failed_seeds": sorted(s for s in failed if s in seeds),
        # and those the budget left without time: not a failure of the recipe, and not in its numbers either
        "not_trained_seeds": sorted(late),
        "not_trained_reason": next(iter(late.values()), ""),
        "summary": summarise(per_seed, int(spec["final"]["topk"])),
        "per_seed": [
            {
                "seed": m["seed"],
                **{k: m["test"].get(k) for k in SUMMARY},
                "accuracy_bootstrap_ci": m["test"].get("accuracy_bootstrap_ci"),
                "device": m["device"],
            }
            for m in per_seed
        ],
        "history": {m["seed"]: m["history"] for m in per_seed},
        "search_budget": search_budget,
        "spec": spec,
        "provenance": provenance(),
        "finished": now(),
        "mlflow_run_id": run.parent,
        "out_dir": folder.location,
        "unfinished": unfinished,
        # --overwrite: seeds whose new model did not complete keep their previous one (not in these numbers).
        "previous_models": [int(n) for n in run.kept if int(n) in seeds and int(n) not in retrained],
        **({"budget_plan": sized} if sized else {}),
    }
    write_atomic(out / "metrics.json", json.dumps(summary, indent=2, default=str))
    write_atomic(out / "spec.yaml", dump_spec(spec))
    return summary


def size_final(
    spec: dict[str, Any], backend: TrialSide, pools: Any, budget: dict[str, Any], cluster: dict[str, float], log: Any
) -> dict[str, Any]:
    """Final epochs that fit what the study's budget left (``budget``: ``budget`` text, ``available`` in its
    unit, and for a study's wall clock its ``deadline`` in time.monotonic()), from a probe of this configuration; a
    final.epochs the spec sets is kept."""
    b = parse_budget(budget["budget"], "study.json")
    now = time.time()  # before the probe: the probe's seconds are spent from what is left
    # A study's wall-clock share ends at its deadline; --final --budget alone has none: all of it, from now.
    available = (
        budget["deadline"] - time.monotonic() if b.unit == "seconds" and budget.get("deadline") else budget["available"]
    )
    probes = [backend.probe(spec, pools)]
    parallel = concurrency(spec, cluster.get("CPU", 1), cluster.get("GPU", 0), probed_cpus(probes))
    fp = final_plan(spec, b, available, probes, parallel, backend.gpu_hours, bool(budget.get("stretch")))
    spec["final"]["epochs"] = fp["final_epochs"]
    ends_by = None
    if b.unit == "seconds":  # a promise: each round of seeds trains within its share, re-planned if slower
        rounds = int(fp["final_rounds"])
        spec["final"]["time_limit_s"] = max(1.0, available / rounds - final_round_s(probes))
        # and all of them by the study's deadline less what follows training: a slow start (workers, data)
        # shortens the seeds, not the promise
        ends_by = now + available - FINAL_AFTER_S - evaluation_s(probes)
        # Epochs the plan sized (not the spec's) grow back towards the recipe's when the seeds run faster than
        # the probe said: what is left of the budget trains the models, it is not left unspent.
        spec["final"]["fill_time_limit"] = fp["final_epochs_from"] == "budget"
    stretched = (
        f"; train.epochs {int(spec['scheduler']['max_t'])} stretched: no search ran" if fp["final_stretched"] else ""
    )
    log(
        f"budget: final training {fp['final_epochs']} epochs x {fp['final_seeds']} seeds "
        f"({'sized to the ' + b.show(max(available, 0)) + ' left' if fp['final_epochs_from'] == 'budget' else 'final.epochs'}"
        f"{stretched})"
    )
    return {**fp, "available": available, "ends_by": ends_by}


def _drop_dropped_seeds(run: Lifecycle, summary: dict[str, Any]) -> None:
    """After a retrain that ran to its end (--overwrite), the previous models of seeds no longer in final.seeds
    go: the folder then holds this run's seeds only. An interrupted retrain leaves them."""
    if summary["unfinished"]:
        return
    for name in run.kept:
        if int(name) not in run.spec["final"]["seeds"]:
            storage.remove(storage.join(run.target, name))


def _fetch_models(grid: Any, unfinished: list[int], folder: storage.Folder) -> None:
    """Each finished seed's model folder, returned as its trial's checkpoint (already in storage, under
    ``ray/``), copied to the staging folder's ``<seed>/`` and published there as ``<uri>/<seed>``."""
    for r in grid:
        seed = int((r.config or {}).get("seed", -1))
        if r.checkpoint is None or seed in unfinished:
            continue
        r.checkpoint.to_directory(str(folder.local / str(seed)))
        folder.publish(str(seed))


def _log_final(uri: str, parent: str, out: Path, summary: dict[str, Any]) -> None:
    from ..store._tracking import client_for

    c = client_for(uri)
    for k, v in summary["summary"].items():
        if k != "cost" and v.get("mean") is not None:
            c.log_metric(parent, f"test_{k}_mean", v["mean"])
            if v.get("ci_low") is not None:
                c.log_metric(parent, f"test_{k}_ci_low", v["ci_low"])
                c.log_metric(parent, f"test_{k}_ci_high", v["ci_high"])
    for k, v in summary["summary"].get("cost", {}).items():
        c.log_metric(parent, f"cost_{k}", float(v))
    for seed in summary["seeds"]:
        d = out / str(seed)
        for name in (
            "metrics.json",
            "per_class.csv",
            "confusion.png",
            "roc.png",
            "curves.png",
            "spec.yaml",
            "meta.json",
            "model.safetensors",
            "predictions.npz",
        ):
            if (d / name).is_file():
                c.log_artifact(parent, str(d / name), artifact_path=f"final/{seed}")
    c.log_artifact(parent, str(out / "metrics.json"), artifact_path="final")
    status = "KILLED" if summary["unfinished"] else "FAILED" if summary["errors"] else "FINISHED"
    c.set_terminated(parent, status=status)
