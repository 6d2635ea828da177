"""A new SQLite tracking store, made as MLflow makes it but in milliseconds."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

SQLITE = "sqlite:///"
# A new SQLite store is a copy of an empty one made once per MLflow version: MLflow builds a store by running
# every schema migration since its first release (about 3 s of CPU), the same for every study's new mlflow.db.
# Beside the decoded data sets' cache (TUNE_CACHE_DIR, read when a store is made).
STORE_TEMPLATES = "mlflow-stores"


def new_sqlite_store(path: Path) -> None:
    """Create the SQLite store ``path`` (when it does not exist) as MLflow would, from the empty store of this
    MLflow version; its Default experiment keeps its artifacts in ./mlruns of this working directory, as
    MLflow's own."""
    import mlflow

    if path.exists() or not path.parent.is_dir():
        return  # an existing store is MLflow's to open (and upgrade); a missing folder is check_store's error
    cache = Path(os.environ.get("TUNE_CACHE_DIR", Path.home() / ".cache" / "tune-run"))
    template = cache / STORE_TEMPLATES / f"mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        _make_template(template)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    shutil.copyfile(template, part)
    now = int(time.time() * 1000)
    with contextlib.closing(sqlite3.connect(part)) as db, db:
        db.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
            "WHERE experiment_id = 0",
            (str(Path.cwd() / "mlruns" / "0"), now, now),
        )
    try:
        os.link(part, path)  # never over a store another process created meanwhile
    except FileExistsError:
        pass
    finally:
        part.unlink()


def _make_template(template: Path) -> None:
    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    MlflowClient(tracking_uri=SQLITE + str(part)).search_experiments()  # MLflow creates and migrates it
    os.replace(part, template)
