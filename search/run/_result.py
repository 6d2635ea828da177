"""What a study returns to the command that ran it (and to its final training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    stalled: list[str] = field(default_factory=list)  # paused trials the study ended on (search.stall_timeout_s)
    best_rule: str = ""  # how the best trial was picked (select_best)
