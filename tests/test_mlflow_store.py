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


class _Trial:
    """What the callback reads of a Tune trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.config = trial_id, {"train.lr": 0.1}

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def test_a_trial_retried_from_its_checkpoint_logs_each_epoch_once_but_a_pbt_lineage_logs_its_own(tmp_path):
    """A node dies after the trial reported epoch 3 but before that checkpoint persisted: Tune retries it from
    epoch 2's, and epoch 3 comes again. A PBT exploit also restarts from a checkpoint, without a failure: the
    values it reports at a step it passed are another lineage's, and are kept."""
    from search.store._tracking import MlflowTrials

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client_for(uri)
    exp = c.create_experiment("x")
    parent = c.create_run(exp).info.run_id
    cb = MlflowTrials(uri, "x", parent, {}, max_epochs=4)
    retried, exploited = _Trial("a"), _Trial("b")

    def report(trial: _Trial, epoch: int, value: float) -> None:
        cb.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": value, "timestamp": 1_700_000_000 + epoch})

    for epoch in (1, 2, 3):
        report(retried, epoch, 0.1 * epoch)
        report(exploited, epoch, 0.1 * epoch)
    cb.on_trial_recover(0, [], retried)
    for epoch in (3, 4):
        report(retried, epoch, 0.5 * epoch)
        report(exploited, epoch, 0.5 * epoch)
    runs = {r.data.tags["trial_id"]: r.info.run_id for r in c.search_runs([exp]) if "trial_id" in r.data.tags}
    history = {t: sorted(m.step for m in c.get_metric_history(rid, "val_acc")) for t, rid in runs.items()}
    assert history == {"a": [1, 2, 3, 4], "b": [1, 2, 3, 3, 4]}
