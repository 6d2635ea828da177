"""Final models in MLflow: each seed's model logged in its own run (the trial side says how a model becomes an
MLflow model, ``TrialSide.log_model``), so that the registry takes it as is."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class ExportBackend(Protocol):
    def log_model(self, model_dir: Path, name: str, params: dict[str, int | str]) -> str: ...


def seed_runs(client: Any, parent: str) -> dict[str, str]:
    """The final run's per-seed child runs, {seed: run id}."""
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.params["seed"]: r.info.run_id for r in runs if "seed" in r.data.params}


def log_final_models(
    uri: str, parent: str, out: Path, seeds: list[int], backend: ExportBackend, log: Any = print
) -> dict[int, str]:
    """Log every seed's model (in its own run, else the final run); returns {seed: model URI}.

    A model MLflow cannot take is reported and skipped: the trained models and metrics are on disk already.
    """
    import mlflow

    from ._tracking import client_for

    mlflow.set_tracking_uri(uri)
    runs = seed_runs(client_for(uri), parent)
    uris = {}
    for seed in seeds:
        try:
            with mlflow.start_run(run_id=runs.get(str(seed), parent)):
                uris[seed] = backend.log_model(out / str(seed), f"model-seed{seed}", {"seed": seed})
        except Exception as err:  # noqa: BLE001  (whatever MLflow or the model raises, the results stand)
            log(f"warning: seed {seed}'s model was not logged to MLflow: {type(err).__name__}: {err}")
    return uris
