"""Where a study reads and writes: every path and URI made absolute here, and only here.

Relative paths break in three ways: Ray Tune's storage takes only absolute paths or URIs (pyarrow:
"URI has empty scheme"), trials run in their own working directories, and MLflow resolves a
relative SQLite file or artifact location against whichever process happens to open it. So
``output_dir`` and ``tracking.mlflow_uri`` are read against the working directory of the command
(as the spec format documents), and what sits beside a spec file (best.yaml's study.json) against
that file.

A location may also be a storage URI (``s3://bucket/prefix``, ``gs://…``; see ``_storage``): kept as
given, and what sits beside a file at a URI is beside it there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..spec._schema import SpecError
from . import _storage as storage

STUDY_FILE = "study.json"
# Which settings mattered (written by _importance): the shares, and the parallel-coordinates plot.
IMPORTANCE_FILE, PARALLEL_FILE = "importance.json", "parallel_coordinates.png"
# A finished study's summary files: published together, and attached to its MLflow run.
# A multi-objective study's front (written by report._pareto).
PARETO_FILE = "pareto.png"
STUDY_ARTIFACTS = ("trials.csv", "best.yaml", STUDY_FILE, IMPORTANCE_FILE, PARALLEL_FILE, PARETO_FILE)
FINAL_DIR = "final"
SQLITE = "sqlite:///"


def absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def location(path: str | Path) -> str:
    """A place to read or write as every command keeps it: a URI as given, a local path made absolute."""
    return str(path).rstrip("/") if storage.is_uri(path) else str(absolute(path))


def study_dir(spec: dict[str, Any]) -> str:
    """``<output_dir>/<name>``: the study's results and Ray's experiment state (a path or a URI)."""
    return storage.join(location(spec["experiment"]["output_dir"]), spec["experiment"]["name"])


def shown(path: str | Path) -> str:
    """``path`` as a user would type it: a URI as it is, a path relative when under the working directory."""
    if storage.is_uri(path):
        return storage.redact(str(path))
    rel = os.path.relpath(path)
    return Path(path).as_posix() if rel.startswith("..") else rel


def final_paths(spec: dict[str, Any], file: str | Path, study_file: str | Path | None = None) -> tuple[str, str]:
    """(the search's study.json, the folder final models go to), as paths or URIs.

    The study.json beside the spec file (runs/<study>/best.yaml) by default; the models go beside
    that study.json when it exists (``final/`` for best.yaml, ``final-<stem>/`` for another spec there, such as a
    point ``tune-run --pick`` exported), else to ``<output_dir>/<name>/final``.
    """
    beside_spec = study_file is None  # the study.json beside the spec file, not one a search names
    study_file = location(study_file) if study_file else storage.join(storage.parent(location(file)), STUDY_FILE)
    if not storage.is_file(study_file):
        return study_file, storage.join(study_dir(spec), FINAL_DIR)
    stem = Path(storage.name(location(file))).stem
    sub = f"{FINAL_DIR}-{stem}" if beside_spec and stem != "best" else FINAL_DIR
    return study_file, storage.join(storage.parent(study_file), sub)


def tracking_uri(uri: str) -> str:
    """An MLflow tracking URI whose SQLite file is absolute (servers and other stores as given)."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(absolute(uri[len(SQLITE) :]))
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
    return str(Path(uri[len(SQLITE) :]).parent / "mlruns" / folder)


def check_storage(out: str, file: str, key: str) -> None:
    """A storage URI that cannot hold the results (unreachable, no such bucket, refused credentials) is
    one line before anything starts; local folders are checked as they are written."""
    problem = storage.check(out)
    if problem:
        raise SpecError(file, key, problem)


def claim(
    out: str,
    ours: Callable[[dict[str, bool]], bool],
    what: str,
    *,
    file: str,
    key: str,
    overwrite: bool,
    hint: str,
    missing: str,
) -> bool:
    """Whether ``out`` (a path or URI) must be deleted before ``what`` is written there; refuses (SpecError)
    when it may not be.

    Only a folder that ``ours`` recognises (from its entries, ``{name: is a folder}``) is ever deleted,
    and only with --overwrite: a mistyped output_dir or a folder of the user's own files is left alone.
    """
    entries = storage.entries(out)
    if not entries:
        return False
    if not ours(entries):
        raise SpecError(
            file,
            "--overwrite" if overwrite else key,
            f"{out} holds files that are not {what} ({missing}), so it is neither replaced nor "
            f"reused; choose another experiment.name or output_dir, or move those files",
        )
    if not overwrite:
        raise SpecError(file, key, f"{out} already holds {what}; {hint}")
    return True


def holds_study(entries: dict[str, bool]) -> bool:
    return entries.get(STUDY_FILE) is False  # a file


def holds_final(entries: dict[str, bool]) -> bool:
    """Final models: the summary metrics.json, a seed folder (0, 1, …) or the Ray state of an interrupted run."""
    return (
        entries.get("metrics.json") is False
        or entries.get("ray") is True
        or any(seed_folder(name, is_dir) for name, is_dir in entries.items())
    )


def seed_folder(name: str, is_dir: bool) -> bool:
    """One final model's folder, named for its seed (``0``, ``1``, ``-3``)."""
    return is_dir and name.lstrip("-").isdigit()
