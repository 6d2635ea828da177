"""What tune-run prints when a study or its final training ends, and the budget's bookkeeping between the two."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from typing import Any

from ..store import _storage as storage
from ..store._atomic import write_atomic
from ..store._paths import mlflow_uri, shown

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


def budget_left(result: Any) -> dict[str, Any] | None:
    """What the study's budget leaves final training: its share and whatever the search did not spend."""
    cb = result.compute_budget
    if not cb:
        return None
    left = cb["planned"]["total"] - cb["spent"]["search"]
    return {
        "budget": cb["budget"],
        "available": left,
        "deadline": result.search_started + cb["planned"]["total"],
        "stretch": cb.get("search") == "skipped",  # the search's share may stretch the final schedule
    }


def final_spent(spec: dict[str, Any], result: Any, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Add final training's spend to study.json's compute budget and the study's MLflow run."""
    from ..store._tracking import log_budget
    from ._spend import spent_final, totals

    cb = result.compute_budget
    cb["spent"]["final"] = spent_final(cb["unit"], summary, seconds)
    cb["spent_seconds"]["final"] = seconds
    cb["final"] = summary.get("budget_plan")
    totals(cb)
    state = result.out_dir / "study.json"
    record = json.loads(state.read_text())
    record["compute_budget"] = cb
    write_atomic(state, json.dumps(record, indent=2, default=str))
    if result.parent_run_id:
        log_budget(mlflow_uri(spec), result.parent_run_id, cb, planned=False)
    return cb


def budget_summary(cb: dict[str, Any]) -> None:
    from ._spend import lines

    print("\n".join(lines(cb)))


def study_summary(spec: dict[str, Any], result: Any) -> None:
    metric = spec["experiment"]["metric"]
    counts: dict[str, int] = {}
    for r in result.rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    skipped = (result.compute_budget or {}).get("skipped_because")
    ran = (
        "no trials: the budget goes to the recipe"
        if skipped
        else f"{len(result.rows)} trials ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
    )
    print(f"\nStudy {spec['experiment']['name']!r}: {ran}")
    print(
        f"  results:     {shown(result.location)} (trials.csv, study.json{', pareto.png' if result.rows and 'pareto' in result.rows[0] else ''})"
    )
    if counts.get("oom"):  # each trial's reason names its sizes; what to change for the study is said once
        print(
            f"  out of memory: {counts['oom']} trial(s), see their reason in trials.csv: lower train.batch_size "
            f"or data.image_size, or run fewer trials at once (search.max_concurrent, or more resources.cpu / "
            f"resources.gpu per trial)"
        )
    if skipped:
        print(f"  best:        the recipe as written: no search ran ({skipped})")
        print(f"  best config: {shown(storage.join(result.location, 'best.yaml'))}")
    elif result.best:
        b = result.best
        print(
            f"  best:        trial {b['trial_id']}, {metric}={b[f'final_{metric}']:.4f} at its last epoch ({b['epochs']}), "
            f"picked by {result.best_rule}"
        )
        print(f"  best config: {shown(storage.join(result.location, 'best.yaml'))}")
    else:
        print("  best:        none (no trial produced a metric)")
    if result.importance:
        print(f"  {result.importance} ({shown(storage.join(result.location, 'importance.json'))})")
    if result.parent_run_id:
        print(
            f"  MLflow:      {mlflow_uri(spec)} (parent run {result.parent_run_id}); "
            f"mlflow ui --backend-store-uri {mlflow_uri(spec)}"
        )


def no_answer(spec_file: str, spec: dict[str, Any], result: Any) -> str:
    """The error line of a study in which no trial produced the metric (failed, infeasible, or stopped before its
    first report): it has no best configuration to export or train."""
    counts = Counter(str(r.get("status")) for r in result.rows)
    statuses = ", ".join(f"{n} {status}" for status, n in counts.most_common()) or "no trial ran"
    return (
        f"tune-run: error: {spec_file}: no trial produced {spec['experiment']['metric']} ({statuses}), so there is "
        f"no best configuration to export or train; each trial's reason is in "
        f"{shown(storage.join(result.location, 'trials.csv'))}"
    )


def unmet_pick(spec: dict[str, Any], result: Any) -> str:
    """Why a study whose trials were scored has no best.yaml: none meets ``experiment.pick`` ('' otherwise)."""
    pick = spec["experiment"].get("pick")
    if not pick or not any(r.get("pareto") == 1 for r in result.rows):
        return ""
    return (
        f"no compared trial meets experiment.pick ({pick}), so there is no best.yaml; the front is the trials with "
        f"pareto 1 in {shown(storage.join(result.location, 'trials.csv'))} and pareto.png beside it"
    )


def final_summary(summary: dict[str, Any], spec_file: str) -> int:
    """Print the final numbers; the exit status (130 when seeds were left unfinished by an interruption)."""
    s, failed = summary["summary"], summary.get("failed_seeds") or []
    planned = summary.get("seeds_planned") or summary["seeds"]
    print(
        f"\nFinal training of {summary['experiment']!r}: seeds {summary['seeds']}"
        + (
            f"; {len(failed)} of {len(planned)} seeds failed (seeds {failed}; not in the numbers below): "
            f"{summary['errors'][0]}"
            if failed and summary["errors"]
            else f", {len(summary['errors'])} failed: {summary['errors'][0]}"
            if summary["errors"]
            else ""
        )
    )
    if any(v.get("ci_low") is not None for k, v in s.items() if k != "cost"):
        print(
            "  (95% CI: a t-interval over the seeds, their spread only; each seed's test-set bootstrap is in metrics.json)"
        )
    for key, v in s.items():
        if key == "cost" or v.get("mean") is None:
            continue
        ci = f"  95% CI [{v['ci_low']:.4f}, {v['ci_high']:.4f}]" if v.get("ci_low") is not None else ""
        std = f" ± {v['std']:.4f}" if v.get("std") is not None else ""
        print(f"  test {key:<18} {v['mean']:.4f}{std}{ci}")
    c = s.get("cost", {})
    if c:
        print(
            f"  params {c['params']:,.0f} · {c['flops_per_image'] / 1e6:,.1f} MFLOPs/image "
            f"({c.get('macs_per_image', 0) / 1e6:,.1f} M multiply-adds) · "
            f"{c['throughput_images_per_s']:,.0f} images/s · {c['latency_ms']:.2f} ms latency · "
            f"{c['train_seconds_total']:.0f} s training"
        )
    print(f"  models and metrics: {shown(summary['out_dir'])}")
    if summary.get("not_trained_seeds"):
        print(
            f"  seeds {summary['not_trained_seeds']} of {len(planned)} not in these numbers: "
            f"{summary['not_trained_reason']}"
        )
    if summary.get("previous_models"):
        print(f"  seeds {summary['previous_models']} keep their previous final models: not retrained this time")
    if summary.get("unfinished"):
        print(
            f"\nInterrupted: seeds {summary['unfinished']} unfinished (not in the numbers above). "
            f"Train them again with: {shlex.join(['tune-run', spec_file, '--final', '--overwrite'])}"
        )
        return EXIT_INTERRUPTED
    return 0
