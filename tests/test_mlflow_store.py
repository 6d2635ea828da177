"""A study's new SQLite tracking store is MLflow's own, made from an empty store of this MLflow version instead of
MLflow's schema migrations (about 3 s of CPU each time)."""

from __future__ import annotations

import sqlite3

import mlflow
from mlflow.tracking import MlflowClient

from search.store._mlflow_store import STORE_TEMPLATES
from search.store._tracking import client_for


def _schema(db) -> dict[str, set[str]]:
    """Each table's and index's definition as a set of clauses: MLflow's own stores list a table's constraints in
    an order that changes from one run to the next (a set in its migrations)."""
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {name: {part.strip(" \t\n()") for part in (sql or "").split(",")} for name, sql in rows}


def test_a_new_store_is_the_one_mlflow_makes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TUNE_CACHE_DIR", str(cache))
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    monkeypatch.chdir(tmp_path / "theirs")
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'theirs' / 'mlflow.db'}").search_experiments()  # MLflow's
    monkeypatch.chdir(tmp_path / "mine")
    c = client_for("sqlite:///mlflow.db")  # relative, as a spec's default
    assert (cache / STORE_TEMPLATES / f"mlflow-{mlflow.__version__}.db").is_file()
    assert _schema(tmp_path / "mine" / "mlflow.db") == _schema(tmp_path / "theirs" / "mlflow.db")
    with sqlite3.connect(tmp_path / "mine" / "mlflow.db") as db:
        assert db.execute("SELECT * FROM alembic_version").fetchall() == [(mlflow_head(tmp_path),)]
    # Its Default experiment keeps artifacts in ./mlruns of the working directory that made it, as MLflow's does.
    assert c.get_experiment("0").artifact_location == str(tmp_path / "mine" / "mlruns" / "0")
    run = c.create_run(c.create_experiment("e"))
    c.log_metric(run.info.run_id, "val_acc", 0.5)
    assert c.get_run(run.info.run_id).data.metrics == {"val_acc": 0.5}
    # An existing store is MLflow's to open: never replaced by an empty one.
    client_for("sqlite:///mlflow.db")
    assert [e.name for e in MlflowClient(tracking_uri="sqlite:///mlflow.db").search_experiments()] == ["e", "Default"]
    assert not list((tmp_path / "mine").glob(".*.part"))  # nothing half-made left beside it


def mlflow_head(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "theirs" / "mlflow.db") as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
