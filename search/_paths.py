"""Where a study reads and writes: every path and URI made absolute here, and only here.

Relative paths break in three ways: Ray Tune's storage takes only absolute paths or URIs (pyarrow:
"URI has empty scheme"), trials run in their own working directories, and MLflow resolves a
relative SQLite file or artifact location against whichever process happens to open it. So
``output_dir`` and ``tracking.mlflow_uri`` are read against the working directory of the command
(as the spec format documents), and what sits beside a spec file (best.yaml's study.json) against
that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from ._spec import SpecError

STUDY_FILE = "study.json"
FINAL_DIR = "final"
SQLITE = "sqlite:///"


def absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def study_dir(spec: dict[str, Any]) -> Path:
    """``<output_dir>/<name>``: the study's results and Ray's experiment state."""
    return absolute(spec["experiment"]["output_dir"]) / spec["experiment"]["name"]


def shown(path: Path) -> str:
    """``path`` as a user would type it: relative when under the working directory."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


def final_paths(spec: dict[str, Any], file: str | Path, study_file: Path | None = None) -> tuple[Path, Path]:
    """(the search's study.json, the folder final models go to).

    The study.json beside the spec file (runs/<study>/best.yaml) by default; the models go beside
    that study.json when it exists, else to ``<output_dir>/<name>/final``.
    """
    study_file = absolute(study_file) if study_file else absolute(file).parent / STUDY_FILE
    return study_file, (study_file.parent if study_file.is_file() else study_dir(spec)) / FINAL_DIR


def tracking_uri(uri: str) -> str:
    """An MLflow tracking URI whose SQLite file is absolute (servers and other stores as given)."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(absolute(uri[len(SQLITE):]))
    return uri


def mlflow_uri(spec: dict[str, Any]) -> str:
    return tracking_uri(spec["tracking"]["mlflow_uri"])


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store, absolute.

    MLflow's default (``./mlruns``) depends on the working directory of the process that creates
    the experiment. Other stores (a tracking server) decide for themselves: None.
    """
    uri = tracking_uri(uri)
    if not uri.startswith(SQLITE):
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", experiment)
    return str(Path(uri[len(SQLITE):]).parent / "mlruns" / folder)


def claim(out: Path, ours: Callable[[Path], bool], what: str, *, file: str, key: str, overwrite: bool,
          hint: str, missing: str) -> bool:
    """Whether ``out`` must be deleted before ``what`` is written there; refuses (SpecError) when it may not be.

    Only a folder that ``ours`` recognises is ever deleted, and only with --overwrite: a mistyped
    output_dir or a folder of the user's own files is left alone.
    """
    if not out.exists() or not any(out.iterdir()):
        return False
    if not ours(out):
        raise SpecError(file, "--overwrite" if overwrite else key,
                        f"{out} holds files that are not {what} ({missing}), so it is neither replaced nor "
                        f"reused; choose another experiment.name or output_dir, or move those files")
    if not overwrite:
        raise SpecError(file, key, f"{out} already holds {what}; {hint}")
    return True


def holds_study(folder: Path) -> bool:
    return (folder / STUDY_FILE).is_file()


def holds_final(folder: Path) -> bool:
    """Final models: the summary metrics.json, a seed folder (0, 1, …) or the Ray state of an interrupted run."""
    return (folder / "metrics.json").is_file() or (folder / "ray").is_dir() or any(
        d.is_dir() and d.name.lstrip("-").isdigit() for d in folder.iterdir())
