"""``tune-compare``'s verdict: for each pair of studies tested on the same images, the difference in test
accuracy (and in each study's selection metric) with a paired bootstrap interval, its p-value, the cost of
each, and a one-line conclusion. The statistics are ``_stats.paired_difference``; this module reads the
seeds' ``predictions.npz`` files and words the result.
"""

from __future__ import annotations

import itertools
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..spec._schema import SpecError
from ._stats import PAIRED_RESAMPLES, STATISTICS, SeedPredictions, paired_difference

# What a seed's predictions.npz (written by tune-run --final) holds: name -> number of dimensions.
PREDICTION_ARRAYS = {"labels": 1, "pred": 1, "probs": 2, "test_digest": 0}
# A study's selection metric (experiment.metric) and the test statistic that measures the same thing.
SELECTION_STATISTIC = {
    "val_acc": "accuracy",
    "val_f1_macro": "f1_macro",
    "val_mcc": "mcc",
    "val_balanced_acc": "balanced_accuracy",
    "val_auc": "auc_roc",
    "val_loss": "log_loss",
}
LABEL = {
    "accuracy": "test accuracy",
    "f1_macro": "macro F1",
    "mcc": "MCC",
    "balanced_accuracy": "balanced accuracy",
    "auc_roc": "AUC-ROC",
    "log_loss": "log loss",
}


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """A seed's per-test-image predictions; a damaged file is one line naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in PREDICTION_ARRAYS if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(str(path), "", f"not a predictions file: {why}") from None
    for key, ndim in PREDICTION_ARRAYS.items():
        if key not in arrays or arrays[key].ndim != ndim:
            raise SpecError(
                str(path), key, f"missing or not {ndim}-dimensional: not a predictions file written by tune-run --final"
            )
    labels, pred, probs = arrays["labels"], arrays["pred"], arrays["probs"]
    if pred.shape != labels.shape or probs.shape[0] != len(labels):
        raise SpecError(
            str(path),
            "pred",
            f"labels, pred and probs must list the same images, got {len(labels)}, {len(pred)} and {probs.shape[0]}",
        )
    k = probs.shape[1]
    for key in ("labels", "pred"):
        a = arrays[key]
        if a.dtype.kind not in "iu" or (len(a) and not 0 <= a.min() <= a.max() < k):
            raise SpecError(str(path), key, f"class indices 0 <= i < {k} (the columns of probs) must hold")
    return arrays


@dataclass
class StudyPredictions:
    """A study's seeds on its test set, or why there are none to pair (``missing``)."""

    name: str
    predictions: SeedPredictions | None = None
    digest: str = ""
    missing: str = ""


def _seed_file(study: dict[str, Any], seed: int) -> Path | None:
    """Where a seed's predictions.npz is: beside the final metrics, or fetched from the final MLflow run."""
    if "mlflow_final_run" in study:
        from mlflow.exceptions import MlflowException

        from ..store._tracking import client_for

        uri, run_id = study["mlflow_final_run"]
        try:
            return Path(client_for(uri).download_artifacts(run_id, f"final/{seed}/predictions.npz"))
        except (MlflowException, OSError):  # not logged: final models from before predictions.npz
            return None
    path = Path(study.get("out_dir", "")) / str(seed) / "predictions.npz"
    return path if path.is_file() else None


def study_predictions(study: dict[str, Any]) -> StudyPredictions:
    """The seeds' predictions stacked (S x N), when every seed has them, on one test set."""
    name = study["experiment"]
    files = [_seed_file(study, int(seed)) for seed in study["seeds"]]
    if not files or None in files:
        return StudyPredictions(
            name,
            missing=f"{name} has no per-image test predictions (predictions.npz; its "
            "final models predate them: rerun its --final)",
        )
    seeds = [read_predictions(f) for f in files]  # type: ignore[arg-type]
    digests = {str(s["test_digest"]) for s in seeds}
    if len(digests) > 1 or any(not np.array_equal(s["labels"], seeds[0]["labels"]) for s in seeds):
        return StudyPredictions(name, missing=f"{name}'s seeds were tested on different images")
    return StudyPredictions(
        name,
        SeedPredictions(
            seeds[0]["labels"], np.stack([s["pred"] for s in seeds]), np.stack([s["probs"] for s in seeds])
        ),
        digests.pop(),
    )


def _p(r: dict[str, Any]) -> str:
    def show(p: float) -> str:
        return "< 1e-12" if p < 1e-12 else f"= {p:.2g}"

    text = f"p {show(r['p_value'])}"
    if r.get("comparisons", 1) > 1:
        text += f", Holm-adjusted over {r['comparisons']} comparisons p {show(r['p_holm'])}"
    return text


def _difference(r: dict[str, Any], a: str, b: str) -> str:
    return f"{a} − {b} = {r['difference']:+.4f}, 95 % CI [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], {_p(r)}"


def _training(cost: dict[str, Any]) -> tuple[float | None, str]:
    """A final model's training cost: GPU-hours when it trained on a GPU, else seconds."""
    if cost.get("gpu_hours"):
        return cost["gpu_hours"], f"{cost['gpu_hours']:.3f} GPU-h"
    seconds = cost.get("train_seconds")
    return seconds, ("–" if seconds is None else f"{seconds:,.0f} s") + " training"


def cost_line(study: dict[str, Any]) -> str:
    cost = study["summary"].get("cost", {})
    lat, params = cost.get("latency_ms"), cost.get("params")
    return (
        f"{study['experiment']} {_training(cost)[1]}, {'–' if lat is None else f'{lat:.2f}'} ms latency, "
        f"{'–' if params is None else f'{params:,.0f}'} params"
    )


# A study is said to cost less only where both its costs are at most this share of the other's: times come from
# runs at different moments of a drifting host. One network in issue 24's 30-minute arms (2026-12-07): 550 and
# 553 s of training a seed, which the verdict had called cheaper, and 12.6 against 15.8 ms of latency.
COST_MARGIN = 2 / 3


def _cheaper(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The study that costs less both to train and to run (batch-1 latency), by ``COST_MARGIN``, or ''."""
    ca, cb = a["summary"].get("cost", {}), b["summary"].get("cost", {})
    ta, tb = _training(ca)[0], _training(cb)[0]
    la, lb = ca.get("latency_ms"), cb.get("latency_ms")
    if ta is None or tb is None or la is None or lb is None or bool(ca.get("gpu_hours")) != bool(cb.get("gpu_hours")):
        return ""
    if ta <= COST_MARGIN * tb and la <= COST_MARGIN * lb:
        return a["experiment"]
    if tb <= COST_MARGIN * ta and lb <= COST_MARGIN * la:
        return b["experiment"]
    return ""


def distinguishable(r: dict[str, Any]) -> bool:
    """Whether a difference is claimed: its p-value, Holm-adjusted over the report's comparisons, below 0.05 (for
    one comparison: its 95 % interval leaves 0 out)."""
    return float(r.get("p_holm", r["p_value"])) < 0.05


def conclusion(r: dict[str, Any], a: str, b: str, stat: str = "accuracy") -> str:
    """'not distinguishable' when the interval holds 0; else which study is better on ``stat``."""
    if not distinguishable(r):
        return f"not distinguishable on {LABEL[stat]}"
    a_higher = r["difference"] > 0
    return f"{a if a_higher == (STATISTICS[stat] == 'max') else b} is better on {LABEL[stat]}"


Comparison = tuple[str, str | None, dict[str, Any]]  # (statistic, the selection metric it measures or None, result)


def pair_results(
    sa: dict[str, Any], sb: dict[str, Any], pa: StudyPredictions, pb: StudyPredictions
) -> tuple[str, list[Comparison]]:
    """Why two studies cannot be paired ('' when they can), and their comparisons: test accuracy, then each
    study's selection metric on the test set."""
    if pa.missing or pb.missing:
        return pa.missing or pb.missing, []
    x, y = pa.predictions, pb.predictions
    assert x is not None and y is not None  # neither is missing
    if pa.digest != pb.digest or not np.array_equal(x.labels, y.labels):
        return f"they were tested on different images (test set {pa.digest} vs {pb.digest})", []
    out: list[Comparison] = [("accuracy", None, paired_difference(x, y, "accuracy"))]
    metrics = dict.fromkeys(((s.get("spec") or {}).get("experiment") or {}).get("metric") for s in (sa, sb))
    for metric in metrics:
        stat = SELECTION_STATISTIC.get(str(metric))
        if stat is None or stat == "accuracy" or (stat == "auc_roc" and x.probs.shape[2] != 2):
            continue  # accuracy is above; a train_* metric has no test counterpart
        out.append((stat, str(metric), paired_difference(x, y, stat)))
    return "", out


def holm(results: list[dict[str, Any]]) -> None:
    """Holm's step-down adjustment over every comparison of one report (all pairs, all statistics): each result
    gains ``p_holm`` and ``comparisons``; a difference is claimed when its ``p_holm`` < 0.05, which holds the
    chance of any false claim in the report at 5 %."""
    m = len(results)
    running = 0.0
    for rank, r in enumerate(sorted(results, key=lambda r: r["p_value"])):
        running = max(running, min(1.0, (m - rank) * r["p_value"]))  # monotone: never below an earlier one
        r["p_holm"], r["comparisons"] = running, m


def pair_lines(sa: dict[str, Any], sb: dict[str, Any], why: str, found: list[Comparison]) -> list[str]:
    """The verdict lines of one pair of studies: the conclusion, each selection metric, failed seeds, costs."""
    a, b = sa["experiment"], sb["experiment"]
    if why:
        return [f"- {a} vs {b}: cannot pair them: {why}"]
    (_, _, acc), *others = found
    cheaper = _cheaper(sa, sb)
    note = f"; {cheaper} costs less to train and to run" if cheaper and not distinguishable(acc) else ""
    lines = [
        f"- {a} vs {b}: {conclusion(acc, a, b)}{note} ({_difference(acc, a, b)}; "
        f"{acc['images']:,} test images, {acc['seeds_a']} and {acc['seeds_b']} seeds)"
    ]
    for stat, metric, r in others:
        better = "higher" if STATISTICS[stat] == "max" else "lower"
        lines.append(
            f"  - {LABEL[stat]} (selection metric {metric}, {better} is better): "
            f"{conclusion(r, a, b, stat)} ({_difference(r, a, b)})"
        )
    lines += [f"  - {line}" for line in (failed_line(sa), failed_line(sb)) if line]
    lines.append(f"  - cost per final model: {cost_line(sa)}; {cost_line(sb)}")
    return lines


def pair_verdict(sa: dict[str, Any], sb: dict[str, Any], pa: StudyPredictions, pb: StudyPredictions) -> list[str]:
    """One pair's verdict lines on their own (Holm over that pair's statistics only)."""
    why, found = pair_results(sa, sb, pa, pb)
    holm([r for _, _, r in found])
    return pair_lines(sa, sb, why, found)


def failed_line(study: dict[str, Any]) -> str:
    """'' when every seed trained; else how often the recipe failed (and which seeds the budget left no time):
    the comparison is of its seeds that trained."""
    failed, planned = study.get("failed_seeds") or [], study.get("seeds_planned") or []
    late = study.get("not_trained_seeds") or []
    if not failed and not late:
        return ""
    said = [f"{len(failed)} of {len(planned)} seeds failed (seeds {', '.join(map(str, failed))})"] if failed else []
    if late:
        said.append(f"{len(late)} of {len(planned)} not trained for want of time (seeds {', '.join(map(str, late))})")
    return f"{study['experiment']}: {'; '.join(said)}; the comparison is of the {len(study['seeds'])} that trained"


def verdict(studies: list[dict[str, Any]]) -> list[str]:
    """Verdict lines for every pair of studies (none for a single study), Holm-adjusted over the whole report."""
    if len(studies) < 2:
        return []
    preds = [study_predictions(s) for s in studies]
    pairs = list(itertools.combinations(range(len(studies)), 2))
    found = {(i, j): pair_results(studies[i], studies[j], preds[i], preds[j]) for i, j in pairs}
    holm([r for _, comparisons in found.values() for _, _, r in comparisons])
    return [line for (i, j) in pairs for line in pair_lines(studies[i], studies[j], *found[(i, j)])]


NOTE = (
    "Each difference is the studies' means over their seeds on the same test images. Its standard error adds the "
    f"test images' part (a paired bootstrap, {PAIRED_RESAMPLES:,} resamples, fixed seed: the images drawn once for "
    "both studies) and the seeds' part (each study's variance over its seeds / their number); 95 % intervals and "
    "two-sided p-values from a Student t with Welch–Satterthwaite degrees of freedom, so 2 or 3 seeds give wide "
    "intervals. A difference is claimed only when its p-value, Holm-adjusted over every comparison in this report "
    "(all pairs, all statistics), is below 0.05. A study with one seed adds no seed-to-seed variation. Calibration: "
    "benchmarks/verdict_calibration.py (BENCHMARKS.md)."
)
