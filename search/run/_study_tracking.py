"""A study's MLflow parent run at its end: the budget, the summary, and what a store that went away lacks, filled
in from the study folder or named with the command that fills it in later."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store._paths import mlflow_uri, shown
from ._lifecycle import Lifecycle


def track_study(
    run: Lifecycle, cb: dict[str, Any] | None, best: Any, rows: list[dict[str, Any]], unfinished: bool, resume: bool
) -> None:
    from ..store._tracking import MlflowTrials, finish_parent, log_budget

    uri, parent, out, metric = mlflow_uri(run.spec), run.parent, run.out, run.spec["experiment"]["metric"]
    assert parent is not None
    end_tracking(
        out,
        uri,
        lambda: finish_parent(uri, parent, out, best, metric, rows, unfinished),
        run.callback(MlflowTrials),
        resume,
        run.log,
        run.folder.location,
        budget=(lambda: log_budget(uri, parent, cb, planned=True)) if cb else None,
    )


def end_tracking(
    out: Path,
    uri: str,
    finish: Callable[[], None],
    tracker: Any,
    resume: bool,
    log: Any,
    location: str = "",
    budget: Callable[[], None] | None = None,
) -> None:
    """The parent run's summary. When MLflow writes failed during the study (or it resumed), what MLflow
    lacks is filled in from the study folder (``location``: where the study is, a URI when ``out`` is only
    its staging copy without Tune's trial folders); what still cannot be written is named, with the command
    that fills it in later. The study's own results are on disk either way. ``budget``: logs the
    study's budget, under the same rule."""
    from ..store._sync import sync_study

    down = tracker.down if tracker is not None else None
    try:
        if down or resume:
            sync_study(location or out, log=log if down else (lambda *_: None))
        else:
            finish()
        if budget is not None:
            budget()
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
