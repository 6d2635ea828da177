"""The study that runs no search: a budget the plan found no room to search in (``compute_budget["skipped_because"]``)
goes whole to final training of the recipe (as written, or at the size the budget took: ``spec/_sizes.py``)."""

from __future__ import annotations

import json
import time
from typing import Any

from ..spec._files import dump_spec
from ..spec._sizes import recipe_name
from ..spec._space import searched_keys
from ..store._atomic import write_atomic
from ..store._export import write_trials
from ..store._paths import STUDY_ARTIFACTS, STUDY_FILE
from ._lifecycle import Lifecycle, now
from ._result import StudyResult
from ._study_tracking import track_study

RECIPE = "the recipe as written (no search: the budget left it no room to pay)"  # best_rule of such a study


def recipe_only(run: Lifecycle, record: dict[str, Any], cb: dict[str, Any], started: float) -> StudyResult:
    """A budgeted study the plan found no room to search in (``cb["skipped_because"]``): no trial runs; best.yaml
    is the recipe as written, and final training gets the whole budget, as ``tune-run --final --budget`` would."""
    from ..store._export import best_spec

    spec, out = run.spec, run.out
    search_started = time.monotonic()
    cb.update(
        spent={"search": 0.0}, spent_seconds={"search": 0.0}, startup_s=search_started - started, ended_by_budget=False
    )
    write_trials(out / "trials.csv", [], searched_keys(spec["space"]), spec["experiment"]["metric"])
    header = (
        f"# Study {spec['experiment']['name']!r} ran no search ({cb['skipped_because']}): "
        f"{recipe_name(cb.get('size'))}.\n"
        f"# Runs as is: tune-run {out / 'best.yaml'}   (final training and test evaluation: add --final)\n"
    )
    write_atomic(out / "best.yaml", header + dump_spec(best_spec(spec, {}, run.backend, run.parent)))
    record.update(finished=now(), trials=0, interrupted=False, stalled=[], best=None, best_rule=RECIPE)
    write_atomic(out / STUDY_FILE, json.dumps(record, indent=2, default=str))
    run.folder.publish(*STUDY_ARTIFACTS)
    if run.parent:  # as a search's study ends: a store gone away is named with the command that fills it in
        track_study(run, cb, None, [], unfinished=False, resume=False)
    best = {"trial_id": "recipe", "status": "recipe"}
    return StudyResult(out, [], best, run.parent, {}, 0, cb, search_started, run.folder.location, "", [], RECIPE)
